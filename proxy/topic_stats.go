package proxy

// Per-topic traffic counters, and the writes kproxy makes to each source
// partition (control/bypass.go compares them with the source's end offsets
// to find writers that bypass kproxy).
//
// Cardinality is bounded by the control plane: it names the topics that get
// their own counters (SetStatsTopics: the topics the config names, the
// replicated ones and the ones clients use, at most maxStatsTopics). Every
// other topic counts under topic "_other". Counters are resolved when a
// topic is named, so a request pays one map lookup per topic (an atomic
// pointer to an immutable map: no lock) and atomic adds: no label lookup and
// no allocation per request.

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// OtherTopics is the topic label of traffic to topics without their own
// counters.
const OtherTopics = "_other"

// maxStatsTopics caps the topics with their own counters (and series).
const maxStatsTopics = 1000

// topicStats is one topic's counters, by cluster index (clusterIndex).
type topicStats struct {
	produceBytes, produceRecords [2]prometheus.Counter
	fetchBytes, fetchRecords     [2]prometheus.Counter

	// track: the topic's writes to the source are counted (not for
	// _other).
	track bool
	mu    sync.Mutex // guards growing parts (writers never take it)
	parts atomic.Pointer[[]*PartitionWrites]
}

// PartitionWrites counts, in offsets, what kproxy sent to one source
// partition. Sent is added before a produce goes upstream and Settled when
// its answer (or its failure) comes back, so at any moment every offset
// kproxy appended to the partition is in Sent, and everything in Settled
// either was appended or never will be (control/bypass.go relies on both).
type PartitionWrites struct {
	Sent, Settled atomic.Int64
	// Unacked: acks=0 produces, which get no answer; the bypass check
	// settles them one interval later.
	Unacked atomic.Int64
	// TxnSent and TxnSettled count transactional batches: each may end
	// with one transaction marker (an offset) in the partition, written
	// by the coordinator after EndTxn, a timeout or a fence.
	TxnSent, TxnSettled atomic.Int64
}

// statsTopics is the immutable map of topics with their own counters.
type statsTopics struct {
	byName map[string]*topicStats
	other  *topicStats
}

// topicCounters owns the counter vectors and the current map.
type topicCounters struct {
	produceBytes, produceRecords *prometheus.CounterVec
	fetchBytes, fetchRecords     *prometheus.CounterVec
	mu                           sync.Mutex // serialises SetStatsTopics
	cur                          atomic.Pointer[statsTopics]
}

func newTopicCounters(reg prometheus.Registerer) *topicCounters {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"topic", "cluster"})
	}
	tc := &topicCounters{
		produceBytes:   vec("kproxy_topic_produce_bytes_total", "Record batch bytes kproxy sent upstream in Produce requests, by topic (_other: topics without their own series) and cluster."),
		produceRecords: vec("kproxy_topic_produce_records_total", "Records kproxy sent upstream in Produce requests, by topic and cluster."),
		fetchBytes:     vec("kproxy_topic_fetch_bytes_total", "Record batch bytes upstream Fetch answers gave clients, by topic and cluster."),
		fetchRecords:   vec("kproxy_topic_fetch_records_total", "Records in whole batches upstream Fetch answers gave clients, by topic and cluster."),
	}
	reg.MustRegister(tc.produceBytes, tc.produceRecords, tc.fetchBytes, tc.fetchRecords)
	tc.cur.Store(&statsTopics{byName: map[string]*topicStats{}, other: tc.newStats(OtherTopics, false)})
	return tc
}

func (tc *topicCounters) newStats(topic string, track bool) *topicStats {
	ts := &topicStats{track: track}
	for i, c := range [2]string{Source, Target} {
		ts.produceBytes[i] = tc.produceBytes.WithLabelValues(topic, c)
		ts.produceRecords[i] = tc.produceRecords.WithLabelValues(topic, c)
		ts.fetchBytes[i] = tc.fetchBytes.WithLabelValues(topic, c)
		ts.fetchRecords[i] = tc.fetchRecords.WithLabelValues(topic, c)
	}
	empty := []*PartitionWrites{}
	ts.parts.Store(&empty)
	return ts
}

// SetStatsTopics names the topics with their own counters (the first
// maxStatsTopics of them; the rest count under _other). A topic named
// before keeps its counters; one no longer named goes back to _other, and
// its series stay at their last value.
func (s *Server) SetStatsTopics(topics []string) {
	tc := s.topics
	tc.mu.Lock()
	defer tc.mu.Unlock()
	old := tc.cur.Load()
	next := &statsTopics{byName: make(map[string]*topicStats, len(topics)), other: old.other}
	for _, t := range topics {
		if len(next.byName) >= maxStatsTopics {
			break
		}
		if ts := old.byName[t]; ts != nil {
			next.byName[t] = ts
			continue
		}
		next.byName[t] = tc.newStats(t, true)
	}
	tc.cur.Store(next)
}

