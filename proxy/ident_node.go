package proxy

// Node identity: every address-bearing field a client sees names this
// kproxy instance. Upstream node ids and addresses never leave the proxy.
// Fields covered (kafka-protocol-notes §1.1): Metadata Brokers, ControllerID,
// Leader, Replicas, ISR, OfflineReplicas; FindCoordinator v0-3 and v4+
// (answered locally, 10_find_coordinator.go); DescribeCluster Brokers and
// ControllerID; Produce v10+ Brokers and CurrentLeader; Fetch v12+
// CurrentLeader, v16+ Brokers, v11+ PreferredReadReplica.
// Negative ids are protocol sentinels ("none") and pass through unchanged.

import "github.com/twmb/franz-go/pkg/kmsg"

// self returns this instance's virtual node id.
func (s *Server) self() int32 { return s.opts.NodeID }

// virtualNode maps an upstream node id to the virtual one.
func (s *Server) virtualNode(id int32) int32 {
	if id < 0 {
		return id
	}
	return s.self()
}

// virtualReplicas collapses a replica list onto this instance.
func (s *Server) virtualReplicas(ids []int32) []int32 {
	if len(ids) == 0 {
		return ids
	}
	return []int32{s.self()}
}

func (s *Server) metadataBrokers() []kmsg.MetadataResponseBroker {
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = s.self(), s.advHost, s.advPort
	return []kmsg.MetadataResponseBroker{b}
}

func (s *Server) produceBrokers(in []kmsg.ProduceResponseBroker) []kmsg.ProduceResponseBroker {
	if len(in) == 0 {
		return nil
	}
	b := kmsg.NewProduceResponseBroker()
	b.NodeID, b.Host, b.Port = s.self(), s.advHost, s.advPort
	return []kmsg.ProduceResponseBroker{b}
}

func (s *Server) fetchBrokers(in []kmsg.FetchResponseBroker) []kmsg.FetchResponseBroker {
	if len(in) == 0 {
		return nil
	}
	b := kmsg.NewFetchResponseBroker()
	b.NodeID, b.Host, b.Port = s.self(), s.advHost, s.advPort
	return []kmsg.FetchResponseBroker{b}
}
