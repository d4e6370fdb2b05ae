package proxy

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// gapMap: a copy with commit markers (several instances copy with a
// transaction per fetch answer). Target 0-2 hold virtual 100-102, target 3
// is a commit marker, target 4-5 hold virtual 103-104, target 6 is a
// commit marker; the map ends at target 7 (virtual 105).
type gapMap struct{}

func (gapMap) ToTarget(v int64) (int64, bool) {
	switch {
	case v < 100 || v > 105:
		return 0, false
	case v < 103:
		return v - 100, true
	case v < 105:
		return v - 99, true
	default:
		return 7, true
	}
}

func (gapMap) ToSource(t int64) (int64, bool) {
	switch {
	case t < 0 || t > 7:
		return 0, false
	case t < 3:
		return t + 100, true
	case t < 6:
		return max(t+99, 103), true // the marker at 3: the next record's
	default:
		return 105, true
	}
}
func (gapMap) SourceStart() int64       { return 100 }
func (gapMap) SourceEnd() int64         { return 105 }
func (gapMap) TargetStart() int64       { return 0 }
func (gapMap) TargetEnd() int64         { return 7 }
func (gapMap) TargetGaps() int64        { return 2 }
func (gapMap) InTargetGap(t int64) bool { return t == 3 || t == 6 }
func (gapMap) String() string           { return "gapMap" }
func batchAt(base int64, n int32, attrs int16) []byte {
	b := kmsg.RecordBatch{FirstOffset: base, Magic: 2, Attributes: attrs, NumRecords: n, LastOffsetDelta: n - 1, Records: []byte("records!")}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	return out
}

// A fetch answer read through a map with target gaps (the transactional
// copy's commit markers) carries no batch of a gap: translated, a marker
// would carry the next record's virtual offset, and a client skipping the
// marker would skip that record too (the three-instance flip test lost 42
// of 870 records before).
func TestFetchAnswerDropsBatchesInTargetGaps(t *testing.T) {
	const control = 0x20 | 0x10 // control batch of a transaction
	var rs []byte
	rs = append(rs, batchAt(0, 3, 0)...)
	rs = append(rs, batchAt(3, 1, control)...)
	rs = append(rs, batchAt(4, 2, 0)...)
	rs = append(rs, batchAt(6, 1, control)...)
	p := kmsg.FetchResponseTopicPartition{HighWatermark: 7, LastStableOffset: 7, RecordBatches: rs}
	offsetsFetchPartition(gapMap{}, &p, 100)
	var bases []string
	for off := 0; off+12 <= len(p.RecordBatches); {
		n := int(int32(binary.BigEndian.Uint32(p.RecordBatches[off+8:]))) + 12
		attrs := binary.BigEndian.Uint16(p.RecordBatches[off+21:])
		bases = append(bases, fmt.Sprintf("%d/%d", int64(binary.BigEndian.Uint64(p.RecordBatches[off:])), attrs&0x20))
		off += n
	}
	if fmt.Sprint(bases) != "[100/0 103/0]" {
		t.Fatalf("batches (virtual base/control bit) %v, want the two data batches at 100 and 103 and no marker", bases)
	}
	if p.HighWatermark != 105 || p.LastStableOffset != 105 {
		t.Fatalf("watermarks %d/%d, want 105", p.HighWatermark, p.LastStableOffset)
	}
}
