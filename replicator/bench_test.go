package replicator

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// benchMaps are 1M-offset partitions: "transactional" has a marker every
// 10th offset (100k gaps); "compacted" keeps each offset with probability
// 0.3, as a compacted topic whose keys were mostly overwritten (~210k gaps).
func benchMaps(tb testing.TB) map[string]*OffsetMap {
	const records = 1_000_000
	tx := NewOffsetMap(MapMeta{Topic: "bench"}, 0, 0)
	for src := int64(0); src+10 <= records; src += 10 {
		if err := tx.add(src, tx.TargetEnd(), 9); err != nil {
			tb.Fatal(err)
		}
		tx.advance(src + 10) // the marker
	}
	cp := NewOffsetMap(MapMeta{Topic: "bench"}, 0, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	for src := int64(0); src < records; src++ {
		if rng.Float64() < 0.3 {
			if err := cp.add(src, cp.TargetEnd(), 1); err != nil {
				tb.Fatal(err)
			}
		}
	}
	cp.advance(records)
	return map[string]*OffsetMap{"transactional": tx, "compacted": cp}
}

// BenchmarkOffsetMap reports memory and file bytes per gap of each map and
// measures both lookups at pseudo-random offsets.
func BenchmarkOffsetMap(b *testing.B) {
	for _, name := range []string{"transactional", "compacted"} {
		m := benchMaps(b)[name]
		gaps := float64(m.Runs())
		var buf bytes.Buffer
		_ = m.Save(&buf)
		srcEnd, tgtEnd := m.SourceEnd(), m.TargetEnd()
		b.Run(name+"/ToTarget", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				m.ToTarget(int64(i*7919) % srcEnd)
			}
			b.ReportMetric(float64(m.MemoryBytes())/gaps, "mem-B/gap")
			b.ReportMetric(float64(buf.Len())/gaps, "file-B/gap")
		})
		b.Run(name+"/ToSource", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				m.ToSource(int64(i*7919) % tgtEnd)
			}
			b.ReportMetric(float64(m.MemoryBytes())/gaps, "mem-B/gap")
		})
	}
}
