package proxy

// Offsets: clients see virtual offsets, which are the source's offsets for a
// topic that starts on the source. While a replicated topic is read from the
// cluster it is copied to (a canary, a fetch route of target; after a
// cutover, the source the topic is copied back to), and on the new home
// after a cutover, every offset is translated through the replicator's exact
// offset map, so a consumer cannot tell which cluster serves it. Topics that
// are not replicated are served with their cluster's own offsets, and
// committed offsets need nothing: they are virtual wherever they are stored.
//
// The map is chosen once per partition at request time (offsetsPlan), and
// again for a read answered after a cutover capped the old home
// (replanAfterCap, cutover_fetch_cap.go); a
// partition whose offsets need a map that is not ready yet (replication
// starting) is refused with NOT_LEADER_FOR_PARTITION, which every client
// retries, by every API: cluster offsets never reach a client.
//
// Per API (docs/translation.md has the full table):
//   - Fetch requests: FetchOffset virtual -> cluster (a position on a gap
//     maps to the next real record; a position not copied yet waits at the
//     map's end; one before the map's start is OFFSET_OUT_OF_RANGE).
//   - Fetch answers: batch base offsets (bytes 0-7, outside the CRC),
//     HighWatermark, LastStableOffset, LogStartOffset and aborted-
//     transaction first offsets cluster -> virtual. A copy holds no
//     transactions (the replicator clears them), but a topic's home after a
//     cutover does (its producers write there).
//   - Produce answers: BaseOffset, LogStartOffset.
//   - ListOffsets answers: Offset.
//   - OffsetForLeaderEpoch answers: EndOffset.
//   - DeleteRecords: the requested Offset virtual -> cluster, the answer's
//     LowWatermark cluster -> virtual.
//   - DescribeProducers answers: CurrentTxnStartOffset.

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// OffsetMap is the replicator's exact map of one partition: virtual (source)
// offsets <-> target offsets. See package replicator.
type OffsetMap interface {
	ToTarget(virtual int64) (target int64, ok bool)
	ToSource(target int64) (virtual int64, ok bool)
	SourceStart() int64
	SourceEnd() int64
	TargetStart() int64
	TargetEnd() int64
}

// OffsetMaps finds how a partition's offsets on a cluster translate to
// virtual ones: (nil, false) when they are the virtual ones (the topic's
// first home, or a topic that is not replicated); (map, true) to translate;
// (nil, true) when they must be translated but the map is not ready yet.
type OffsetMaps interface {
	Map(cluster, topic string, partition int32) (OffsetMap, bool)
}

type mapsBox struct{ m OffsetMaps }

// SetOffsetMaps installs the replicator's maps (nil: none).
func (s *Server) SetOffsetMaps(m OffsetMaps) { s.maps.Store(&mapsBox{m}) }

// offsetMapState returns the map a partition's offsets on cluster go
// through (nil: they pass through), and whether they need one (translated
// with m nil: the map is not ready).
func (s *Server) offsetMapState(cluster, topic string, partition int32) (m OffsetMap, translated bool) {
	b := s.maps.Load()
	if b == nil || b.m == nil {
		return nil, false
	}
	return b.m.Map(cluster, topic, partition)
}

// offsetsPlan resolves how a partition served by cluster translates its
// offsets, once per request. readsCopy says the partition is read (a fetch
// route) of a replicated topic: on the target, its offsets need a map even
// before the replicator has installed any. code is NOT_LEADER_FOR_PARTITION
// (retriable) when a map is needed and not ready.
func (s *Server) offsetsPlan(cluster, topic string, partition int32, readsCopy bool) (partPlan, int16) {
	m, needsMap := s.offsetMapState(cluster, topic, partition)
	if m == nil && (needsMap || readsCopy && cluster == Target) {
		return partPlan{}, kerr.NotLeaderForPartition.Code
	}
	if readsCopy {
		// A cutover froze the ends of this old home: reads stop there
		// (cutover_fetch_cap.go).
		if end, ok := s.readCap(cluster, topic, partition); ok {
			return partPlan{cluster: cluster, offsets: capAt(m, end), readsCopy: true}, 0
		}
	}
	return partPlan{cluster: cluster, offsets: m, readsCopy: readsCopy}, 0
}

