package replicator

// After a topic's cutover its producers write to the target directly and the
// replicator no longer copies it. The offset map then ends at the flip, and
// every later target record continues the virtual offsets: target offset
// TargetEnd+k is virtual SourceEnd+k. FlippedMap is that open-ended view of
// a partition's map, loaded from the map file the replicator left.

import (
	"fmt"
	"math"
)

// FlippedMap is a sealed OffsetMap extended past its end (see the file
// comment). It is safe for concurrent use (it never changes).
type FlippedMap struct {
	m              *OffsetMap
	srcEnd, tgtEnd int64
}

// Flipped seals m at its current end.
func Flipped(m *OffsetMap) *FlippedMap {
	return &FlippedMap{m: m, srcEnd: m.SourceEnd(), tgtEnd: m.TargetEnd()}
}

// LoadFlipped reads a partition's persisted map and seals it.
func LoadFlipped(stateDir, topic string, partition int32) (*FlippedMap, error) {
	m, err := loadMapFile(stateDir, topic, partition)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("no offset map for %s/%d in %s", topic, partition, stateDir)
	}
	return Flipped(m), nil
}

// ToTarget maps a virtual offset to the target.
func (f *FlippedMap) ToTarget(v int64) (int64, bool) {
	if v >= f.srcEnd {
		return f.tgtEnd + (v - f.srcEnd), true
	}
	return f.m.ToTarget(v)
}

// ToSource maps a target offset to the virtual one.
func (f *FlippedMap) ToSource(t int64) (int64, bool) {
	if t >= f.tgtEnd {
		return f.srcEnd + (t - f.tgtEnd), true
	}
	return f.m.ToSource(t)
}

// InTargetGap says whether t is a gap of the copied range (OffsetMap).
func (f *FlippedMap) InTargetGap(t int64) bool { return t < f.tgtEnd && f.m.InTargetGap(t) }

// TargetGaps is the copied range's number of target gaps.
func (f *FlippedMap) TargetGaps() int64 { return f.m.TargetGaps() }

// SourceStart is the first virtual offset on the target.
func (f *FlippedMap) SourceStart() int64 { return f.m.SourceStart() }

// TargetStart is the target offset of the first copied record.
func (f *FlippedMap) TargetStart() int64 { return f.m.TargetStart() }

// SourceEnd and TargetEnd are unbounded: the map extends forever.
func (f *FlippedMap) SourceEnd() int64 { return math.MaxInt64 }

// TargetEnd is unbounded (see SourceEnd).
func (f *FlippedMap) TargetEnd() int64 { return math.MaxInt64 }

// AppendBinary appends the sealed map in the map file format (Load reads
// it back; Flipped of that seals it at the same flip point): how one
// instance hands a flip's maps to the others through the control topic.
func (f *FlippedMap) AppendBinary(b []byte) []byte { return f.m.AppendBinary(b) }

// Meta is the sealed map's metadata (topic ids, shift).
func (f *FlippedMap) Meta() MapMeta { return f.m.Meta() }

// SaveFlipped persists a sealed map where LoadFlipped finds it. Only for
// a map no replicator runs on (one read back from AppendBinary's bytes):
// the save resets the map's journal.
func SaveFlipped(dir string, f *FlippedMap) error {
	_, err := saveMapFile(dir, f.m)
	return err
}

// FlipPoint is where the copied range ends: (virtual, target).
func (f *FlippedMap) FlipPoint() (virtual, target int64) { return f.srcEnd, f.tgtEnd }

// ContinueMap is the starting map for copying a topic back to the cluster it
// just left, so that a later flip back (rollback) finds that cluster
// complete. The cluster's offsets already have virtual offsets: its own
// (left == nil: it was the topic's first home) or those of its sealed map
// (left). Those become one prefix of the new map, up to the cluster's log
// end; the copy appends the new home's later records after it. meta names
// the new copy (its source is the new home) and its SourceShift; the caller
// checks that the result ends at the new home's flip point.
func ContinueMap(meta MapMeta, left *FlippedMap, end int64) (*OffsetMap, error) {
	if left == nil {
		m := NewOffsetMap(meta, 0, 0)
		if end > 0 {
			if err := m.add(0, 0, end); err != nil {
				return nil, err
			}
		}
		return m, nil
	}
	v, t := left.FlipPoint()
	if end < t {
		return nil, fmt.Errorf("%s/%d: the log ends at %d, before the %d offsets it held when the topic last left it: it was truncated", meta.Topic, meta.Partition, end, t)
	}
	m := left.m.clone()
	m.meta = meta
	if end > t {
		if err := m.add(v, t, end-t); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// LoadMap reads a partition's persisted map as the replicator would (its
// snapshot and the deltas saved after it); nil and no error if there is
// none.
func LoadMap(dir, topic string, partition int32) (*OffsetMap, error) {
	return loadMapFile(dir, topic, partition)
}

// SaveMap persists m where a replicator with state directory dir finds it,
// as a fresh snapshot (its delta file emptied).
func SaveMap(dir string, m *OffsetMap) error {
	_, err := saveMapFile(dir, m)
	return err
}
