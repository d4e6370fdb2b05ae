package proxy

import (
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeMap: source offsets 100..109 copied, with a gap at 104-105 (a
// transaction marker and an aborted record): target 0..7.
type fakeMap struct{}

func (fakeMap) ToTarget(v int64) (int64, bool) {
	switch {
	case v < 100 || v > 110:
		return 0, false
	case v < 104:
		return v - 100, true
	case v < 106:
		return 4, true // on the gap: the next real record
	default:
		return v - 102, true
	}
}
func (fakeMap) ToSource(t int64) (int64, bool) {
	switch {
	case t < 0 || t > 8:
		return 0, false
	case t < 4:
		return t + 100, true
	default:
		return t + 102, true
	}
}
func (fakeMap) SourceStart() int64 { return 100 }
func (fakeMap) SourceEnd() int64   { return 110 }
func (fakeMap) TargetStart() int64 { return 0 }
func (fakeMap) TargetEnd() int64   { return 8 }

func TestOffsetTranslationBothWays(t *testing.T) {
	m := fakeMap{}
	cases := []struct {
		name    string
		virtual int64
		target  int64
		ok      bool
	}{
		{"a copied record maps exactly", 102, 2, true},
		{"a position on a gap maps to the next real record", 104, 4, true},
		{"the end of the map is the end of the target", 110, 8, true},
		{"a position not copied yet waits at the end", 500, 8, true},
		{"a position before the replicated range is out of range", 99, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := toTargetOffset(m, c.virtual)
			if ok != c.ok || (ok && got != c.target) {
				t.Fatalf("toTargetOffset(%d) = %d, %v; want %d, %v", c.virtual, got, ok, c.target, c.ok)
			}
		})
	}
	for tgt, want := range map[int64]int64{0: 100, 3: 103, 4: 106, 8: 110, 20: 110, -1: -1} {
		if got := toVirtualOffset(m, tgt); got != want {
			t.Errorf("toVirtualOffset(%d) = %d, want %d", tgt, got, want)
		}
	}
}

// A target fetch answer leaves with virtual batch base offsets and
// watermarks; record bytes are not touched.
func TestVirtualizeFetchPartition(t *testing.T) {
	b1, b2 := batchBytes(t, -1, 2, 4), batchBytes(t, -1, 2, 4)
	binary.BigEndian.PutUint64(b1, 0) // target offsets 0..3
	binary.BigEndian.PutUint64(b2, 4) // target offsets 4..7
	p := kmsg.NewFetchResponseTopicPartition()
	p.RecordBatches = append(append([]byte(nil), b1...), b2...)
	p.HighWatermark, p.LastStableOffset, p.LogStartOffset = 8, 8, 0
	p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 3}}
	offsetsFetchPartition(fakeMap{}, &p, 0)
	if base := int64(binary.BigEndian.Uint64(p.RecordBatches)); base != 100 {
		t.Errorf("first batch base %d, want 100", base)
	}
	if base := int64(binary.BigEndian.Uint64(p.RecordBatches[len(b1):])); base != 106 {
		t.Errorf("second batch base %d, want 106 (after the gap)", base)
	}
	if p.HighWatermark != 110 || p.LastStableOffset != 110 || p.LogStartOffset != 100 {
		t.Errorf("hwm %d lso %d start %d, want 110 110 100", p.HighWatermark, p.LastStableOffset, p.LogStartOffset)
	}
	if len(p.AbortedTransactions) != 1 || p.AbortedTransactions[0].FirstOffset != 103 || p.AbortedTransactions[0].ProducerID != 1 {
		t.Errorf("aborted transactions %+v, want first offset 103 (virtual) for producer 1", p.AbortedTransactions)
	}
	if string(p.RecordBatches[8:len(b1)]) != string(b1[8:]) {
		t.Errorf("bytes after the base offset changed")
	}
	if oor := outOfRange(fakeMap{}, 3); oor.ErrorCode != kerr.OffsetOutOfRange.Code || oor.LogStartOffset != 100 {
		t.Errorf("out of range answer: %+v", oor)
	}
}

