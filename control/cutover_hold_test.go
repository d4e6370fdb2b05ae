package control

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

// What the hold no longer waits for: lookups learnt ahead of it, lookups
// that run together, and a marker that is one line of one journal.

// warmingEnds is the fake lookups with Warm, noted in the rig's trace.
type warmingEnds struct{ *fakeEnds }

func (w warmingEnds) Warm(_ context.Context, cluster string, topics []string) {
	(*cutRig)(w.fakeEnds).note("warm %s %v", cluster, topics)
}

// The partition leaders the hold's end-offset lookups need are learnt when
// the reload arrives, on both clusters, before produce is held.
func TestCutoverWarmsItsLookupsBeforeTheHold(t *testing.T) {
	r := newCutRig(t)
	r.ends = warmingEnds{(*fakeEnds)(r)}
	r.start()
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	r.settle()
	if st := r.status(); st.State != routing.Flipped.String() {
		t.Fatalf("status: %+v", st)
	}
	tr := r.traceString()
	hold := strings.Index(tr, "hold orders")
	for _, c := range []string{proxy.Source, proxy.Target} {
		w := strings.Index(tr, "warm "+c+" [orders]")
		if w < 0 || hold < 0 || w > hold {
			t.Fatalf("the %s's lookups were not warmed before the hold: %s", c, tr)
		}
	}
}

// pairedEnds answers a log-end lookup of the hold only while a stable-end
// lookup is in flight too, and the other way round: lookups made one after
// the other never finish. Lookups before the hold (the approach, which asks
// for log ends alone) are answered at once.
type pairedEnds struct {
	plain, stable         chan struct{}
	plainOnce, stableOnce sync.Once
	held                  func() bool
}

func (p *pairedEnds) Ends(ctx context.Context, cluster, topic string, stable bool) (map[int32]int64, error) {
	if !p.held() {
		return map[int32]int64{0: 10, 1: 20}, nil
	}
	mine, other, once := p.plain, p.stable, &p.plainOnce
	if stable {
		mine, other, once = p.stable, p.plain, &p.stableOnce
	}
	once.Do(func() { close(mine) })
	select {
	case <-other:
		return map[int32]int64{0: 10, 1: 20}, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("the other lookup never came: %w", ctx.Err())
	}
}

func (p *pairedEnds) Producers(context.Context, string, string) (map[int32][]proxy.ProducerState, error) {
	return map[int32][]proxy.ProducerState{0: nil, 1: nil}, nil
}

// The drain lists the log ends and the last stable offsets at once, so the
// hold waits for the slower of the two lookups, not their sum.
func TestDrainListsEndsAndStableEndsTogether(t *testing.T) {
	r := newCutRig(t)
	r.maxHold = 5 * time.Second
	r.ends = &pairedEnds{plain: make(chan struct{}), stable: make(chan struct{}), held: func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.held
	}}
	r.start()
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	r.settle()
	if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Target {
		t.Fatalf("status: %+v", st)
	}
}

// Flip markers are lines of one journal, the last line of a topic winning,
// after markers of earlier versions (<topic>.json). A torn last line (a
// crash mid-append) is forgiven and cut away, so the next flip's line does
// not follow it.
func TestFlipMarkersAreOneJournal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cutover")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "legacy.json"), []byte(`{"topic":"legacy","home":"target","partitions":3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &fileMarkers{dir: dir}
	for _, m := range []cutoverMarker{
		{Topic: "orders", Home: proxy.Target, Partitions: 2},
		{Topic: "payments", Home: proxy.Target, Partitions: 1},
		{Topic: "orders", Home: proxy.Source, Partitions: 2}, // rolled back
	} {
		if err := f.Save(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	homes := func() map[string]string {
		t.Helper()
		ms, err := (&fileMarkers{dir: dir}).Load()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, m := range ms {
			out[m.Topic] = m.Home
		}
		return out
	}
	if got := homes(); len(got) != 3 || got["orders"] != proxy.Source || got["payments"] != proxy.Target || got["legacy"] != proxy.Target {
		t.Fatalf("loaded homes %v", got)
	}
	if es, _ := os.ReadDir(dir); len(es) != 2 {
		t.Fatalf("cutover dir holds %d entries, want the journal and the legacy marker", len(es))
	}

	// A crash mid-append.
	jf, err := os.OpenFile(filepath.Join(dir, markerJournal), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jf.WriteString(`{"topic":"pay`); err != nil {
		t.Fatal(err)
	}
	jf.Close()
	f = &fileMarkers{dir: dir}
	if _, err := f.Load(); err != nil {
		t.Fatalf("a torn last line stopped the load: %v", err)
	}
	if err := f.Save(cutoverMarker{Topic: "payments", Home: proxy.Source, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := homes(); got["payments"] != proxy.Source || got["orders"] != proxy.Source {
		t.Fatalf("after a torn line and one more flip: %v", got)
	}
}
