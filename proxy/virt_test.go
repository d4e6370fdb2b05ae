package proxy

import (
	"encoding/binary"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// situationMaps answers Map the way the replicator does in one situation
// (cmd/kproxy replication.Map): every partition of every topic alike.
type situationMaps struct {
	cluster    string    // the cluster the answer is for
	m          OffsetMap // nil with translated: pending
	translated bool
}

func (s situationMaps) Map(cluster, _ string, _ int32) (OffsetMap, bool) {
	if cluster != s.cluster {
		return nil, false
	}
	return s.m, s.translated
}

// routeSituation is one way a partition can be served. The upstream
// answers in the tests are the same in every situation; what changes is
// whether their offsets are virtual already, go through a map (fakeMap:
// cluster 0..7 = virtual 100..109, gap at 104-105), or must not reach the
// client at all.
type routeSituation struct {
	name      string
	cluster   string
	maps      OffsetMaps // nil: the replicator installed none
	readsCopy bool       // a fetch-route API on a replicated topic
	refused   bool       // NOT_LEADER_FOR_PARTITION, nothing sent upstream
	translate bool       // offsets go through fakeMap
}

var routeSituations = []routeSituation{
	{name: "source, the topic's first home", cluster: Source, maps: situationMaps{cluster: Source}},
	{name: "target, a topic that is not replicated", cluster: Target, maps: situationMaps{cluster: Target}},
	{name: "target copy, replicator not started", cluster: Target, readsCopy: true, refused: true},
	{name: "target copy, map pending", cluster: Target, maps: situationMaps{cluster: Target, translated: true}, readsCopy: true, refused: true},
	{name: "target copy, live map", cluster: Target, maps: situationMaps{cluster: Target, m: fakeMap{}, translated: true}, readsCopy: true, translate: true},
	{name: "target copy, map sealed", cluster: Target, maps: situationMaps{cluster: Target, m: fakeMap{}, translated: true}, readsCopy: true, translate: true},
	{name: "after a flip, the target is home", cluster: Target, maps: situationMaps{cluster: Target, m: fakeMap{}, translated: true}, translate: true},
	{name: "after a rollback, the source read through the copy-back map", cluster: Source, maps: situationMaps{cluster: Source, m: fakeMap{}, translated: true}, translate: true},
}

func virtTestServer(t *testing.T, maps OffsetMaps) *Server {
	t.Helper()
	ids, err := loadTopicIDs("", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: Options{NodeID: 9, ClusterID: "virtual"}, topicIDs: ids, advHost: "kproxy", advPort: 9092}
	if maps != nil {
		s.SetOffsetMaps(maps)
	}
	return s
}

// plan resolves the situation's plan as the handlers do; false when the
// partition is refused (and checks it is refused with a retriable error).
func (sit routeSituation) plan(t *testing.T, s *Server) (partPlan, bool) {
	t.Helper()
	pl, code := s.offsetsPlan(sit.cluster, "orders", 0, sit.readsCopy)
	if sit.refused {
		if code != kerr.NotLeaderForPartition.Code {
			t.Fatalf("refused with %d, want NOT_LEADER_FOR_PARTITION (retriable)", code)
		}
		return pl, false
	}
	if code != 0 {
		t.Fatalf("refused with %d", code)
	}
	if (pl.offsets != nil) != sit.translate {
		t.Fatalf("plan translates offsets: %v, want %v", pl.offsets != nil, sit.translate)
	}
	return pl, true
}

// expect picks the virtual value when the situation translates offsets.
func (sit routeSituation) expect(virtual, upstream int64) int64 {
	if sit.translate {
		return virtual
	}
	return upstream
}

// forEachSituation runs check as a subtest per route situation, with a
// server and the partition's plan for it; a refused situation ends once
// plan has checked the refusal.
func forEachSituation(t *testing.T, check func(t *testing.T, sit routeSituation, s *Server, pl partPlan)) {
	for _, sit := range routeSituations {
		t.Run(sit.name, func(t *testing.T) {
			s := virtTestServer(t, sit.maps)
			pl, ok := sit.plan(t, s)
			if !ok {
				return
			}
			check(t, sit, s, pl)
		})
	}
}

func TestVirtFetch(t *testing.T) {
	forEachSituation(t, func(t *testing.T, sit routeSituation, s *Server, pl partPlan) {
		// Request: the position, the epochs.
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.CurrentLeaderEpoch, rp.LastFetchedEpoch = 106, 57, 56
		pos, ok := offsetsFetchRequestPartition(pl.offsets, &rp)
		epochsFetchRequestPartition(&rp)
		if !ok || pos != 106 || rp.FetchOffset != sit.expect(4, 106) || rp.CurrentLeaderEpoch != -1 || rp.LastFetchedEpoch != -1 {
			t.Fatalf("request: ok %v pos %d offset %d epochs %d %d", ok, pos, rp.FetchOffset, rp.CurrentLeaderEpoch, rp.LastFetchedEpoch)
		}
		// Answer.
		batch := batchBytes(t, 57, 2, 4)
		binary.BigEndian.PutUint64(batch, 4)
		p := kmsg.NewFetchResponseTopicPartition()
		p.RecordBatches = batch
		p.HighWatermark, p.LastStableOffset, p.LogStartOffset = 8, 8, 0
		p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 4}}
		p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 3, 57
		p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = 57, 5
		p.PreferredReadReplica = 2
		s.virtFetchPartition(pl, &p, 104)
		checks := []struct {
			field     string
			got, want int64
		}{
			{"batch base offset", int64(binary.BigEndian.Uint64(p.RecordBatches)), sit.expect(106, 4)},
			{"batch leader epoch", int64(int32(binary.BigEndian.Uint32(p.RecordBatches[12:]))), -1},
			{"high watermark", p.HighWatermark, sit.expect(110, 8)},
			{"last stable offset", p.LastStableOffset, sit.expect(110, 8)},
			{"log start offset", p.LogStartOffset, sit.expect(100, 0)},
			{"aborted txn first offset", p.AbortedTransactions[0].FirstOffset, sit.expect(106, 4)},
			{"aborted txn producer", p.AbortedTransactions[0].ProducerID, 1},
			{"current leader id", int64(p.CurrentLeader.LeaderID), 9},
			{"current leader epoch", int64(p.CurrentLeader.LeaderEpoch), -1},
			{"diverging epoch", int64(p.DivergingEpoch.Epoch), -1},
			{"diverging end offset", p.DivergingEpoch.EndOffset, -1},
			{"preferred read replica", int64(p.PreferredReadReplica), -1},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %d, want %d", c.field, c.got, c.want)
			}
		}
		// Topic ids: the id the client named, for the cluster's id.
		fr := kmsg.NewFetchResponse()
		fr.Version = 13
		up, virt := [16]byte{1}, deriveTopicID("virtual", "orders")
		fr.Topics = []kmsg.FetchResponseTopic{{TopicID: up}}
		s.topicIDsFetchAnswer(sit.cluster, &fr, topicIDPairs(nil).add(up, virt))
		if fr.Topics[0].TopicID != virt {
			t.Errorf("topic id %x, want the virtual %x", fr.Topics[0].TopicID, virt)
		}
	})
}

