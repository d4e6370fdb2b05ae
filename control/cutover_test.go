package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
)

// The cutover controller against fakes of its ports. Every fake appends
// what it is asked to do to one trace, so a test reads the order of the
// controller's side effects. A fake's "block" hook, when set, runs inside
// the call and may wait for the test (blocked reports that it waits).

type cutRig struct {
	t      *testing.T
	mu     sync.Mutex
	trace  []string
	home   string
	copies map[string]bool // cluster copied into -> copying the topic
	held   bool
	marker *cutoverMarker
	// markers replaces the fake marker store when set.
	markers markerStore
	// ends replaces the fake end-offset lookups when set.
	ends endOffsets

	// failures by port call ("idle", "ends", "copied", "seal", "marker")
	fail map[string]error
	// block runs inside WaitCopied (ctx is the attempt's).
	block   func(ctx context.Context) error
	blocked chan struct{}
	// copiedThrough replaces the copy's progress (default: all copied).
	copiedThrough func(partition int32) int64
	// urges counts Urge calls; urgent, those not released yet (and
	// urgentAtSeal when SealFlip was called).
	urges, urgent, urgentAtSeal int

	sink    *routerLog
	cuts    *cutovers
	cancel  context.CancelFunc
	table   *routing.Table
	maxHold time.Duration
}

type routerLog struct {
	mu sync.Mutex
	r  proxy.Router
}

func (l *routerLog) SetRouter(r proxy.Router) { l.mu.Lock(); l.r = r; l.mu.Unlock() }
func (l *routerLog) produce(topic string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.ProduceCluster(topic, "")
}

func newCutRig(t *testing.T) *cutRig {
	r := &cutRig{t: t, home: proxy.Source, copies: map[string]bool{proxy.Target: true}, fail: map[string]error{},
		blocked: make(chan struct{}, 16), sink: &routerLog{}, maxHold: 30 * time.Second}
	return r
}

// start builds the controller over the fakes (markers loaded now).
func (r *cutRig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	var markers markerStore = (*fakeMarkers)(r)
	if r.markers != nil {
		markers = r.markers
	}
	var ends endOffsets = (*fakeEnds)(r)
	if r.ends != nil {
		ends = r.ends
	}
	c, err := newCutovers(ctx, hclog.NewNullLogger(), (*fakeGate)(r), ends, (*fakeCopies)(r), markers, newOverlay(r.sink), prometheus.NewRegistry())
	if err != nil {
		r.t.Fatal(err)
	}
	r.cuts = c
	r.t.Cleanup(func() { cancel(); c.wait() })
}

func (r *cutRig) note(format string, args ...any) {
	r.mu.Lock()
	r.trace = append(r.trace, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *cutRig) failure(call string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fail[call]
}

// reload applies a config that routes "orders" to cluster.
func (r *cutRig) reload(cluster string) {
	r.t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, "listen: 127.0.0.1:1\nstate_dir: /nonexistent\nclusters:\n  source: {bootstrap: [127.0.0.1:2]}\n  target: {bootstrap: [127.0.0.1:3]}\nroutes:\n  default: source\n  topics:\n    orders: %s\nreplicate: [orders]\nreplication: {reverse_after_cutover: true}\ncutover: {max_hold: %s}\n", cluster, r.maxHold))
	if err != nil {
		r.t.Fatal(err)
	}
	next, err := routing.NewTable(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cuts.apply(cfg, r.table, next, []string{"orders"})
	r.table = next
}

// settle waits until no attempt runs, including attempts a finished one
// started.
func (r *cutRig) settle() { r.cuts.wait() }

func (r *cutRig) status() CutoverStatus {
	for _, s := range r.cuts.list() {
		if s.Topic == "orders" {
			return s
		}
	}
	return CutoverStatus{}
}

func (r *cutRig) traceString() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.trace, "; ")
}

func (r *cutRig) resetTrace() {
	r.mu.Lock()
	r.trace = nil
	r.mu.Unlock()
}