// topicStats returns a topic's counters, or _other's.
func (s *Server) topicStats(name string) *topicStats {
	cur := s.topics.cur.Load()
	if ts := cur.byName[name]; ts != nil {
		return ts
	}
	return cur.other
}

// SourceWrites returns what kproxy sent to a source topic's partitions so
// far (index: partition; nil entries were never written), or nil when the
// topic has no counters of its own.
func (s *Server) SourceWrites(topic string) []*PartitionWrites {
	ts := s.topics.cur.Load().byName[topic]
	if ts == nil {
		return nil
	}
	return *ts.parts.Load()
}

// writes returns the partition's write counts when the cluster is the
// source and the topic is tracked, else nil. It allocates only the first
// time a partition is seen.
func (ts *topicStats) writes(cluster string, partition int32) *PartitionWrites {
	if !ts.track || cluster != Source || partition < 0 {
		return nil
	}
	if ps := *ts.parts.Load(); int(partition) < len(ps) && ps[partition] != nil {
		return ps[partition]
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ps := *ts.parts.Load()
	if int(partition) < len(ps) && ps[partition] != nil {
		return ps[partition]
	}
	grown := make([]*PartitionWrites, max(len(ps), int(partition)+1))
	copy(grown, ps)
	grown[partition] = &PartitionWrites{}
	ts.parts.Store(&grown)
	return grown[partition]
}

// clusterIndex indexes the per-cluster counters.
func clusterIndex(cluster string) int {
	if cluster == Target {
		return 1
	}
	return 0
}

// batchCount is what a produce's record batches take in a partition.
type batchCount struct {
	offsets, records, txnBatches int64
	bytes                        int
}

// batchControl marks a control batch (transaction markers), attributes
// bit 5.
const batchControl = 0x20

// countBatches walks v2 record batch headers (Produce v3+ carries only
// those): offsets taken (lastOffsetDelta+1), records, transactional
// batches. A truncated tail is not counted.
func countBatches(b []byte) batchCount { return countBatchesSparse(b, false) }

// countBatchesSparse is countBatches; sparse says b is a spliced section's
// batch headers only, 61 bytes each (produce_splice.go).
func countBatchesSparse(b []byte, sparse bool) batchCount {
	c := batchCount{bytes: len(b)}
	if sparse {
		c.bytes = 0
	}
	for len(b) >= 61 {
		n := int(int32(binary.BigEndian.Uint32(b[8:]))) + 12
		step := n
		if sparse {
			step = 61
			c.bytes += n
		}
		if n < 61 || step > len(b) {
			break
		}
		if b[16] == 2 {
			c.offsets += int64(int32(binary.BigEndian.Uint32(b[23:]))) + 1
			attrs := binary.BigEndian.Uint16(b[21:])
			if attrs&batchControl == 0 {
				c.records += int64(int32(binary.BigEndian.Uint32(b[57:])))
			}
			if attrs&batchTransactional != 0 {
				c.txnBatches++
			}
		}
		b = b[step:]
	}
	return c
}

// produceNote is one partition of a produce on its way upstream: counted
// as sent, settled when answered.
type produceNote struct {
	w             *PartitionWrites
	offsets, txns int64
}

// noteProduce counts a partition's batches as sent to cluster (before the
// send) and returns what settle needs.
// sparse: records is a spliced section's batch headers (countBatchesSparse).
func (ts *topicStats) noteProduce(cluster string, partition int32, records []byte, sparse bool) produceNote {
	c := countBatchesSparse(records, sparse)
	i := clusterIndex(cluster)
	ts.produceBytes[i].Add(float64(c.bytes))
	ts.produceRecords[i].Add(float64(c.records))
	n := produceNote{w: ts.writes(cluster, partition), offsets: c.offsets, txns: c.txnBatches}
	if n.w != nil {
		n.w.Sent.Add(n.offsets)
		n.w.TxnSent.Add(n.txns)
	}
	return n
}

// settle records that the partition's produce was answered (acked or not).
func (n produceNote) settle() {
	if n.w != nil {
		n.w.Settled.Add(n.offsets)
		n.w.TxnSettled.Add(n.txns)
	}
}

// unacked records an acks=0 produce, which is never answered.
func (n produceNote) unacked() {
	if n.w != nil {
		n.w.Unacked.Add(n.offsets)
		n.w.TxnSettled.Add(n.txns)
	}
}

// noteFetched counts an upstream fetch answer's batches for a client.
func (ts *topicStats) noteFetched(cluster string, batches []byte) {
	if len(batches) == 0 {
		return
	}
	c := countBatches(batches)
	i := clusterIndex(cluster)
	ts.fetchBytes[i].Add(float64(c.bytes))
	ts.fetchRecords[i].Add(float64(c.records))
}
