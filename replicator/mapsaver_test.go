package replicator

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A trickle (one record per produce request, each copied as it arrives)
// makes the copy catch up at nearly every answer. Its map is saved at most
// once per catchUpSaveGap then, not once per batch, and the last catch-up
// still reaches the disk while the copy waits idle for more records.
func TestTrickleCopySavesItsMapAtMostOncePerGap(t *testing.T) {
	reg := prometheus.NewRegistry()
	// The idle long poll outlasts the wait below: the map on disk can only
	// catch up through the deferred save, not through a next answer.
	pp := startPair(t, []string{"t"}, 1, Options{Registerer: reg, FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: time.Minute})
	pp.waitParked(t, 1)
	saves := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "kproxy_replicator_offset_map_saves_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("no kproxy_replicator_offset_map_saves_total")
		return 0
	}
	before := saves()

	const n = 300
	start := time.Now()
	copied := int64(1)
	for i := 0; i < n; i++ {
		pp.produce(t, "t", 0, 1)
		copied++
		// Every record is copied before the next is written, so every
		// one is a catch-up of its own.
		pp.waitCopied(t, "t", 0, copied)
	}
	elapsed := time.Since(start)
	got := saves() - before
	// One save per gap at most, plus the first catch-up and a busy save
	// per mapSaveInterval (both at once at most) and the deferred one.
	limit := float64(elapsed/catchUpSaveGap) + float64(elapsed/mapSaveInterval) + 3
	t.Logf("%d catch-ups in %v: %.0f map saves (at most %.0f allowed)", n, elapsed.Round(time.Millisecond), got, limit)
	if got > limit {
		t.Errorf("%.0f map saves for %d catch-ups in %v: want at most %.0f (one per %v)", got, n, elapsed, limit, catchUpSaveGap)
	}
	if got == 0 {
		t.Errorf("no map save for %d copied records", n)
	}

	// The last records' map reaches the disk without a next answer.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		m, err := LoadMap(pp.r.opts.StateDir, "t", 0)
		if err == nil && m != nil && m.SourceEnd() == copied {
			break
		}
		if ctx.Err() != nil {
			end := int64(-1)
			if m != nil {
				end = m.SourceEnd()
			}
			t.Fatalf("the map on disk ends at %d (err %v), the copy at %d", end, err, copied)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