func TestVirtProduce(t *testing.T) {
	forEachSituation(t, func(t *testing.T, sit routeSituation, s *Server, pl partPlan) {
		p := kmsg.NewProduceResponseTopicPartition()
		p.BaseOffset, p.LogStartOffset, p.LogAppendTime = 4, 0, 1234
		p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 3, 57
		s.virtProducePartition(pl, &p)
		if p.BaseOffset != sit.expect(106, 4) || p.LogStartOffset != sit.expect(100, 0) || p.LogAppendTime != 1234 {
			t.Errorf("base %d log start %d append time %d", p.BaseOffset, p.LogStartOffset, p.LogAppendTime)
		}
		if p.CurrentLeader.LeaderID != 9 || p.CurrentLeader.LeaderEpoch != -1 {
			t.Errorf("current leader %+v, want 9 / -1", p.CurrentLeader)
		}
		// An upstream error carries no offsets to translate.
		e := producePartitionError(0, kerr.NotLeaderForPartition.Code)
		s.virtProducePartition(pl, &e)
		if e.BaseOffset != -1 {
			t.Errorf("error answer's base offset %d, want -1", e.BaseOffset)
		}
	})
}

func TestVirtListOffsets(t *testing.T) {
	forEachSituation(t, func(t *testing.T, sit routeSituation, s *Server, pl partPlan) {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.CurrentLeaderEpoch = 57
		epochsListOffsetsRequestPartition(&rp)
		if rp.CurrentLeaderEpoch != -1 {
			t.Errorf("request epoch %d", rp.CurrentLeaderEpoch)
		}
		for _, c := range []struct{ upstream, want int64 }{{4, sit.expect(106, 4)}, {8, sit.expect(110, 8)}, {0, sit.expect(100, 0)}, {-1, -1}} {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Offset, p.Timestamp, p.LeaderEpoch = c.upstream, 1234, 57
			virtListOffsetsPartition(pl, &p)
			if p.Offset != c.want || p.Timestamp != 1234 || p.LeaderEpoch != -1 {
				t.Errorf("upstream offset %d: offset %d timestamp %d epoch %d; want %d 1234 -1", c.upstream, p.Offset, p.Timestamp, p.LeaderEpoch, c.want)
			}
		}
	})
}