type fakeGate cutRig

func (g *fakeGate) HoldProduce(topic string) {
	r := (*cutRig)(g)
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
	r.note("hold %s", topic)
}

func (g *fakeGate) ReleaseProduce(topic string) {
	r := (*cutRig)(g)
	r.mu.Lock()
	r.held = false
	r.mu.Unlock()
	// The held requests go wherever the router says now.
	r.note("release %s to %s", topic, r.sink.produce(topic))
}

func (g *fakeGate) HeldCount(string) int { return 0 }

func (g *fakeGate) WaitProduceIdle(ctx context.Context, topic string) error {
	r := (*cutRig)(g)
	r.note("wait idle")
	return r.failure("idle")
}

func (g *fakeGate) WaitTxnIdle(ctx context.Context, topic string) error { return nil }

func (g *fakeGate) CapFetch(topic, from string, ends map[int32]int64) {
	(*cutRig)(g).note("cap reads of %s on %s at %v", topic, from, ends)
}

func (g *fakeGate) KeepOldHomeProducers(topic, from string, parts map[int32][]proxy.ProducerState) error {
	return nil
}

type fakeEnds cutRig

func (e *fakeEnds) Producers(ctx context.Context, cluster, topic string) (map[int32][]proxy.ProducerState, error) {
	return map[int32][]proxy.ProducerState{0: nil, 1: nil}, nil
}

func (e *fakeEnds) Ends(ctx context.Context, cluster, topic string, stable bool) (map[int32]int64, error) {
	r := (*cutRig)(e)
	if err := r.failure("ends"); err != nil {
		return nil, err
	}
	return map[int32]int64{0: 10, 1: 20}, nil
}

type fakeCopies cutRig

func (f *fakeCopies) Home(string) string {
	r := (*cutRig)(f)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.home
}

func (f *fakeCopies) CopiesInto(_, to string) bool {
	r := (*cutRig)(f)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.copies[to]
}

func (f *fakeCopies) WaitCopied(ctx context.Context, topic, to string, ends map[int32]int64) error {
	r := (*cutRig)(f)
	r.note("wait copied into %s to %v", to, ends)
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		r.blocked <- struct{}{}
		if err := block(ctx); err != nil {
			return err
		}
	}
	return r.failure("copied")
}

func (f *fakeCopies) Urge(topic, to string) func() {
	r := (*cutRig)(f)
	r.mu.Lock()
	r.urges++
	r.urgent++
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.urgent--
			r.mu.Unlock()
		})
	}
}

// urgency is the rig's Urge calls and those still held.
func (r *cutRig) urgency() (urges, urgent int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.urges, r.urgent
}

// CopiedThrough is the rig's copiedThrough hook, or a copy that has read
// everything.
func (f *fakeCopies) CopiedThrough(topic, to string, p int32) int64 {
	r := (*cutRig)(f)
	r.mu.Lock()
	copied := r.copiedThrough
	r.mu.Unlock()
	if copied == nil {
		return math.MaxInt64
	}
	return copied(p)
}

func (f *fakeCopies) SealFlip(ctx context.Context, topic, from, to string, ends map[int32]int64) (*flipPlan, error) {
	r := (*cutRig)(f)
	r.mu.Lock()
	r.urgentAtSeal = r.urgent
	r.copies[to] = false // the copy stops before anything can fail
	r.mu.Unlock()
	r.note("seal %s->%s", from, to)
	if err := r.failure("seal"); err != nil {
		return nil, err
	}
	return &flipPlan{topic: topic, from: from, to: to, sealed: map[int32]*replicator.FlippedMap{0: nil, 1: nil}}, nil
}

func (f *fakeCopies) SaveCopyBack(pl *flipPlan) error {
	(*cutRig)(f).note("save copy back into %s", pl.from)
	return nil
}

