package replicator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// buildMap copies records at the given source offsets, one add per slice
// element (a batch), each batch a contiguous range [a, b).
func buildMap(t *testing.T, srcStart, tgtStart int64, batches [][2]int64, end int64) *OffsetMap {
	t.Helper()
	m := NewOffsetMap(MapMeta{Topic: "t", Partition: 3}, srcStart, tgtStart)
	for _, b := range batches {
		if err := m.add(b[0], m.TargetEnd(), b[1]-b[0]); err != nil {
			t.Fatal(err)
		}
	}
	m.advance(end)
	return m
}

func TestOffsetMapQueries(t *testing.T) {
	// Source 0..29 with: records 0-4, marker 5, records 6-9 (two batches:
	// 6-7, 8-9, coalesced), aborted 10-12, marker 13, records 14-19,
	// compacted 20-24 gone, record 25, trailing markers 26-27. End 28.
	m := buildMap(t, 0, 100, [][2]int64{{0, 5}, {6, 8}, {8, 10}, {14, 20}, {25, 26}}, 28)
	if got := m.Runs(); got != 4 {
		t.Fatalf("runs = %d, want 4 (6-7 and 8-9 coalesce)", got)
	}
	toTarget := []struct {
		src, tgt int64
		ok       bool
	}{
		{-1, 0, false},
		{0, 100, true}, {4, 104, true},
		{5, 105, true}, // marker at a run edge: next record (6)
		{6, 105, true}, {9, 108, true},
		{10, 109, true}, {13, 109, true}, // aborted + marker → record 14
		{14, 109, true}, {19, 114, true},
		{20, 115, true}, {24, 115, true}, // compacted → record 25
		{25, 115, true},
		{26, 116, true}, {27, 116, true}, // trailing gaps → target end
		{28, 116, true}, // SourceEnd → TargetEnd
		{29, 0, false},  // not copied yet
	}
	for _, c := range toTarget {
		got, ok := m.ToTarget(c.src)
		if ok != c.ok || (ok && got != c.tgt) {
			t.Errorf("ToTarget(%d) = %d, %v; want %d, %v", c.src, got, ok, c.tgt, c.ok)
		}
	}
	toSource := []struct {
		tgt, src int64
		ok       bool
	}{
		{99, 0, false},
		{100, 0, true}, {104, 4, true}, {105, 6, true}, {108, 9, true},
		{109, 14, true}, {114, 19, true}, {115, 25, true},
		{116, 28, true}, // TargetEnd → SourceEnd
		{117, 0, false},
	}
	for _, c := range toSource {
		got, ok := m.ToSource(c.tgt)
		if ok != c.ok || (ok && got != c.src) {
			t.Errorf("ToSource(%d) = %d, %v; want %d, %v", c.tgt, got, ok, c.src, c.ok)
		}
	}
	// Every real record round-trips.
	for _, r := range [][2]int64{{0, 5}, {6, 10}, {14, 20}, {25, 26}} {
		for s := r[0]; s < r[1]; s++ {
			tg, _ := m.ToTarget(s)
			if back, _ := m.ToSource(tg); back != s {
				t.Errorf("source %d → target %d → source %d", s, tg, back)
			}
		}
	}
}

func TestOffsetMapEdges(t *testing.T) {
	t.Run("an empty map maps its start to the target start", func(t *testing.T) {
		m := NewOffsetMap(MapMeta{}, 7, 0)
		if tg, ok := m.ToTarget(7); !ok || tg != 0 {
			t.Errorf("ToTarget(7) = %d, %v", tg, ok)
		}
		if s, ok := m.ToSource(0); !ok || s != 7 {
			t.Errorf("ToSource(0) = %d, %v", s, ok)
		}
		if _, ok := m.ToTarget(8); ok {
			t.Error("ToTarget(8) on an empty map is ok")
		}
	})
	t.Run("a gap before the first record maps to the first target offset", func(t *testing.T) {
		m := buildMap(t, 10, 0, [][2]int64{{12, 15}}, 15)
		for _, s := range []int64{10, 11, 12} {
			if tg, ok := m.ToTarget(s); !ok || tg != 0 {
				t.Errorf("ToTarget(%d) = %d, %v", s, tg, ok)
			}
		}
	})
	t.Run("a gap marked between two adds keeps the runs apart", func(t *testing.T) {
		m := NewOffsetMap(MapMeta{}, 0, 0)
		_ = m.add(0, 0, 3)
		m.advance(4) // marker at 3
		_ = m.add(4, 3, 2)
		if m.Runs() != 2 {
			t.Fatalf("runs = %d", m.Runs())
		}
		if tg, _ := m.ToTarget(3); tg != 3 {
			t.Errorf("marker maps to %d", tg)
		}
		if s, _ := m.ToSource(3); s != 4 {
			t.Errorf("target 3 maps to %d", s)
		}
	})
	t.Run("a foreign target offset is refused", func(t *testing.T) {
		m := NewOffsetMap(MapMeta{}, 0, 0)
		if err := m.add(0, 1, 1); err == nil {
			t.Error("add at target 1 of an empty map succeeded")
		}
		_ = m.add(0, 0, 2)
		if err := m.add(1, 2, 1); err == nil {
			t.Error("add below the source end succeeded")
		}
	})
}

