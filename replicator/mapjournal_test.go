package replicator

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
)

// sameMap fails unless a and b answer every lookup alike over their range.
func sameMap(t *testing.T, a, b *OffsetMap) {
	t.Helper()
	if a.SourceStart() != b.SourceStart() || a.SourceEnd() != b.SourceEnd() || a.TargetStart() != b.TargetStart() || a.TargetEnd() != b.TargetEnd() || a.Runs() != b.Runs() {
		t.Fatalf("maps differ: [%d,%d)->[%d,%d) %d runs vs [%d,%d)->[%d,%d) %d runs",
			a.SourceStart(), a.SourceEnd(), a.TargetStart(), a.TargetEnd(), a.Runs(),
			b.SourceStart(), b.SourceEnd(), b.TargetStart(), b.TargetEnd(), b.Runs())
	}
	for s := a.SourceStart(); s <= a.SourceEnd(); s++ {
		x, ok1 := a.ToTarget(s)
		y, ok2 := b.ToTarget(s)
		if x != y || ok1 != ok2 {
			t.Fatalf("ToTarget(%d) = %d,%v vs %d,%v", s, x, ok1, y, ok2)
		}
	}
	for tg := a.TargetStart(); tg <= a.TargetEnd(); tg++ {
		x, _ := a.ToSource(tg)
		y, _ := b.ToSource(tg)
		if x != y {
			t.Fatalf("ToSource(%d) = %d vs %d", tg, x, y)
		}
	}
}

// copyRound adds a fetch round's worth of batches with a marker after each
// (a transactional topic).
func copyRound(t testing.TB, m *OffsetMap, rng *rand.Rand, batches int) {
	for i := 0; i < batches; i++ {
		n := int64(1 + rng.IntN(20))
		src := m.SourceEnd() + int64(rng.IntN(2)) // sometimes a gap before
		if err := m.add(src, m.TargetEnd(), n); err != nil {
			t.Fatal(err)
		}
		m.advance(src + n + int64(rng.IntN(2))) // sometimes a marker after
	}
}

// Saves made as deltas, with snapshots (compaction) in between, load back
// into exactly the map in memory; the delta file is emptied by a snapshot.
func TestMapDeltasReplayToTheSameMap(t *testing.T) {
	defer func(v int64) { minDeltaCompact = v }(minDeltaCompact)
	minDeltaCompact = 0 // compact as soon as the deltas outgrow the snapshot
	dir := t.TempDir()
	m := NewOffsetMap(MapMeta{Topic: "tx", Partition: 1}, 0, 0)
	if _, err := saveMapFile(dir, m); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	deltas, snapshots := 0, 0
	for round := 0; round < 400; round++ {
		copyRound(t, m, rng, 10)
		before := fileSize(t, deltaPath(dir, "tx", 1))
		if _, err := persistMap(dir, m); err != nil {
			t.Fatal(err)
		}
		if after := fileSize(t, deltaPath(dir, "tx", 1)); after > before {
			deltas++
		} else {
			snapshots++
		}
		if round%37 == 0 {
			got, err := loadMapFile(dir, "tx", 1)
			if err != nil {
				t.Fatal(err)
			}
			sameMap(t, m, got)
		}
	}
	if deltas == 0 || snapshots == 0 {
		t.Fatalf("%d delta saves and %d snapshots, want both", deltas, snapshots)
	}
	got, err := loadMapFile(dir, "tx", 1)
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, m, got)
}

