package proxy

// Identity translation: what a client sees is one virtual cluster, so every
// identity an upstream answer carries is translated before it leaves. One
// concern per file, each a small set of functions per API:
//
//	virt_epochs.go    leader epochs: none shown, none forwarded (decision 003)
//	virt_offsets.go   offsets: virtual <-> cluster through the offset maps
//	virt_topicids.go  topic ids: one virtual id per name (decision 004)
//	virt_nodes.go     node ids and addresses: this instance, or the live
//	                  instances (instances.go)
//
// A handler resolves each partition once, when the request arrives, into a
// partPlan (which cluster serves it, which offset map its offsets go
// through), and the answer goes through the steps in this fixed order:
// per partition epochs, offsets, nodes; then per topic its id (Fetch and
// Metadata). docs/translation.md is the
// table of which step owns which field of which API; no field is touched
// by two steps, and no handler rewrites an identity field itself.

import "github.com/twmb/franz-go/pkg/kmsg"

// partPlan is how one requested partition is served and its answer
// translated, resolved once at request time.
type partPlan struct {
	cluster string    // the upstream cluster that serves the partition
	offsets OffsetMap // nil: the cluster's offsets are the virtual ones
	// readsCopy: planned as a read of a replicated topic (offsetsPlan),
	// so a cutover's cap applies (replanAfterCap)
	readsCopy bool
}

// The per-API answer pipelines. Each takes an upstream partition answer
// in place and leaves it as the client sees it.

func (s *Server) virtProducePartition(pl partPlan, p *kmsg.ProduceResponseTopicPartition) {
	epochsProducePartition(p)
	if p.ErrorCode == 0 {
		offsetsProducePartition(pl.offsets, p)
	}
	s.nodesProducePartition(p)
}

// virtFetchPartition: pos is the client's virtual fetch offset.
func (s *Server) virtFetchPartition(pl partPlan, p *kmsg.FetchResponseTopicPartition, pos int64) {
	epochsFetchPartition(p)
	if p.ErrorCode == 0 {
		offsetsFetchPartition(pl.offsets, p, pos)
	}
	s.nodesFetchPartition(p)
}

func virtListOffsetsPartition(pl partPlan, p *kmsg.ListOffsetsResponseTopicPartition) {
	epochsListOffsetsPartition(p)
	if p.ErrorCode == 0 {
		offsetsListOffsetsPartition(pl.offsets, p)
	}
}

func virtOffsetForLeaderEpochPartition(pl partPlan, p *kmsg.OffsetForLeaderEpochResponseTopicPartition) {
	epochsOffsetForLeaderEpochPartition(p)
	if p.ErrorCode == 0 {
		offsetsOffsetForLeaderEpochPartition(pl.offsets, p)
	}
}

func virtDeleteRecordsPartition(pl partPlan, p *kmsg.DeleteRecordsResponseTopicPartition) {
	if p.ErrorCode == 0 {
		offsetsDeleteRecordsPartition(pl.offsets, p)
	}
}

func virtDescribeProducersPartition(pl partPlan, p *kmsg.DescribeProducersResponseTopicPartition) {
	if p.ErrorCode == 0 {
		offsetsDescribeProducersPartition(pl.offsets, p)
	}
}

func (s *Server) virtMetadataTopic(t *kmsg.MetadataResponseTopic) {
	topic := ""
	if t.Topic != nil {
		topic = *t.Topic
	}
	for i := range t.Partitions {
		epochsMetadataPartition(&t.Partitions[i])
		s.nodesMetadataPartition(topic, &t.Partitions[i])
	}
	s.topicIDsMetadataTopic(t)
}
