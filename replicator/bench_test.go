package replicator

import (
	"bytes"
	"testing"
)

// BenchmarkOffsetMapTransactional builds the map of a partition of 1M
// records where every 10th offset is a transaction marker (100k gaps), and
// reports memory and file bytes per gap, then measures ToTarget.
func BenchmarkOffsetMapTransactional(b *testing.B) {
	const records, every = 1_000_000, 10
	m := NewOffsetMap(MapMeta{Topic: "bench"}, 0, 0)
	var src int64
	for copied := int64(0); copied < records; copied += every - 1 {
		if err := m.add(src, m.TargetEnd(), every-1); err != nil {
			b.Fatal(err)
		}
		src += every
		m.advance(src) // the marker
	}
	gaps := float64(m.Runs())
	var buf bytes.Buffer
	_ = m.Save(&buf)
	for i := 0; b.Loop(); i++ {
		m.ToTarget(int64(i*7919) % src)
	}
	// Reported after the loop: b.Loop resets the timer and extra metrics.
	b.ReportMetric(float64(len(m.runs)*16)/gaps, "mem-B/gap")
	b.ReportMetric(float64(m.MemoryBytes())/gaps, "mem-cap-B/gap")
	b.ReportMetric(float64(buf.Len())/gaps, "file-B/gap")
}
