package proxy

// Node identity: every address-bearing field a client sees names a kproxy
// instance: this one, or with several instances (instances.go) the live
// instances, each partition led and each coordinator answered by its
// owner. Upstream node ids and addresses never leave the proxy.
// Fields covered (kafka-protocol-notes §1.1): Metadata Brokers, ControllerID,
// Leader, Replicas, ISR, OfflineReplicas; FindCoordinator v0-3 and v4+
// (answered locally, 10_find_coordinator.go); DescribeCluster Brokers and
// ControllerID (answered locally, 60_describe_cluster.go); Produce v10+
// Brokers and CurrentLeader; Fetch v12+ CurrentLeader, v16+ Brokers, v11+
// PreferredReadReplica (-1: kproxy is the only replica a client may read).
// Negative ids are protocol sentinels ("none") and pass through unchanged.

import "github.com/twmb/franz-go/pkg/kmsg"

// self returns this instance's virtual node id.
func (s *Server) self() int32 { return s.opts.NodeID }

// selfEndpoint is this instance as a broker, as the clients of listener l
// must reach it: node id, l's advertised host and port (the first
// listener's when l is nil). Every broker a client is shown is this one.
func (s *Server) selfEndpoint(l *listener) (int32, string, int32) {
	if l != nil {
		return s.self(), l.advHost, l.advPort
	}
	return s.self(), s.advHost, s.advPort
}

// virtualNode maps an upstream node id to the virtual one. It is used for
// answers to requests this instance forwarded, which it forwards only for
// partitions it leads (leadsHere), so the virtual leader is this instance.
func (s *Server) virtualNode(id int32) int32 {
	if id < 0 {
		return id
	}
	return s.self()
}

func (s *Server) metadataBrokers(l *listener) []kmsg.MetadataResponseBroker {
	var out []kmsg.MetadataResponseBroker
	s.brokerEndpoints(l, func(node int32, host string, port int32) {
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port = node, host, port
		out = append(out, b)
	})
	return out
}

func (s *Server) describeClusterBrokers(l *listener) []kmsg.DescribeClusterResponseBroker {
	var out []kmsg.DescribeClusterResponseBroker
	s.brokerEndpoints(l, func(node int32, host string, port int32) {
		b := kmsg.NewDescribeClusterResponseBroker()
		b.NodeID, b.Host, b.Port = node, host, port
		out = append(out, b)
	})
	return out
}

func (s *Server) produceBrokers(l *listener, in []kmsg.ProduceResponseBroker) []kmsg.ProduceResponseBroker {
	if len(in) == 0 {
		return nil
	}
	b := kmsg.NewProduceResponseBroker()
	b.NodeID, b.Host, b.Port = s.selfEndpoint(l)
	return []kmsg.ProduceResponseBroker{b}
}

func (s *Server) fetchBrokers(l *listener, in []kmsg.FetchResponseBroker) []kmsg.FetchResponseBroker {
	if len(in) == 0 {
		return nil
	}
	b := kmsg.NewFetchResponseBroker()
	b.NodeID, b.Host, b.Port = s.selfEndpoint(l)
	return []kmsg.FetchResponseBroker{b}
}

func (s *Server) nodesProducePartition(p *kmsg.ProduceResponseTopicPartition) {
	p.CurrentLeader.LeaderID = s.virtualNode(p.CurrentLeader.LeaderID)
}

func (s *Server) nodesFetchPartition(p *kmsg.FetchResponseTopicPartition) {
	p.PreferredReadReplica = -1
	p.CurrentLeader.LeaderID = s.virtualNode(p.CurrentLeader.LeaderID)
}

// nodesMetadataPartition: the leader is the partition's owner instance
// (instances.go), its only replica.
func (s *Server) nodesMetadataPartition(topic string, p *kmsg.MetadataResponseTopicPartition) {
	if p.Leader >= 0 {
		p.Leader = s.partitionLeader(topic, p.Partition)
	}
	if len(p.Replicas) > 0 {
		p.Replicas = []int32{s.partitionLeader(topic, p.Partition)}
	}
	if len(p.ISR) > 0 {
		p.ISR = []int32{s.partitionLeader(topic, p.Partition)}
	}
	p.OfflineReplicas = nil
}