func (f *fakeCopies) AdoptFlip(pl *flipPlan) {
	r := (*cutRig)(f)
	r.mu.Lock()
	r.home = pl.to
	r.mu.Unlock()
	r.note("home %s", pl.to)
}

// PlanPoints and SaveFlip serve coordinated flips only (coordlocal.go).
func (f *fakeCopies) PlanPoints(topic, from, to string, points map[int32]flipPoint, left map[int32]*replicator.FlippedMap) (*flipPlan, error) {
	return &flipPlan{topic: topic, from: from, to: to}, nil
}

func (f *fakeCopies) SaveFlip(pl *flipPlan, skip map[int32]bool) error { return nil }

func (f *fakeCopies) StartCopy(topic, to string) error {
	r := (*cutRig)(f)
	r.mu.Lock()
	r.copies[to] = true
	r.mu.Unlock()
	r.note("copy into %s", to)
	return nil
}

func (f *fakeCopies) LoadHome(topic, cluster string, partitions int32) error {
	r := (*cutRig)(f)
	r.mu.Lock()
	r.home = cluster
	r.mu.Unlock()
	return nil
}

type fakeMarkers cutRig

func (m *fakeMarkers) Load() ([]cutoverMarker, error) {
	r := (*cutRig)(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.marker == nil {
		return nil, nil
	}
	return []cutoverMarker{*r.marker}, nil
}

func (m *fakeMarkers) Save(mk cutoverMarker) error {
	r := (*cutRig)(m)
	if err := r.failure("marker"); err != nil {
		return err
	}
	r.mu.Lock()
	r.marker = &mk
	r.mu.Unlock()
	r.note("marker %s", mk.Home)
	return nil
}

// A cutover to the target and a rollback run every action routing.Step
// returns, in its order: the route flips before the held requests are
// released (so they reach the new home), and the copy back starts last.
func TestCutoverFlipAndRollbackExecuteStepActionsInOrder(t *testing.T) {
	r := newCutRig(t)
	r.start()
	r.reload(proxy.Source)
	if got := r.traceString(); got != "" {
		t.Fatalf("a topic on its home did something: %s", got)
	}
	r.reload(proxy.Target)
	r.settle()
	want := "hold orders; wait idle; cap reads of orders on source at map[0:10 1:20]; wait copied into target to map[0:10 1:20]; seal source->target; save copy back into source; marker target; home target; release orders to target; copy into source"
	if got := r.traceString(); got != want {
		t.Fatalf("flip to the target:\n got %s\nwant %s", got, want)
	}
	if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Target {
		t.Fatalf("status after the flip: %+v", st)
	}
	if got := r.sink.produce("orders"); got != proxy.Target {
		t.Fatalf("produce routed to %s after the flip", got)
	}

	r.resetTrace()
	r.reload(proxy.Source)
	r.settle()
	want = "hold orders; wait idle; cap reads of orders on target at map[0:10 1:20]; wait copied into source to map[0:10 1:20]; seal target->source; save copy back into target; marker source; home source; release orders to source; copy into target"
	if got := r.traceString(); got != want {
		t.Fatalf("rollback:\n got %s\nwant %s", got, want)
	}
	if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Source {
		t.Fatalf("status after the rollback: %+v", st)
	}

	// A restart reads the marker: the topic's home is the source, and an
	// unchanged config starts nothing.
	r2 := newCutRig(t)
	r2.marker = r.marker
	r2.start()
	r2.reload(proxy.Source)
	r2.settle()
	if got := r2.traceString(); got != "" {
		t.Fatalf("a restart with the config matching the marker did something: %s", got)
	}
	if st := r2.status(); st.State != routing.Flipped.String() || st.Home != proxy.Source {
		t.Fatalf("status after a restart: %+v", st)
	}
}

// A flip urges the copy (its own lane, replicator.Urge) from before the
// hold until the drain has every record: held while WaitCopied waits,
// released before the seal stops the copy.
func TestCutoverUrgesTheCopyUntilCopied(t *testing.T) {
	r := newCutRig(t)
	urgentInWait := make(chan int, 1)
	r.block = func(ctx context.Context) error {
		_, urgent := r.urgency()
		urgentInWait <- urgent
		return nil
	}
	r.start()
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	<-r.blocked
	r.settle()
	if st := r.status(); st.State != routing.Flipped.String() {
		t.Fatalf("status: %+v", st)
	}
	if got := <-urgentInWait; got != 1 {
		t.Fatalf("%d urges held while the drain waited for the copy, want 1", got)
	}
	urges, urgent := r.urgency()
	r.mu.Lock()
	atSeal := r.urgentAtSeal
	r.mu.Unlock()
	if urges != 1 || urgent != 0 || atSeal != 0 {
		t.Fatalf("urges %d, held after the flip %d, held at the seal %d; want 1, 0, 0", urges, urgent, atSeal)
	}
}

// An abort at any phase releases the held requests to the home, keeps the
// route there and leaves the copy running; the next reload retries.
func TestCutoverAbortAtEachPhase(t *testing.T) {
	for _, tc := range []struct {
		phase, fail string
		want        string
	}{
		{"holding: in-flight produce", "idle",
			"hold orders; wait idle; release orders to source"},
		{"holding: end offsets", "ends",
			"hold orders; wait idle; release orders to source"},
		{"draining: copy", "copied",
			"hold orders; wait idle; cap reads of orders on source at map[0:10 1:20]; wait copied into target to map[0:10 1:20]; release orders to source"},
		{"draining: seal", "seal",
			"hold orders; wait idle; cap reads of orders on source at map[0:10 1:20]; wait copied into target to map[0:10 1:20]; seal source->target; copy into target; release orders to source"},
		{"draining: marker", "marker",
			"hold orders; wait idle; cap reads of orders on source at map[0:10 1:20]; wait copied into target to map[0:10 1:20]; seal source->target; save copy back into source; copy into target; release orders to source"},
	} {
		t.Run(tc.phase, func(t *testing.T) {
			r := newCutRig(t)
			r.fail[tc.fail] = errors.New("injected " + tc.fail)
			r.start()
			r.reload(proxy.Source)
			r.reload(proxy.Target)
			r.settle()
			if got := r.traceString(); got != tc.want {
				t.Fatalf("\n got %s\nwant %s", got, tc.want)
			}
			st := r.status()
			if st.State != routing.Aborted.String() || !strings.Contains(st.Reason, "injected "+tc.fail) || st.Home != proxy.Source {
				t.Fatalf("status: %+v", st)
			}
			if urges, urgent := r.urgency(); urges != 1 || urgent != 0 {
				t.Fatalf("the aborted attempt urged the copy %d times and left %d urges held, want 1 and 0", urges, urgent)
			}
			if got := r.sink.produce("orders"); got != proxy.Source {
				t.Fatalf("produce routed to %s after an abort", got)
			}
			if !r.copies[proxy.Target] || r.held || r.marker != nil {
				t.Fatalf("after the abort: copying into the target %v, held %v, marker %+v", r.copies[proxy.Target], r.held, r.marker)
			}

			// Revert (config and traffic agree again), then retry.
			r.reload(proxy.Source)
			if st := r.status(); st.Topic != "" {
				t.Fatalf("after the revert the topic still has a cutover: %+v", st)
			}
			delete(r.fail, tc.fail)
			r.reload(proxy.Target)
			r.settle()
			if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Target {
				t.Fatalf("retry: %+v", st)
			}
		})
	}
}

// A hold that outlasts max_hold aborts on Step's Tick, and Close aborts a
// running attempt and waits for it: both release the held requests home.
func TestCutoverMaxHoldAndClose(t *testing.T) {
	r := newCutRig(t)
	r.maxHold = 50 * time.Millisecond
	r.block = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	r.start()
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	r.settle()
	st := r.status()
	if st.State != routing.Aborted.String() || !strings.Contains(st.Reason, "max_hold") {
		t.Fatalf("after max_hold: %+v", st)
	}
	if got := r.sink.produce("orders"); got != proxy.Source || r.held {
		t.Fatalf("after max_hold produce goes to %s, held %v", got, r.held)
	}

	r2 := newCutRig(t)
	r2.block = r.block
	r2.start()
	r2.reload(proxy.Source)
	r2.reload(proxy.Target)
	<-r2.blocked
	r2.cancel() // what Controller.Close does first
	r2.settle()
	if st := r2.status(); st.State != routing.Aborted.String() || r2.held || r2.sink.produce("orders") != proxy.Source {
		t.Fatalf("after close: %+v, held %v", st, r2.held)
	}
}

// A reload that routes the topic back to its home while the cutover drains
// cancels the attempt; one that arrives after the flip is recorded starts
// the rollback once the flip is done. Either way the topic ends where the
// config says (it used to end pinned to the target while the config said
// source: the reload was ignored for a topic with a running attempt).
func TestCutoverReloadMidCutoverEndsWhereTheConfigSays(t *testing.T) {
	t.Run("revert while draining", func(t *testing.T) {
		r := newCutRig(t)
		release := make(chan struct{})
		r.block = func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-release:
				// The reload below cancels before release closes; a select
				// with both ready picks at random, so cancellation is
				// checked first, as a real wait would have returned on it.
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				return nil
			}
		}
		r.start()
		r.reload(proxy.Source)
		r.reload(proxy.Target)
		<-r.blocked
		r.reload(proxy.Source)
		close(release)
		r.settle()
		if got := r.sink.produce("orders"); got != proxy.Source {
			t.Fatalf("produce routed to %s, config says source; trace %s", got, r.traceString())
		}
		if r.home != proxy.Source || r.marker != nil || r.held {
			t.Fatalf("home %s, marker %+v, held %v; trace %s", r.home, r.marker, r.held, r.traceString())
		}
		if st := r.status(); st.Topic != "" {
			t.Fatalf("the reverted topic keeps a cutover: %+v", st)
		}
	})
	t.Run("revert after the point of no return", func(t *testing.T) {
		r := newCutRig(t)
		release := make(chan struct{})
		// The revert arrives while the copy is waited for, but the wait
		// ends (copied) regardless: the flip is recorded.
		r.block = func(ctx context.Context) error { <-release; return nil }
		r.start()
		r.reload(proxy.Source)
		r.reload(proxy.Target)
		<-r.blocked
		r.mu.Lock()
		r.block = nil
		r.mu.Unlock()
		r.reload(proxy.Source)
		close(release)
		r.settle()
		if got := r.sink.produce("orders"); got != proxy.Source {
			t.Fatalf("produce routed to %s, config says source; trace %s", got, r.traceString())
		}
		if r.home != proxy.Source || r.marker == nil || r.marker.Home != proxy.Source {
			t.Fatalf("home %s, marker %+v; trace %s", r.home, r.marker, r.traceString())
		}
		if !strings.Contains(r.traceString(), "seal target->source") {
			t.Fatalf("no rollback flip: %s", r.traceString())
		}
	})
}