func TestOffsetMapSaveLoad(t *testing.T) {
	m := buildMap(t, 3, 40, [][2]int64{{3, 5}, {6, 10}, {1 << 40, 1<<40 + 5}}, 1<<40+9)
	m.meta.SourceTopicID[0], m.meta.TargetTopicID[15] = 1, 2
	var buf bytes.Buffer
	if err := m.Save(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Load(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got.meta != m.meta || got.srcBase != m.srcBase || got.tgtBase != m.tgtBase ||
		got.nextSrc != m.nextSrc || got.tgtEnd != m.tgtEnd || got.Runs() != m.Runs() {
		t.Fatalf("loaded %+v, saved %+v", got, m)
	}
	if g, w := runList(got), runList(m); !slices.Equal(g, w) {
		t.Errorf("loaded runs %v, saved %v", g, w)
	}
	// Every flipped byte and every truncation is detected.
	b := buf.Bytes()
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if _, err := Load(bytes.NewReader(c)); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
		if _, err := Load(bytes.NewReader(b[:i])); err == nil {
			t.Fatalf("truncating to %d bytes went unnoticed", i)
		}
	}
	if _, err := Load(bytes.NewReader(b[:len(b)-1])); !errors.Is(err, ErrCorruptMap) {
		t.Errorf("truncated map: %v", err)
	}
}

func TestOffsetMapFile(t *testing.T) {
	dir := t.TempDir()
	if m, err := loadMapFile(dir, "orders", 2); m != nil || err != nil {
		t.Fatalf("missing file: %v, %v", m, err)
	}
	m := buildMap(t, 0, 0, [][2]int64{{0, 5}, {7, 9}}, 9)
	m.meta = MapMeta{Topic: "orders", Partition: 2}
	if _, err := saveMapFile(dir, m); err != nil {
		t.Fatal(err)
	}
	_ = m.add(9, 7, 1)
	if _, err := saveMapFile(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := loadMapFile(dir, "orders", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got.SourceEnd() != 10 || got.TargetEnd() != 8 || got.Runs() != 2 {
		t.Errorf("loaded end %d/%d runs %d", got.SourceEnd(), got.TargetEnd(), got.Runs())
	}
}

// A round trip source -> target -> source: the map for the source after the
// first flip starts as the identity up to the source's end, and the copy back
// appends the target's later records at their virtual offsets. A second
// continuation (the source left again) keeps every earlier answer.
func TestContinueMapAcrossFlips(t *testing.T) {
	// Forward copy: source 0..27 with gaps, target 100..113.
	fwd := buildMap(t, 0, 100, [][2]int64{{0, 5}, {6, 10}, {14, 20}}, 28)
	onTarget := Flipped(fwd) // flip point (28, 115)
	v, tgt := onTarget.FlipPoint()
	if v != 28 || tgt != 115 {
		t.Fatalf("flip point = (%d, %d), want (28, 115)", v, tgt)
	}
	// The source (offsets 0..27, all virtual) gets the copy back.
	back, err := ContinueMap(MapMeta{Topic: "t", Partition: 3, SourceShift: v - tgt}, nil, 28)
	if err != nil {
		t.Fatal(err)
	}
	if back.SourceEnd() != v || back.TargetEnd() != 28 {
		t.Fatalf("continued map ends at (%d, %d), want (%d, 28)", back.SourceEnd(), back.TargetEnd(), v)
	}
	for _, s := range []int64{0, 5, 13, 27} {
		if got, _ := back.ToSource(s); got != s {
			t.Fatalf("source offset %d is virtual %d, want the identity", s, got)
		}
	}
	// After the flip the target gets records 115..119 and a transaction
	// marker at 120 (a gap: not copied back), then 121..122. Copied back
	// (virtual = target + shift) they land at source 28..34.
	if err := back.add(115+back.Meta().SourceShift, 28, 5); err != nil {
		t.Fatal(err)
	}
	if err := back.add(121+back.Meta().SourceShift, 33, 2); err != nil {
		t.Fatal(err)
	}
	back.advance(123 + back.Meta().SourceShift)
	for _, c := range []struct{ src, virt int64 }{{27, 27}, {28, 28}, {32, 32}, {33, 34}, {34, 35}} {
		if got, _ := back.ToSource(c.src); got != c.virt {
			t.Fatalf("source offset %d -> virtual %d, want %d", c.src, got, c.virt)
		}
		if got, _ := onTarget.ToSource(c.virt - v + tgt); c.virt >= v && got != c.virt {
			t.Fatalf("the target disagrees on virtual %d", c.virt)
		}
	}
	// Roll back: the source is home again. Its view is the sealed map; the
	// target (ending at 123) continues from its own view.
	onSource := Flipped(back)
	v2, s2 := onSource.FlipPoint()
	if v2 != 36 || s2 != 35 {
		t.Fatalf("rollback flip point = (%d, %d), want (36, 35)", v2, s2)
	}
	fwd2, err := ContinueMap(MapMeta{Topic: "t", Partition: 3, SourceShift: v2 - s2}, onTarget, 123)
	if err != nil {
		t.Fatal(err)
	}
	if fwd2.SourceEnd() != v2 || fwd2.TargetEnd() != 123 {
		t.Fatalf("second forward map ends at (%d, %d), want (%d, 123)", fwd2.SourceEnd(), fwd2.TargetEnd(), v2)
	}
	for _, tg := range []int64{100, 104, 105, 114, 115, 120, 122} {
		want, _ := onTarget.ToSource(tg)
		if got, _ := fwd2.ToSource(tg); got != want {
			t.Fatalf("target offset %d: continued map says %d, the sealed one %d", tg, got, want)
		}
	}
	// Its shift survives a save and a load.
	var buf bytes.Buffer
	if err := fwd2.Save(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Load(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta().SourceShift != 1 || got.Runs() != fwd2.Runs() || got.SourceEnd() != fwd2.SourceEnd() {
		t.Fatalf("loaded map: shift %d runs %d end %d", got.Meta().SourceShift, got.Runs(), got.SourceEnd())
	}
	// A log shorter than the sealed map's end is refused.
	if _, err := ContinueMap(MapMeta{Topic: "t"}, onTarget, 114); err == nil {
		t.Fatal("a truncated log was accepted")
	}
}

// Version 1 files (written before the shift existed) still load, shift 0.
func TestOffsetMapReadsVersion1(t *testing.T) {
	m := buildMap(t, 0, 0, [][2]int64{{0, 5}, {7, 9}}, 10)
	b := m.AppendBinary(nil)
	// Rebuild the body as version 1: drop the shift varint (one zero byte
	// after the two topic ids) and recompute the checksum.
	at := len(mapMagic) + 1 + 1 + len("t") + 4 + 32
	v1 := append([]byte(nil), b[:at]...)
	v1[len(mapMagic)] = 1
	v1 = append(v1, b[at+1:len(b)-4]...)
	v1 = binary.BigEndian.AppendUint32(v1, crc32.Checksum(v1, castagnoli))
	got, err := Load(bytes.NewReader(v1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta().SourceShift != 0 || got.Runs() != 2 || got.SourceEnd() != 10 || got.TargetEnd() != 7 {
		t.Fatalf("version 1 map: %+v runs %d ends (%d, %d)", got.Meta(), got.Runs(), got.SourceEnd(), got.TargetEnd())
	}
}

func runList(m *OffsetMap) [][3]int64 {
	var out [][3]int64
	m.forEachRun(func(src, tgt, n int64) { out = append(out, [3]int64{src, tgt, n}) })
	return out
}

// refMap is the plain run list the packed blocks replaced: the reference
// the packed lookups must agree with.
type refMap struct {
	runs             []run
	srcBase, tgtEnd  int64
	tgtBase, nextSrc int64
}

func (r *refMap) runLen(i int) int64 {
	if i+1 < len(r.runs) {
		return r.runs[i+1].tgt - r.runs[i].tgt
	}
	return r.tgtEnd - r.runs[i].tgt
}

func (r *refMap) toTarget(src int64) (int64, bool) {
	if src < r.srcBase || src > r.nextSrc {
		return 0, false
	}
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].src > src })
	if i == 0 {
		return r.tgtBase, true
	}
	return r.runs[i-1].tgt + min(src-r.runs[i-1].src, r.runLen(i-1)), true
}

func (r *refMap) toSource(tgt int64) (int64, bool) {
	if tgt < r.tgtBase || tgt > r.tgtEnd {
		return 0, false
	}
	if tgt == r.tgtEnd {
		return r.nextSrc, true
	}
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].tgt > tgt })
	return r.runs[i-1].src + (tgt - r.runs[i-1].tgt), true
}

// The packed blocks answer exactly like a plain run list, for gaps and run
// lengths of every delta width, across block edges, after a clone and after
// a save and load.
func TestOffsetMapPackedMatchesRunList(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	widths := []int64{1, 200, 60_000, 1 << 20, 1 << 33}
	for round := 0; round < 20; round++ {
		srcBase, tgtBase := rng.Int64N(1000), rng.Int64N(1000)
		m := NewOffsetMap(MapMeta{Topic: "p"}, srcBase, tgtBase)
		ref := &refMap{srcBase: srcBase, tgtBase: tgtBase, nextSrc: srcBase, tgtEnd: tgtBase}
		src := srcBase
		nadds := 64*3 + rng.IntN(200)
		for k := 0; k < nadds; k++ {
			// mostly small gaps and lengths; some blocks get wide ones
			w := widths[0]
			if rng.IntN(50) == 0 {
				w = widths[rng.IntN(len(widths))]
			}
			gap := rng.Int64N(w + 1)
			if rng.IntN(4) == 0 {
				gap = 0 // coalesces with the run before
			}
			n := 1 + rng.Int64N(w)
			src += gap
			m.advance(src)
			if err := m.add(src, m.TargetEnd(), n); err != nil {
				t.Fatal(err)
			}
			if len(ref.runs) == 0 || ref.runs[len(ref.runs)-1].src+ref.runLen(len(ref.runs)-1) != src {
				ref.runs = append(ref.runs, run{src: src, tgt: ref.tgtEnd})
			}
			src += n
			ref.tgtEnd += n
			ref.nextSrc = src
		}
		m.advance(src + 3)
		ref.nextSrc = src + 3
		if m.Runs() != len(ref.runs) {
			t.Fatalf("runs = %d, want %d", m.Runs(), len(ref.runs))
		}
		var buf bytes.Buffer
		if err := m.Save(&buf); err != nil {
			t.Fatal(err)
		}
		loaded, err := Load(&buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, mm := range []*OffsetMap{m, m.clone(), loaded} {
			// Probe every run's edges and a few points inside and past.
			for i, r := range ref.runs {
				n := ref.runLen(i)
				for _, s := range []int64{r.src - 1, r.src, r.src + n/2, r.src + n - 1, r.src + n} {
					g, ok := mm.ToTarget(s)
					wg, wok := ref.toTarget(s)
					if g != wg || ok != wok {
						t.Fatalf("round %d: ToTarget(%d) = %d, %v; want %d, %v", round, s, g, ok, wg, wok)
					}
				}
				for _, tg := range []int64{r.tgt - 1, r.tgt, r.tgt + n/2, r.tgt + n - 1, r.tgt + n} {
					g, ok := mm.ToSource(tg)
					wg, wok := ref.toSource(tg)
					if g != wg || ok != wok {
						t.Fatalf("round %d: ToSource(%d) = %d, %v; want %d, %v", round, tg, g, ok, wg, wok)
					}
				}
			}
			for _, s := range []int64{srcBase - 1, srcBase, ref.nextSrc, ref.nextSrc + 1} {
				g, ok := mm.ToTarget(s)
				wg, wok := ref.toTarget(s)
				if g != wg || ok != wok {
					t.Fatalf("round %d: ToTarget(%d) = %d, %v; want %d, %v", round, s, g, ok, wg, wok)
				}
			}
		}
	}
}
