package replicator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzMap builds a map from ops: each op is a gap before a batch and the
// batch's length, as uvarints (a malformed tail ends the ops). A gap of 0
// after the first batch coalesces with the run before, as a fetch round
// with no marker between two batches does. It returns the map and the
// plain run list the map must answer like.
func fuzzMap(srcBase, tgtBase int64, ops []byte) (*OffsetMap, *refMap) {
	srcBase, tgtBase = srcBase&(1<<40-1), tgtBase&(1<<40-1)
	m := NewOffsetMap(MapMeta{Topic: "fuzz", Partition: 7, SourceShift: srcBase - tgtBase}, srcBase, tgtBase)
	ref := &refMap{srcBase: srcBase, tgtBase: tgtBase, nextSrc: srcBase, tgtEnd: tgtBase}
	src := srcBase
	for len(ops) > 0 && len(ref.runs) < 400 { // 400 runs: six packed blocks and a tail
		gap, k1 := binary.Uvarint(ops)
		if k1 <= 0 {
			break
		}
		n, k2 := binary.Uvarint(ops[k1:])
		if k2 <= 0 {
			break
		}
		ops = ops[k1+k2:]
		gap, n = gap&(1<<36-1), n&(1<<36-1)+1 // offsets stay far from overflow
		src += int64(gap)
		m.advance(src)
		if err := m.add(src, m.TargetEnd(), int64(n)); err != nil {
			panic(err) // the ops are always valid adds
		}
		if len(ref.runs) == 0 || ref.runs[len(ref.runs)-1].src+ref.runLen(len(ref.runs)-1) != src {
			ref.runs = append(ref.runs, run{src: src, tgt: ref.tgtEnd})
		}
		src += int64(n)
		ref.tgtEnd += int64(n)
		ref.nextSrc = src
	}
	return m, ref
}

// agree fails t unless m answers every probe like ref: each run's edges,
// its middle, and the offsets just outside the map.
func agree(t *testing.T, what string, m *OffsetMap, ref *refMap) {
	t.Helper()
	if m.SourceStart() != ref.srcBase || m.SourceEnd() != ref.nextSrc || m.TargetStart() != ref.tgtBase || m.TargetEnd() != ref.tgtEnd {
		t.Fatalf("%s: bounds [%d,%d) -> [%d,%d), want [%d,%d) -> [%d,%d)", what,
			m.SourceStart(), m.SourceEnd(), m.TargetStart(), m.TargetEnd(), ref.srcBase, ref.nextSrc, ref.tgtBase, ref.tgtEnd)
	}
	if m.Runs() != len(ref.runs) {
		t.Fatalf("%s: %d runs, want %d", what, m.Runs(), len(ref.runs))
	}
	srcs := []int64{ref.srcBase - 1, ref.srcBase, ref.nextSrc, ref.nextSrc + 1}
	tgts := []int64{ref.tgtBase - 1, ref.tgtBase, ref.tgtEnd, ref.tgtEnd + 1}
	for i, r := range ref.runs {
		n := ref.runLen(i)
		srcs = append(srcs, r.src-1, r.src, r.src+n/2, r.src+n-1, r.src+n)
		tgts = append(tgts, r.tgt-1, r.tgt, r.tgt+n/2, r.tgt+n-1)
	}
	for _, s := range srcs {
		g, ok := m.ToTarget(s)
		w, wok := ref.toTarget(s)
		if g != w || ok != wok {
			t.Fatalf("%s: ToTarget(%d) = %d, %v; want %d, %v", what, s, g, ok, w, wok)
		}
	}
	for _, tg := range tgts {
		g, ok := m.ToSource(tg)
		w, wok := ref.toSource(tg)
		if g != w || ok != wok {
			t.Fatalf("%s: ToSource(%d) = %d, %v; want %d, %v", what, tg, g, ok, w, wok)
		}
		if ok && tg < ref.tgtEnd {
			// A copied record maps back to itself.
			if back, _ := m.ToTarget(g); back != tg {
				t.Fatalf("%s: ToTarget(ToSource(%d)) = %d", what, tg, back)
			}
		}
	}
}