// Reloads during an attempt that end with the config still asking for the
// move: the topic ends flipped, with one flip or, when the route went back
// and forth, a retry after the cancelled attempt.
func TestCutoverReloadMidCutoverThatKeepsTheMove(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reloads []string
		flips   int
	}{
		{"an unrelated reload", []string{proxy.Target}, 1},
		{"back and forth", []string{proxy.Source, proxy.Target}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newCutRig(t)
			release := make(chan struct{})
			first := true
			r.block = func(ctx context.Context) error {
				if !first {
					return nil
				}
				first = false
				select {
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-release:
					return nil
				}
			}
			r.start()
			r.reload(proxy.Source)
			r.reload(proxy.Target)
			<-r.blocked
			for _, to := range tc.reloads {
				r.reload(to)
			}
			close(release)
			r.settle()
			if got := r.sink.produce("orders"); got != proxy.Target {
				t.Fatalf("produce routed to %s, config says target; trace %s", got, r.traceString())
			}
			if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Target {
				t.Fatalf("status %+v; trace %s", st, r.traceString())
			}
			if n := strings.Count(r.traceString(), "marker target"); n != tc.flips {
				t.Fatalf("%d flips recorded, want %d; trace %s", n, tc.flips, r.traceString())
			}
		})
	}
}

