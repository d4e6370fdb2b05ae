package proxy

import (
	"math"
	"testing"
)

// shiftedMap is a flipped topic's map on its home as the replicator keeps
// it (replicator.FlippedMap past its flip point): virtual = target + 100,
// unbounded.
type shiftedMap struct{}

func (shiftedMap) ToTarget(v int64) (int64, bool) { return v - 100, v >= 100 }
func (shiftedMap) ToSource(t int64) (int64, bool) { return t + 100, true }
func (shiftedMap) SourceStart() int64             { return 100 }
func (shiftedMap) SourceEnd() int64               { return math.MaxInt64 }
func (shiftedMap) TargetStart() int64             { return 0 }
func (shiftedMap) TargetEnd() int64               { return math.MaxInt64 }

// The old home of a rollback is read through its flipped map: capped at a
// frozen end of 50 (target offsets), nothing at or past it is readable, the
// answers' ends clip to virtual 150, and a position past it waits there.
func TestReadCapOnAMappedOldHome(t *testing.T) {
	c := capAt(shiftedMap{}, 50)
	if c.TargetEnd() != 50 || c.SourceEnd() != 150 {
		t.Errorf("capped ends: target %d, virtual %d; want 50, 150", c.TargetEnd(), c.SourceEnd())
	}
	if tgt, ok := toTargetOffset(c, 149); !ok || tgt != 49 {
		t.Errorf("position 149: target %d, %v; want 49", tgt, ok)
	}
	if tgt, ok := toTargetOffset(c, 160); !ok || tgt != 50 {
		t.Errorf("position 160 (past the frozen end): target %d, %v; want to wait at 50", tgt, ok)
	}
	if v := toVirtualOffset(c, 70); v != 150 {
		t.Errorf("a high watermark of 70 on the old home reads as %d, want 150", v)
	}
	if v := toVirtualOffset(c, 20); v != 120 {
		t.Errorf("target 20 reads as %d, want 120", v)
	}
}