// FuzzOffsetMapRoundTrip: a map built by the replicator's own appends,
// saved and loaded, answers every lookup as before (and as the plain run
// list), and saving the loaded map gives the same bytes.
func FuzzOffsetMapRoundTrip(f *testing.F) {
	f.Add(int64(0), int64(0), []byte{0, 5, 1, 3, 0, 2, 4, 9})
	f.Add(int64(1000), int64(7), bytes.Repeat([]byte{1, 0}, 200)) // a marker every record: packed blocks
	f.Add(int64(5), int64(5), []byte{0x80, 0x80, 0x04, 0xff, 0xff, 0x03, 2, 1})
	f.Add(int64(0), int64(100), []byte{})
	f.Fuzz(func(t *testing.T, srcBase, tgtBase int64, ops []byte) {
		m, ref := fuzzMap(srcBase, tgtBase, ops)
		agree(t, "built", m, ref)
		var buf bytes.Buffer
		if err := m.Save(&buf); err != nil {
			t.Fatal(err)
		}
		saved := buf.Bytes()
		loaded, err := Load(bytes.NewReader(saved))
		if err != nil {
			t.Fatalf("Load(Save(m)) = %v", err)
		}
		agree(t, "loaded", loaded, ref)
		if loaded.Meta() != m.Meta() {
			t.Fatalf("meta %+v, want %+v", loaded.Meta(), m.Meta())
		}
		if again := loaded.AppendBinary(nil); !bytes.Equal(again, saved) {
			t.Fatal("saving the loaded map gives other bytes")
		}
	})
}

// FuzzOffsetMapFile: any bytes in a map file either load or fail with
// ErrCorruptMap (or the version error), without a panic and without
// allocating for lengths the file declares but does not hold. A map that
// loads is well formed: its runs increase, its lookups agree with its own
// run list and invert each other, and it saves and loads again to the
// same answers and bytes. The seeds are files saveMapFile wrote.
func FuzzOffsetMapFile(f *testing.F) {
	f.Add([]byte("KPOMAP\x02"))
	dir := f.TempDir()
	for i, ops := range [][]byte{{}, {0, 5, 1, 3, 0, 2}, bytes.Repeat([]byte{1, 0}, 150)} {
		m, _ := fuzzMap(int64(i*1000), int64(i*10), ops)
		if _, err := saveMapFile(dir, m); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "fuzz", "7.offsetmap"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// As it is, and with its checksum made right, so that the fuzzer
		// reaches the decoder behind the checksum.
		checkMapFile(t, data)
		if len(data) >= 4 {
			body := data[:len(data)-4]
			checkMapFile(t, binary.BigEndian.AppendUint32(body[:len(body):len(body)], crc32.Checksum(body, castagnoli)))
		}
	})
}

func checkMapFile(t *testing.T, data []byte) {
	t.Helper()
	{
		m, err := Load(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorruptMap) && !strings.Contains(err.Error(), "file version") {
				t.Fatalf("Load: %v, want ErrCorruptMap or the version error", err)
			}
			return
		}
		ref := &refMap{srcBase: m.srcBase, tgtBase: m.tgtBase, nextSrc: m.nextSrc, tgtEnd: m.tgtEnd}
		end := m.srcBase
		m.forEachRun(func(src, tgt, n int64) {
			if src < end || (len(ref.runs) > 0 && src == end) || n <= 0 {
				t.Fatalf("loaded run (%d, %d, %d) after source end %d: runs must increase with a gap between them", src, tgt, n, end)
			}
			ref.runs = append(ref.runs, run{src: src, tgt: tgt})
			end = src + n
		})
		if m.nextSrc < end {
			t.Fatalf("source end %d is inside the last run (ends at %d)", m.nextSrc, end)
		}
		// The run list is in compact target offsets; with target gaps
		// (version 3) the lookups are TestOffsetMapTargetGaps' business,
		// and here the file only has to round-trip.
		gaps := len(m.tgaps) > 0
		if !gaps {
			agree(t, "loaded", m, ref)
		}
		saved := m.AppendBinary(nil)
		again, err := Load(bytes.NewReader(saved))
		if err != nil {
			t.Fatalf("Load(Save(Load(file))) = %v", err)
		}
		if !gaps {
			agree(t, "reloaded", again, ref)
		}
		if !bytes.Equal(again.AppendBinary(nil), saved) {
			t.Fatal("saving twice gives other bytes")
		}
	}
}