// toTargetOffset translates a virtual fetch position. ok is false for a
// position before the map's start (not on the target: OFFSET_OUT_OF_RANGE).
func toTargetOffset(m OffsetMap, virtual int64) (int64, bool) {
	if virtual < m.SourceStart() {
		return 0, false
	}
	if t, ok := m.ToTarget(virtual); ok {
		return t, true
	}
	return m.TargetEnd(), true // not copied yet: wait at the end
}

// toVirtualOffset translates a target offset; offsets beyond the map's end
// (records the replicator has not accounted for yet) clip to its end.
func toVirtualOffset(m OffsetMap, target int64) int64 {
	if target < 0 {
		return target // sentinels (-1) pass through
	}
	if target >= m.TargetEnd() {
		return m.SourceEnd()
	}
	if target < m.TargetStart() {
		return m.SourceStart()
	}
	v, _ := m.ToSource(target)
	return v
}

// virtualLogStart translates a log start offset: never before the map's
// start (what lies before it was not copied, so it is gone for a client).
func virtualLogStart(m OffsetMap, target int64) int64 {
	if target < 0 {
		return target
	}
	return max(toVirtualOffset(m, target), m.SourceStart())
}

// offsetsFetchRequestPartition translates a fetch position; ok false means
// the position is before the map (answer outOfRange). pos is the client's
// position, kept for the answer.
func offsetsFetchRequestPartition(m OffsetMap, p *kmsg.FetchRequestTopicPartition) (pos int64, ok bool) {
	pos = p.FetchOffset
	if m == nil {
		return pos, true
	}
	tgt, ok := toTargetOffset(m, pos)
	p.FetchOffset = tgt
	return pos, ok
}

// offsetsFetchPartition rewrites a fetch answer in place: batch base offsets
// and the partition's offsets (nothing when m is nil).
//
// pos is the client's virtual fetch offset. Batches that end below it are
// dropped: a client ahead of a live map's end (it read the source further
// than the copy has reached) is sent to the map's end, and by the time the
// answer arrives the map may cover batches it already has. A broker never
// answers with those, and librdkafka, finding nothing at or after its
// position in a non-empty answer, grows its fetch size and finally reports
// "might be too large to fetch".
func offsetsFetchPartition(m OffsetMap, p *kmsg.FetchResponseTopicPartition, pos int64) {
	if m == nil {
		return
	}
	// One snapshot of the map's end for the whole answer: a live map grows
	// while this runs, and watermarks clipped to an earlier end than the
	// batches kept would put records at or past the last stable offset,
	// which read_committed clients drop (librdkafka then reports "might
	// be too large to fetch").
	end := m.TargetEnd()
	virt := func(target int64) int64 {
		if target < 0 {
			return target // sentinels (-1) pass through
		}
		return toVirtualOffset(m, min(target, end))
	}
	p.HighWatermark = virt(p.HighWatermark)
	p.LastStableOffset = virt(p.LastStableOffset)
	p.LogStartOffset = max(virt(p.LogStartOffset), m.SourceStart())
	for i := range p.AbortedTransactions {
		a := &p.AbortedTransactions[i]
		a.FirstOffset = virt(a.FirstOffset)
	}
	// Batches the map does not cover yet (the replicator wrote them but
	// has not recorded them) are cut off: they have no virtual offsets
	// yet, and the next fetch gets them. So is a partial batch at the end
	// (a client discards it anyway); a partial first batch stays, with its
	// offset translated, so the client sees that it must fetch more bytes.
	//
	// A batch wholly in a target gap (several instances: the copy's commit
	// markers, a fenced owner's aborted records) has no virtual offset of
	// its own; translated, it would carry the next record's, and a client
	// that skips it (a control batch) would skip that record too. Such
	// batches are squeezed out of the answer.
	// (Maps of a single instance's idempotent copy have none: one check
	// per answer, not per batch.)
	gaps, _ := m.(targetGaps)
	if gaps != nil && gaps.TargetGaps() == 0 {
		gaps = nil
	}
	var drop [][2]int // byte ranges of gap batches
	rs, start, keep := p.RecordBatches, 0, 0
	for off := 0; off+12 <= len(rs); {
		base := int64(binary.BigEndian.Uint64(rs[off:]))
		if base >= end {
			break
		}
		n := int(int32(binary.BigEndian.Uint32(rs[off+8:]))) + 12
		if gaps != nil && n >= 27 && off+n <= len(rs) && gaps.InTargetGap(base) &&
			gaps.InTargetGap(base+int64(int32(binary.BigEndian.Uint32(rs[off+23:])))) {
			drop = append(drop, [2]int{off, off + n})
		}
		binary.BigEndian.PutUint64(rs[off:], uint64(virt(base)))
		if n < 27 || off+n > len(rs) {
			if off == start {
				keep = len(rs)
			}
			break
		}
		if off == start {
			if last := base + int64(int32(binary.BigEndian.Uint32(rs[off+23:]))); virt(last) < pos {
				start = off + n // wholly below the client's position
			}
		}
		off += n
		keep = off
	}
	out := rs[start:max(keep, start)]
	if len(drop) > 0 {
		w := start
		from := start
		for _, d := range drop {
			if d[0] < start || d[1] > keep {
				continue
			}
			w += copy(rs[w:], rs[from:d[0]])
			from = d[1]
		}
		w += copy(rs[w:], rs[from:max(keep, start)])
		out = rs[start:w]
	}
	p.RecordBatches = out
}