func TestVirtOffsetForLeaderEpoch(t *testing.T) {
	forEachSituation(t, func(t *testing.T, sit routeSituation, s *Server, pl partPlan) {
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.CurrentLeaderEpoch = 57
		epochsOffsetForLeaderEpochRequestPartition(&rp)
		if rp.CurrentLeaderEpoch != -1 {
			t.Errorf("request epoch %d", rp.CurrentLeaderEpoch)
		}
		p := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
		p.EndOffset, p.LeaderEpoch = 4, 57
		virtOffsetForLeaderEpochPartition(pl, &p)
		if p.EndOffset != sit.expect(106, 4) || p.LeaderEpoch != -1 {
			t.Errorf("end offset %d epoch %d", p.EndOffset, p.LeaderEpoch)
		}
	})
}

func TestVirtDeleteRecords(t *testing.T) {
	forEachSituation(t, func(t *testing.T, sit routeSituation, s *Server, pl partPlan) {
		for _, c := range []struct{ virtual, want int64 }{{106, sit.expect(4, 106)}, {104, sit.expect(4, 104)}, {50, sit.expect(0, 50)}, {500, sit.expect(398, 500)}, {-1, -1}} {
			rp := kmsg.NewDeleteRecordsRequestTopicPartition()
			rp.Offset = c.virtual
			offsetsDeleteRecordsRequestPartition(pl.offsets, &rp)
			if rp.Offset != c.want {
				t.Errorf("delete before %d: upstream %d, want %d", c.virtual, rp.Offset, c.want)
			}
		}
		p := kmsg.NewDeleteRecordsResponseTopicPartition()
		p.LowWatermark = 4
		virtDeleteRecordsPartition(pl, &p)
		if p.LowWatermark != sit.expect(106, 4) {
			t.Errorf("low watermark %d", p.LowWatermark)
		}
	})
}

func TestVirtDescribeProducers(t *testing.T) {
	forEachSituation(t, func(t *testing.T, sit routeSituation, s *Server, pl partPlan) {
		p := kmsg.NewDescribeProducersResponseTopicPartition()
		open, idle := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer(), kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
		open.CurrentTxnStartOffset, open.LastSequence, open.ProducerID = 4, 7, 5
		p.ActiveProducers = append(p.ActiveProducers, open, idle)
		virtDescribeProducersPartition(pl, &p)
		if a := p.ActiveProducers[0]; a.CurrentTxnStartOffset != sit.expect(106, 4) || a.LastSequence != 7 || a.ProducerID != 5 {
			t.Errorf("open transaction: %+v", a)
		}
		if a := p.ActiveProducers[1]; a.CurrentTxnStartOffset != -1 {
			t.Errorf("no open transaction: start %d, want -1", a.CurrentTxnStartOffset)
		}
	})
}

// Metadata carries no offsets: every situation answers the same.
func TestVirtMetadata(t *testing.T) {
	for _, sit := range routeSituations {
		t.Run(sit.name, func(t *testing.T) {
			s := virtTestServer(t, sit.maps)
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic, mt.TopicID = kmsg.StringPtr("orders"), [16]byte{1}
			p := kmsg.NewMetadataResponseTopicPartition()
			p.Leader, p.LeaderEpoch, p.Replicas, p.ISR, p.OfflineReplicas = 3, 57, []int32{1, 2, 3}, []int32{1, 3}, []int32{2}
			mt.Partitions = append(mt.Partitions, p)
			s.virtMetadataTopic(&mt)
			got := mt.Partitions[0]
			if got.Leader != 9 || got.LeaderEpoch != -1 || len(got.Replicas) != 1 || got.Replicas[0] != 9 || len(got.ISR) != 1 || got.ISR[0] != 9 || got.OfflineReplicas != nil {
				t.Errorf("partition %+v", got)
			}
			if mt.TopicID != deriveTopicID("virtual", "orders") {
				t.Errorf("topic id %x, want the derived virtual id", mt.TopicID)
			}
			none := kmsg.NewMetadataResponseTopic() // below v10: no id
			none.Topic = kmsg.StringPtr("orders")
			s.virtMetadataTopic(&none)
			if none.TopicID != ([16]byte{}) {
				t.Errorf("an answer without ids got one")
			}
		})
	}
}