func fileSize(t *testing.T, path string) int64 {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// A state directory written before delta files existed (a version 1 or 2
// snapshot alone) loads as it did, and the first save after it appends a
// delta next to it.
func TestOldMapFileLoadsAndTakesDeltas(t *testing.T) {
	dir := t.TempDir()
	m := buildMap(t, 0, 0, [][2]int64{{0, 5}, {7, 9}}, 9)
	m.meta = MapMeta{Topic: "old", Partition: 0}
	// What the previous release wrote: the snapshot alone, via the same
	// unchanged version 2 encoder, and a version 1 file.
	if err := writeFileAtomic(mapPath(dir, "old", 0), m.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	got, err := loadMapFile(dir, "old", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, m, got)
	v1 := m.AppendBinary(nil)
	v1[len(mapMagic)] = 1
	v1 = append(v1[:len(mapMagic)+1+1+len("old")+4+32], v1[len(mapMagic)+1+1+len("old")+4+32+1:len(v1)-4]...) // drop the shift
	v1 = append(v1, 0, 0, 0, 0)
	sum := crcOf(v1[:len(v1)-4])
	copy(v1[len(v1)-4:], sum)
	if got, err := decodeMap(v1); err != nil {
		t.Fatalf("version 1 file: %v", err)
	} else {
		sameMap(t, m, got)
	}
	// The loaded map journals from its first save on.
	if _, err := saveMapFile(dir, got); err != nil {
		t.Fatal(err)
	}
	_ = got.add(10, got.TargetEnd(), 3)
	if n, err := persistMap(dir, got); err != nil || fileSize(t, deltaPath(dir, "old", 0)) == 0 {
		t.Fatalf("persist after an old file: %d bytes, %v, delta file %d bytes", n, err, fileSize(t, deltaPath(dir, "old", 0)))
	}
	again, err := loadMapFile(dir, "old", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, got, again)
}

func crcOf(b []byte) []byte {
	var out [4]byte
	c := crc32c(b)
	out[0], out[1], out[2], out[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	return out[:]
}

// Only a delta record cut short at the end of the file (a crash mid-append)
// is forgiven; a bad record in the middle, or one that does not start where
// the map ends, fails the load.
func TestMapDeltaTornTailForgivenCorruptionRefused(t *testing.T) {
	dir := t.TempDir()
	m := NewOffsetMap(MapMeta{Topic: "t", Partition: 0}, 0, 0)
	if _, err := saveMapFile(dir, m); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var states []*OffsetMap
	for i := 0; i < 3; i++ {
		copyRound(t, m, rng, 3)
		if _, err := persistMap(dir, m); err != nil {
			t.Fatal(err)
		}
		states = append(states, m.clone())
	}
	dp := deltaPath(dir, "t", 0)
	full, err := os.ReadFile(dp)
	if err != nil {
		t.Fatal(err)
	}
	// Torn last record: the map of the first two saves.
	if err := os.WriteFile(dp, full[:len(full)-2], 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := loadMapFile(dir, "t", 0)
	if err != nil {
		t.Fatalf("torn last record: %v", err)
	}
	sameMap(t, states[1], got)
	// A flipped byte in the first record.
	bad := bytes.Clone(full)
	bad[len(deltaMagic)+3] ^= 0xff
	if err := os.WriteFile(dp, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMapFile(dir, "t", 0); !errors.Is(err, ErrCorruptMap) {
		t.Fatalf("corrupt middle record: %v, want ErrCorruptMap", err)
	}
	// A missing middle record: the third does not start where the first
	// ends.
	first := len(deltaMagic) + recordLen(t, full[len(deltaMagic):])
	second := recordLen(t, full[first:])
	gap := append(bytes.Clone(full[:first]), full[first+second:]...)
	if err := os.WriteFile(dp, gap, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMapFile(dir, "t", 0); !errors.Is(err, ErrCorruptMap) {
		t.Fatalf("missing middle record: %v, want ErrCorruptMap", err)
	}
}

func recordLen(t *testing.T, b []byte) int {
	l, n := uvarint(b)
	if n <= 0 {
		t.Fatal("bad record length")
	}
	return n + int(l) + 4
}

// Trimming below the source's log start drops the runs there, keeps every
// answer above it, and persists as a snapshot.
func TestTrimBelowLogStart(t *testing.T) {
	dir := t.TempDir()
	m := NewOffsetMap(MapMeta{Topic: "r", Partition: 0}, 0, 0)
	rng := rand.New(rand.NewPCG(7, 8))
	copyRound(t, m, rng, 300)
	if _, err := saveMapFile(dir, m); err != nil {
		t.Fatal(err)
	}
	before := m.clone()
	runs := m.Runs()
	cut := m.SourceEnd() / 2
	if !m.trimBelow(cut) {
		t.Fatal("nothing trimmed")
	}
	if m.SourceStart() != cut || m.Runs() >= runs {
		t.Fatalf("after trimming at %d: start %d, %d runs (was %d)", cut, m.SourceStart(), m.Runs(), runs)
	}
	if _, ok := m.ToTarget(cut - 1); ok {
		t.Fatal("an offset below the log start still maps")
	}
	wantTgt, _ := before.ToTarget(cut)
	if m.TargetStart() != wantTgt {
		t.Fatalf("target start %d, want %d", m.TargetStart(), wantTgt)
	}
	for s := cut; s <= m.SourceEnd(); s++ {
		x, _ := m.ToTarget(s)
		y, _ := before.ToTarget(s)
		if x != y {
			t.Fatalf("ToTarget(%d) = %d, was %d", s, x, y)
		}
	}
	for tg := m.TargetStart(); tg <= m.TargetEnd(); tg++ {
		x, _ := m.ToSource(tg)
		y, _ := before.ToSource(tg)
		if x != y {
			t.Fatalf("ToSource(%d) = %d, was %d", tg, x, y)
		}
	}
	copyRound(t, m, rng, 5)
	if _, err := persistMap(dir, m); err != nil {
		t.Fatal(err)
	}
	if fileSize(t, deltaPath(dir, "r", 0)) != 0 {
		t.Fatal("a trim was saved as a delta; only a snapshot holds a new start")
	}
	got, err := loadMapFile(dir, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, m, got)
}

// BenchmarkMapSavePerRound measures the bytes a fetch round's save writes
// for a 100k-gap map (a transactional topic of 1M offsets): the whole file
// every time (before) or a delta with snapshots once the deltas outgrow it
// (after).
func BenchmarkMapSavePerRound(b *testing.B) {
	for _, mode := range []string{"full-rewrite", "delta"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir()
			m := benchMaps(b)["transactional"].clone()
			m.meta = MapMeta{Topic: "bench", Partition: 0}
			if _, err := saveMapFile(dir, m); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(9, 10))
			written := 0
			for b.Loop() {
				copyRound(b, m, rng, 10)
				var n int
				var err error
				if mode == "delta" {
					n, err = persistMap(dir, m)
				} else {
					n, err = saveMapFile(dir, m)
				}
				if err != nil {
					b.Fatal(err)
				}
				written += n
			}
			b.ReportMetric(float64(written)/float64(b.N), "B-written/round")
		})
	}
}