// targetGaps is an OffsetMap with target gaps (replicator.OffsetMap).
type targetGaps interface {
	TargetGaps() int64
	InTargetGap(target int64) bool
}

// outOfRange is the answer for a position before the replicated range.
func outOfRange(m OffsetMap, partition int32) kmsg.FetchResponseTopicPartition {
	p := fetchPartitionError(partition, kerr.OffsetOutOfRange.Code)
	p.LogStartOffset = m.SourceStart()
	return p
}

func offsetsProducePartition(m OffsetMap, p *kmsg.ProduceResponseTopicPartition) {
	if m == nil {
		return
	}
	p.BaseOffset = toVirtualOffset(m, p.BaseOffset)
	p.LogStartOffset = virtualLogStart(m, p.LogStartOffset)
}

func offsetsListOffsetsPartition(m OffsetMap, p *kmsg.ListOffsetsResponseTopicPartition) {
	if m == nil {
		return
	}
	p.Offset = toVirtualOffset(m, p.Offset)
}

func offsetsOffsetForLeaderEpochPartition(m OffsetMap, p *kmsg.OffsetForLeaderEpochResponseTopicPartition) {
	if m == nil {
		return
	}
	p.EndOffset = toVirtualOffset(m, p.EndOffset)
}

// offsetsDeleteRecordsRequestPartition translates the offset before which
// records are deleted. -1 (the high watermark) passes through; a position
// before the map's start deletes nothing more than is already gone (the
// map's start); one on a gap deletes up to the next real record; one past
// the map's end stays past the cluster's end by as much, so the cluster
// answers OFFSET_OUT_OF_RANGE as it would have for the virtual offset.
func offsetsDeleteRecordsRequestPartition(m OffsetMap, p *kmsg.DeleteRecordsRequestTopicPartition) {
	if m == nil || p.Offset < 0 {
		return
	}
	switch tgt, ok := m.ToTarget(p.Offset); {
	case p.Offset < m.SourceStart():
		p.Offset = m.TargetStart()
	case ok:
		p.Offset = tgt
	default:
		p.Offset = m.TargetEnd() + (p.Offset - m.SourceEnd())
	}
}

func offsetsDeleteRecordsPartition(m OffsetMap, p *kmsg.DeleteRecordsResponseTopicPartition) {
	if m == nil {
		return
	}
	p.LowWatermark = virtualLogStart(m, p.LowWatermark)
}

// offsetsDescribeProducersPartition: the first offset of each producer's
// open transaction (-1: none). LastSequence is a sequence number, not an
// offset, and passes through.
func offsetsDescribeProducersPartition(m OffsetMap, p *kmsg.DescribeProducersResponseTopicPartition) {
	if m == nil {
		return
	}
	for i := range p.ActiveProducers {
		a := &p.ActiveProducers[i]
		a.CurrentTxnStartOffset = toVirtualOffset(m, a.CurrentTxnStartOffset)
	}
}