// The marker on disk is the flip's commit point. When state_dir cannot take
// it (here the cutover directory is replaced by a regular file, which fails
// the write for every user, root included, as a full or read-only disk
// would), the cutover aborts naming the marker, the held requests go back to
// the source, the copy runs on, no marker exists, and the retry once the
// disk is writable again flips and records it.
func TestCutoverAbortsWhenTheMarkerCannotBeWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cutover")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := newCutRig(t)
	r.markers = &fileMarkers{dir: dir}
	r.start()
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	r.settle()
	st := r.status()
	if st.State != routing.Aborted.String() || st.Home != proxy.Source || !strings.Contains(st.Reason, "marker cannot be written") || !strings.Contains(st.Reason, dir) {
		t.Fatalf("status: %+v", st)
	}
	if got := r.sink.produce("orders"); got != proxy.Source {
		t.Fatalf("produce routed to %s after the abort", got)
	}
	if !r.copies[proxy.Target] || r.held || r.home != proxy.Source {
		t.Fatalf("after the abort: copying into the target %v, held %v, home %s", r.copies[proxy.Target], r.held, r.home)
	}

	// The disk is writable again: revert, retry, and the marker is there.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	r.settle()
	if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Target {
		t.Fatalf("retry: %+v", st)
	}
	ms, err := (&fileMarkers{dir: dir}).Load()
	if err != nil || len(ms) != 1 || ms[0].Topic != "orders" || ms[0].Home != proxy.Target {
		t.Fatalf("markers on disk after the retry: %+v, %v", ms, err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("cutover dir holds %d entries, want only the marker", len(es))
	}
}