// Batches past the map's end (on the target, not recorded yet) and a partial
// batch at the end of an answer are cut off; a partial first batch stays, its
// offset translated, so the client knows to fetch more bytes.
func TestVirtualizeFetchPartitionCutsWhatTheMapDoesNotCover(t *testing.T) {
	b1, b2, b3 := batchBytes(t, -1, 2, 4), batchBytes(t, -1, 2, 4), batchBytes(t, -1, 2, 4)
	binary.BigEndian.PutUint64(b1, 0) // target 0..3: in the map
	binary.BigEndian.PutUint64(b2, 4) // target 4..7: in the map
	binary.BigEndian.PutUint64(b3, 8) // target 8..11: not recorded yet
	whole := append(append(append([]byte(nil), b1...), b2...), b3...)

	p := kmsg.NewFetchResponseTopicPartition()
	p.RecordBatches = append([]byte(nil), whole...)
	offsetsFetchPartition(fakeMap{}, &p, 0)
	if len(p.RecordBatches) != len(b1)+len(b2) {
		t.Fatalf("kept %d bytes, want the two mapped batches (%d)", len(p.RecordBatches), len(b1)+len(b2))
	}

	p.RecordBatches = append([]byte(nil), whole[:len(b1)+len(b2)/2]...) // b2 cut by the broker
	offsetsFetchPartition(fakeMap{}, &p, 0)
	if len(p.RecordBatches) != len(b1) {
		t.Fatalf("kept %d bytes, want only the whole first batch (%d)", len(p.RecordBatches), len(b1))
	}

	p.RecordBatches = append([]byte(nil), b1[:len(b1)/2]...) // only part of the first batch
	offsetsFetchPartition(fakeMap{}, &p, 0)
	if len(p.RecordBatches) != len(b1)/2 || binary.BigEndian.Uint64(p.RecordBatches) != 100 {
		t.Fatalf("partial first batch: %d bytes, base %d; want %d bytes, base 100", len(p.RecordBatches), binary.BigEndian.Uint64(p.RecordBatches), len(b1)/2)
	}
}

// growingMap is fakeMap whose end moves from 8 to 12 after the first look,
// as a live map does while the replicator copies.
type growingMap struct {
	fakeMap
	looks *int
}

func (g growingMap) TargetEnd() int64 {
	*g.looks++
	if *g.looks == 1 {
		return 8
	}
	return 12
}
func (g growingMap) SourceEnd() int64 {
	if *g.looks <= 1 {
		return 110
	}
	return 114
}
func (g growingMap) ToSource(t int64) (int64, bool) {
	if t >= 8 && t <= 12 {
		return t + 102, true
	}
	return g.fakeMap.ToSource(t)
}

// An answer is translated against one snapshot of a growing map: the kept
// batches all lie below the watermarks, never at or past them (a
// read_committed client drops records at or past the last stable offset).
func TestVirtualizeFetchPartitionUsesOneSnapshotOfAGrowingMap(t *testing.T) {
	b1, b2 := batchBytes(t, -1, 2, 4), batchBytes(t, -1, 2, 4)
	binary.BigEndian.PutUint64(b1, 4)
	binary.BigEndian.PutUint64(b2, 8) // recorded only after the first look
	p := kmsg.NewFetchResponseTopicPartition()
	p.RecordBatches = append(append([]byte(nil), b1...), b2...)
	p.HighWatermark, p.LastStableOffset = 12, 12
	looks := 0
	offsetsFetchPartition(growingMap{looks: &looks}, &p, 0)
	last := int64(binary.BigEndian.Uint64(p.RecordBatches)) + 3
	if len(p.RecordBatches) != len(b1) {
		t.Fatalf("kept %d bytes, want the batch the first snapshot covers (%d)", len(p.RecordBatches), len(b1))
	}
	if last >= p.LastStableOffset || last >= p.HighWatermark {
		t.Fatalf("kept records up to %d, but hwm %d lso %d", last, p.HighWatermark, p.LastStableOffset)
	}
}

// A client ahead of the map's end is sent to the map's end; batches that
// end below its position are dropped from the answer (a broker never sends
// them), and a batch that reaches its position stays.
func TestVirtualizeFetchPartitionDropsBatchesBelowThePosition(t *testing.T) {
	b1, b2 := batchBytes(t, -1, 2, 4), batchBytes(t, -1, 2, 4)
	binary.BigEndian.PutUint64(b1, 0) // virtual 100..103
	binary.BigEndian.PutUint64(b2, 4) // virtual 106..109
	p := kmsg.NewFetchResponseTopicPartition()
	p.RecordBatches = append(append([]byte(nil), b1...), b2...)
	offsetsFetchPartition(fakeMap{}, &p, 107)
	if len(p.RecordBatches) != len(b2) || binary.BigEndian.Uint64(p.RecordBatches) != 106 {
		t.Fatalf("kept %d bytes from base %d; want only the batch reaching 107 (%d bytes, base 106)", len(p.RecordBatches), binary.BigEndian.Uint64(p.RecordBatches), len(b2))
	}
	p.RecordBatches = append(append([]byte(nil), b1...), b2...)
	offsetsFetchPartition(fakeMap{}, &p, 110)
	if len(p.RecordBatches) != 0 {
		t.Fatalf("kept %d bytes for a client past every batch", len(p.RecordBatches))
	}
}
