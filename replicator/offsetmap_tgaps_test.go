package replicator

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// tgapModel is an offset map written out offset by offset: what each source
// offset became on the target (-1: a source gap) and what each target offset
// holds (-1: a target gap, the copy's own marker or an aborted write).
type tgapModel struct {
	srcBase, tgtBase int64
	srcTo            []int64 // srcTo[s-srcBase]
	tgtFrom          []int64 // tgtFrom[t-tgtBase]
}

func (md *tgapModel) srcEnd() int64 { return md.srcBase + int64(len(md.srcTo)) }
func (md *tgapModel) tgtEnd() int64 { return md.tgtBase + int64(len(md.tgtFrom)) }

// toTarget: a copied source offset's target; a gap's, the next copied
// record's (or the target end).
func (md *tgapModel) toTarget(s int64) int64 {
	for i := s - md.srcBase; i < int64(len(md.srcTo)); i++ {
		if md.srcTo[i] >= 0 {
			return md.srcTo[i]
		}
	}
	return md.tgtEnd()
}

// toSource: a record's source offset; a target gap's, the next record's (or
// the source end).
func (md *tgapModel) toSource(t int64) int64 {
	for i := t - md.tgtBase; i < int64(len(md.tgtFrom)); i++ {
		if md.tgtFrom[i] >= 0 {
			return md.tgtFrom[i]
		}
	}
	return md.srcEnd()
}

func (md *tgapModel) check(t *testing.T, what string, m *OffsetMap) {
	t.Helper()
	if m.SourceStart() != md.srcBase || m.SourceEnd() != md.srcEnd() || m.TargetStart() != md.tgtBase || m.TargetEnd() != md.tgtEnd() {
		t.Fatalf("%s: bounds [%d,%d) -> [%d,%d), want [%d,%d) -> [%d,%d)", what,
			m.SourceStart(), m.SourceEnd(), m.TargetStart(), m.TargetEnd(), md.srcBase, md.srcEnd(), md.tgtBase, md.tgtEnd())
	}
	for s := md.srcBase; s <= md.srcEnd(); s++ {
		if got, ok := m.ToTarget(s); !ok || got != md.toTarget(s) {
			t.Fatalf("%s: ToTarget(%d) = %d, %v; want %d", what, s, got, ok, md.toTarget(s))
		}
	}
	for tg := md.tgtBase; tg <= md.tgtEnd(); tg++ {
		if got, ok := m.ToSource(tg); !ok || got != md.toSource(tg) {
			t.Fatalf("%s: ToSource(%d) = %d, %v; want %d", what, tg, got, ok, md.toSource(tg))
		}
		// The fetch path drops the batches of a target gap.
		if gap := tg < md.tgtEnd() && md.tgtFrom[tg-md.tgtBase] < 0; m.InTargetGap(tg) != gap {
			t.Fatalf("%s: InTargetGap(%d) = %v, want %v", what, tg, !gap, gap)
		}
	}
	if _, ok := m.ToSource(md.tgtEnd() + 1); ok {
		t.Fatalf("%s: ToSource past the target end answers", what)
	}
}

// A transactional copy's target holds offsets no source record explains
// (its commit markers, a fenced owner's aborted records): the map skips
// them, in lookups both ways, across source gaps, saves (snapshot and
// delta), loads and trims, exactly as a plain list of offsets would.
func TestOffsetMapTargetGaps(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 14))
		dir := t.TempDir()
		srcBase, tgtBase := int64(rng.IntN(50)), int64(rng.IntN(50))
		m := NewOffsetMap(MapMeta{Topic: "g", Partition: 1}, srcBase, tgtBase)
		md := &tgapModel{srcBase: srcBase, tgtBase: tgtBase}
		if _, err := saveMapFile(dir, m); err != nil {
			t.Fatal(err)
		}
		for step := 0; step < 300; step++ {
			switch k := rng.IntN(10); {
			case k < 5: // a batch, sometimes after source gaps
				for g := rng.IntN(3); g > 0; g-- {
					md.srcTo = append(md.srcTo, -1)
				}
				m.advance(md.srcEnd())
				n := 1 + rng.IntN(8)
				src, tgt := md.srcEnd(), m.TargetEnd()
				if err := m.add(src, tgt, int64(n)); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				for i := 0; i < n; i++ {
					md.srcTo = append(md.srcTo, md.tgtEnd())
					md.tgtFrom = append(md.tgtFrom, src+int64(i))
				}
			case k < 8: // a commit marker, or an aborted write
				g := 1 + rng.IntN(3)
				m.skipTarget(m.TargetEnd() + int64(g))
				for i := 0; i < g; i++ {
					md.tgtFrom = append(md.tgtFrom, -1)
				}
			case k < 9: // a save, as the copy makes them
				if _, err := persistMap(dir, m); err != nil {
					t.Fatal(err)
				}
			default: // the source's log start moves
				if len(md.srcTo) < 4 {
					continue
				}
				cut := md.srcBase + int64(rng.IntN(len(md.srcTo)))
				newTgt := md.toTarget(cut)
				m.trimBelow(cut)
				md.srcTo = md.srcTo[cut-md.srcBase:]
				md.tgtFrom = md.tgtFrom[newTgt-md.tgtBase:]
				md.srcBase, md.tgtBase = cut, newTgt
			}
			if step%25 == 0 {
				md.check(t, "live", m)
			}
		}
		md.check(t, "live", m)
		if _, err := persistMap(dir, m); err != nil {
			t.Fatal(err)
		}
		got, err := loadMapFile(dir, "g", 1)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		md.check(t, "snapshot and deltas loaded", got)
		var buf bytes.Buffer
		if err := m.Save(&buf); err != nil {
			t.Fatal(err)
		}
		loaded, err := Load(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		md.check(t, "snapshot loaded", loaded)
		if !bytes.Equal(loaded.AppendBinary(nil), buf.Bytes()) {
			t.Fatal("saving the loaded map gives other bytes")
		}
		md.check(t, "clone", m.clone())
	}
}

// A map without target gaps is still written as version 2, which a kproxy
// from before target gaps reads.
func TestOffsetMapWithoutTargetGapsStaysVersion2(t *testing.T) {
	m := NewOffsetMap(MapMeta{Topic: "v", Partition: 0}, 0, 0)
	if err := m.add(0, 0, 5); err != nil {
		t.Fatal(err)
	}
	if v := m.AppendBinary(nil)[len(mapMagic)]; v != 2 {
		t.Fatalf("version %d without target gaps, want 2", v)
	}
	m.skipTarget(m.TargetEnd() + 1)
	if v := m.AppendBinary(nil)[len(mapMagic)]; v != 3 {
		t.Fatalf("version %d with a target gap, want 3", v)
	}
}