// A copy that is behind when the route changes catches up before produce
// is held: the hold then waits only for what arrives while it holds. The
// approach is not counted against max_hold: here it takes longer than
// max_hold, and the flip still completes.
func TestCutoverLetsTheCopyCatchUpBeforeItHolds(t *testing.T) {
	r := newCutRig(t)
	r.maxHold = 100 * time.Millisecond
	caughtUp := make(chan struct{})
	r.copiedThrough = func(p int32) int64 {
		select {
		case <-caughtUp:
			return math.MaxInt64
		default:
			return 0 // behind the ends (10 and 20)
		}
	}
	r.block = func(ctx context.Context) error { return ctx.Err() } // the copy wait sees the hold's deadline
	r.start()
	r.reload(proxy.Source)
	r.reload(proxy.Target)
	time.Sleep(3 * r.maxHold) // longer than max_hold: an approach counted in it would abort
	r.mu.Lock()
	held := r.held
	r.mu.Unlock()
	if held || r.traceString() != "" {
		t.Fatalf("produce held (%v) or the flip went on (%s) while the copy was behind", held, r.traceString())
	}
	if st := r.status(); st.State == routing.Aborted.String() || st.HoldMillis != 0 || !strings.Contains(st.Progress, "not held yet") {
		t.Fatalf("status while the copy catches up (aborted, a hold counted, or no word of the approach): %+v", st)
	}
	close(caughtUp)
	r.settle()
	if st := r.status(); st.State != routing.Flipped.String() || st.Home != proxy.Target {
		t.Fatalf("after the copy caught up: %+v (trace %s)", st, r.traceString())
	}
	if !strings.HasPrefix(r.traceString(), "hold orders; wait idle") {
		t.Fatalf("the flip did not start with the hold once the copy caught up: %s", r.traceString())
	}
}
