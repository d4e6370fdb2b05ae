package control

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/test/hatest"
)

// flipRig is three instances of one virtual cluster copying a replicated
// topic, with the control cluster on the target (issue 14, coordinated
// cutovers).
type flipRig struct {
	t        *testing.T
	src, tgt *kfake.Cluster
	insts    []*Instance
	cfgs     []*config.Config
	addrs    []string
	closed   []bool
}

func newFlipRig(t *testing.T, n int, partitions int32) *flipRig {
	t.Helper()
	r := &flipRig{t: t,
		src: newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(partitions, "orders")),
		tgt: newKfake(t, kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))}
	for i := range n {
		listen, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(fmt.Appendf(nil, "listen: %s\nstate_dir: %s\ninstance:\n  id: kp-%d\ncontrol:\n  session_timeout: 6s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\nreplicate: [orders]\nreplication: { reverse_after_cutover: true }\ncutover: { max_hold: 20s }\n",
			listen, t.TempDir(), i, r.src.ListenAddrs()[0], r.tgt.ListenAddrs()[0]))
		if err != nil {
			t.Fatal(err)
		}
		log := hclog.NewNullLogger()
		if os.Getenv("KPROXY_TEST_LOG") != "" {
			log = hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("kp-%d", i), Level: hclog.Info, Output: os.Stderr})
		}
		inst, err := Start(context.Background(), cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		r.insts, r.cfgs, r.addrs, r.closed = append(r.insts, inst), append(r.cfgs, cfg), append(r.addrs, listen), append(r.closed, false)
	}
	t.Cleanup(func() {
		for i := range r.insts {
			r.close(i)
		}
	})
	return r
}

func (r *flipRig) close(i int) {
	if !r.closed[i] {
		r.closed[i] = true
		r.insts[i].Close()
	}
}

// formed waits until every open instance lists n members.
func (r *flipRig) formed(ctx context.Context, n int) {
	r.t.Helper()
	for {
		ok := true
		for i, inst := range r.insts {
			if r.closed[i] {
				continue
			}
			st := inst.insts.status()
			ok = ok && st.Formed && len(st.Members) == n
		}
		if ok {
			return
		}
		if ctx.Err() != nil {
			r.t.Fatalf("the instances never agreed on %d members", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routed is cfg with orders' produce and fetch on cluster, as a reload of
// the edited file would apply it.
func routed(cfg *config.Config, cluster config.Cluster) *config.Config {
	next := *cfg
	next.Routes.Topics = map[string]config.TopicRoute{"orders": {Route: cluster, Produce: cluster, Fetch: cluster}}
	return &next
}

// cutoverOf is instance i's cutover entry of orders (zero when none).
func (r *flipRig) cutoverOf(i int) CutoverStatus {
	for _, c := range r.insts[i].Cutovers() {
		if c.Topic == "orders" {
			return c
		}
	}
	return CutoverStatus{}
}

// waitHome waits until every open instance serves orders from home with
// no flip running.
func (r *flipRig) waitHome(ctx context.Context, home string) {
	r.t.Helper()
	for {
		ok := true
		var states []string
		for i := range r.insts {
			if r.closed[i] {
				continue
			}
			c := r.cutoverOf(i)
			h := r.insts[i].ctrl.repl.home("orders")
			states = append(states, fmt.Sprintf("kp-%d: %s %s home %s", i, c.State, c.Reason, h))
			ok = ok && h == home && c.State != "holding" && c.State != "draining"
		}
		if ok {
			return
		}
		if ctx.Err() != nil {
			r.t.Fatalf("orders never came home to the %s everywhere: %v", home, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// flipAll applies next(i) to every instance, the driver (kp-0) last, and
// waits until orders is home on home everywhere. A flip the driver aborts
// (on a loaded machine, under -race, the membership group can drop an
// instance for a moment: the driver aborts for the view change, as it
// must) is asked for again by the same reload, as an operator would; the
// aborts are logged.
func (r *flipRig) flipAll(ctx context.Context, home string, order []int, next func(i int) *config.Config) {
	r.t.Helper()
	for attempt := 0; ; attempt++ {
		for _, i := range order {
			if err := r.insts[i].Apply(next(i)); err != nil {
				r.t.Fatal(err)
			}
		}
		for {
			done, aborted := true, false
			for i := range r.insts {
				if r.closed[i] {
					continue
				}
				c := r.cutoverOf(i)
				done = done && r.insts[i].ctrl.repl.home("orders") == home && c.State == "flipped"
				aborted = aborted || c.State == "aborted"
			}
			if done {
				return
			}
			if aborted && attempt < 5 {
				r.t.Logf("the flip to the %s aborted (%s); asking again", home, r.cutoverOf(0).Reason)
				break
			}
			if ctx.Err() != nil {
				r.waitHome(ctx, home) // fails, naming each instance's state
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// load produces to every partition through the instances until stop.
func load(ctx context.Context, tr *hatest.Traffic) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			tr.Produce(ctx, 1)
		}
	}()
	return func() { close(done); wg.Wait() }
}

// readAll reads orders' committed records, by partition, from a cluster
// until each holds want[p] records (and a moment more, for any extra).
func readAll(t *testing.T, ctx context.Context, c *kfake.Cluster, partitions int32, want map[int32]int) map[int32][]string {
	t.Helper()
	parts := map[int32]kgo.Offset{}
	for p := range partitions {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": parts}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[int32][]string{}
	enough := func() bool {
		for p, n := range want {
			if len(got[p]) < n {
				return false
			}
		}
		return true
	}
	for !enough() && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], string(r.Value)) })
		cancel()
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], string(r.Value)) })
	return got
}

// inSequence checks that each partition's log holds p<p>/0, /1, ... once
// each, in order: a record written on both clusters, or on the old home
// after a flip, shows as a duplicate or a value out of sequence.
func inSequence(logs map[int32][]string, want map[int32]int) error {
	for p, n := range want {
		l := logs[p]
		if len(l) != n {
			return fmt.Errorf("partition %d holds %d records, want %d", p, len(l), n)
		}
		for i, v := range l {
			if v != fmt.Sprintf("p%d/%d", p, i) {
				return fmt.Errorf("partition %d offset %d holds %q, want p%d/%d", p, i, v, p, i)
			}
		}
	}
	return nil
}

// startFlipTraffic forms three instances over a topic of partitions and
// has 20 records produced through them and read back: the traffic the
// coordinated-flip tests flip under. Everything ends with the test. opts
// go to the traffic's clients (hatest.NewTraffic).
func startFlipTraffic(t *testing.T, partitions int32, opts ...kgo.Opt) (*flipRig, context.Context, *hatest.Traffic) {
	t.Helper()
	r := newFlipRig(t, 3, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	r.formed(ctx, 3)
	tr, err := hatest.NewTraffic(r.addrs, "orders", partitions, "g", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	tr.Produce(ctx, 20)
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	return r, ctx, tr
}

// settleAndCheck lets the load run 300 ms more, stops it, waits until
// every acknowledged record was read, fails the test on the checker's
// verdict, and returns how many records each partition got (what each
// cluster's log must hold in sequence).
func settleAndCheck(t *testing.T, ctx context.Context, tr *hatest.Traffic, stop func(), partitions int) map[int32]int {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	stop()
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	verdict, err := tr.Check()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(verdict)
	want := map[int32]int{}
	for p := range int32(partitions) {
		want[p] = tr.ProducedTo(p)
	}
	return want
}

// Issue 14: three instances flip a replicated topic together through the
// control topic and roll it back, under produce load through all three.
// The instances that see the route change before the driver do not flip
// on their own; every acknowledged record is read once and in order
// (test/checker through hatest), and each cluster's log holds every record
// once, in sequence: no record reached the old home after a flip (the
// topic never took produce on both clusters).
func TestThreeInstancesFlipAReplicatedTopicTogetherAndBack(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startFlipTraffic(t, partitions)

	stop := load(ctx, tr)
	// The two that are not the driver (kp-0, the lowest id) see the
	// edit first: they must neither flip nor hold on their own.
	for _, i := range []int{2, 1} {
		if err := r.insts[i].Apply(routed(r.cfgs[i], config.Target)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, i := range []int{1, 2} {
		if c := r.cutoverOf(i); c.State == "flipped" || c.State == "holding" || c.State == "draining" || r.insts[i].ctrl.repl.home("orders") != "source" {
			t.Fatalf("kp-%d moved on its own before the driver saw the edit: %+v", i, c)
		}
	}
	r.flipAll(ctx, "target", []int{0}, func(i int) *config.Config { return routed(r.cfgs[i], config.Target) })
	for i := range r.insts {
		if c := r.cutoverOf(i); c.State != "flipped" {
			t.Fatalf("kp-%d: %+v, want flipped", i, c)
		}
	}
	time.Sleep(300 * time.Millisecond) // load on the new home
	stop()
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}

	// Rollback: the same flip back, again with the driver last.
	stop = load(ctx, tr)
	r.flipAll(ctx, "source", []int{1, 2, 0}, func(i int) *config.Config { return r.cfgs[i] })
	want := settleAndCheck(t, ctx, tr, stop, partitions)
	// The source holds what was produced there and what the copy back
	// brought from the target while it was the home; the target the copy
	// and what was produced there. Each once, in order.
	if err := inSequence(readAll(t, ctx, r.src, partitions, want), want); err != nil {
		t.Fatalf("source: %v", err)
	}
	if err := inSequence(readAll(t, ctx, r.tgt, partitions, want), want); err != nil {
		t.Fatalf("target: %v", err)
	}
	for i := range r.insts {
		var outcomes []string
		for _, h := range r.insts[i].ctrl.cuts.historyList() {
			outcomes = append(outcomes, h.Outcome)
		}
		// One flip and one rollback; aborted attempts (logged above) may
		// come before either.
		if o := strings.ReplaceAll(strings.Join(outcomes, ","), "aborted,", ""); o != "flipped,flipped" {
			t.Fatalf("kp-%d flip history %v, want one flip and one rollback", i, outcomes)
		}
	}
}

// Issue 14: an instance that leaves while a coordinated flip holds aborts
// the flip everywhere: the others release their held requests on the home,
// the topic stays there, and nothing is lost or written twice.
func TestCoordinatedFlipAbortsWhenAnInstanceLeavesMidHold(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startFlipTraffic(t, partitions)
	// kp-2 never gets ready: its drain waits until it is closed.
	entered := make(chan struct{})
	var once sync.Once
	r.insts[2].ctrl.cuts.prepareHook = func(ctx context.Context) error {
		once.Do(func() { close(entered) })
		<-ctx.Done()
		return ctx.Err()
	}
	stop := load(ctx, tr)
	r.routeToTargetUntil(ctx, []int{0, 1, 2}, entered)
	for _, i := range []int{0, 1} {
		for r.cutoverOf(i).State != "holding" && r.cutoverOf(i).State != "draining" {
			if ctx.Err() != nil {
				t.Fatalf("kp-%d never held: %+v", i, r.cutoverOf(i))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	r.close(2)
	r.formed(ctx, 2)
	r.waitHome(ctx, "source")
	for _, i := range []int{0, 1} {
		// Aborted for the instance that left, not at max_hold (20 s).
		if c := r.cutoverOf(i); c.State != "aborted" || !strings.Contains(r.insts[i].ctrl.cuts.historyList()[0].Reason+c.Reason, "aborted") {
			t.Fatalf("kp-%d: %+v, want aborted", i, c)
		}
		if h := r.insts[i].ctrl.cuts.historyList()[0]; h.HoldMillis >= 20_000 {
			t.Fatalf("kp-%d held %d ms: the abort waited for max_hold, not for the instance leaving", i, h.HoldMillis)
		}
	}
	want := settleAndCheck(t, ctx, tr, stop, partitions)
	if err := inSequence(readAll(t, ctx, r.src, partitions, want), want); err != nil {
		t.Fatalf("source: %v", err)
	}
}

// restart starts instance i again on its config (its listener and
// state_dir) with cfg's routes, as a pod restarted with the edited
// ConfigMap.
// routeToTargetUntil applies a config routing the topic to the target on
// the instances in order, then waits until entered says the flip reached
// the drain the test holds.
func (r *flipRig) routeToTargetUntil(ctx context.Context, order []int, entered <-chan struct{}) {
	r.t.Helper()
	for _, i := range order {
		if err := r.insts[i].Apply(routed(r.cfgs[i], config.Target)); err != nil {
			r.t.Fatal(err)
		}
	}
	select {
	case <-entered:
	case <-ctx.Done():
		r.t.Fatal("the flip never reached kp-2's drain")
	}
}

func (r *flipRig) restart(i int, cfg *config.Config) {
	r.t.Helper()
	log := hclog.NewNullLogger()
	if os.Getenv("KPROXY_TEST_LOG") != "" {
		log = hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("kp-%d", i), Level: hclog.Info, Output: os.Stderr})
	}
	inst, err := Start(context.Background(), cfg, log)
	if err != nil {
		r.t.Fatal(err)
	}
	r.insts[i], r.closed[i] = inst, false
}

// mapsEverywhere fails the test unless instance i holds a sealed map of
// orders on home for every partition: whichever partition it leads after
// a membership change, it translates the partition's offsets.
func (r *flipRig) mapsEverywhere(i int, home string, partitions int32) {
	r.t.Helper()
	rp := r.insts[i].ctrl.repl
	rp.mu.Lock()
	defer rp.mu.Unlock()
	h := rp.homes["orders"]
	if h == nil || h.cluster != home {
		r.t.Fatalf("kp-%d: orders' home %+v, want the %s", i, h, home)
	}
	for p := range partitions {
		if h.maps[p] == nil {
			r.t.Fatalf("kp-%d has no sealed map of orders/%d on the %s (it holds %d of %d)", i, p, home, len(h.maps), partitions)
		}
	}
}

// Issue 14: a partition whose leader changes after a coordinated flip is
// served by its new leader with the sealed map the old leader made: each
// instance builds every partition's map from the points in the control
// topic. Without them the new leader has no map for the partition it took
// over, and its consumers stop there.
func TestCoordinatedFlipMapsFollowPartitionsToTheirNextLeader(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startFlipTraffic(t, partitions)
	stop := load(ctx, tr)
	r.flipAll(ctx, "target", []int{1, 2, 0}, func(i int) *config.Config { return routed(r.cfgs[i], config.Target) })
	for i := range r.insts {
		r.mapsEverywhere(i, "target", partitions)
	}
	// kp-2's partitions move to kp-0 and kp-1 under load.
	r.close(2)
	r.formed(ctx, 2)
	want := settleAndCheck(t, ctx, tr, stop, partitions)
	if err := inSequence(readAll(t, ctx, r.tgt, partitions, want), want); err != nil {
		t.Fatalf("target: %v", err)
	}
}

// Issue 14: an instance down during a coordinated flip restarts on the new
// home with every partition's sealed map, rebuilt from the control topic
// before it serves: it neither serves the topic from the cluster it left
// nor copies the old home into the new one.
func TestInstanceDownDuringACoordinatedFlipRestartsWithItsMaps(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startFlipTraffic(t, partitions)
	r.close(2)
	r.formed(ctx, 2)
	stop := load(ctx, tr)
	r.flipAll(ctx, "target", []int{1, 0}, func(i int) *config.Config { return routed(r.cfgs[i], config.Target) })
	r.restart(2, routed(r.cfgs[2], config.Target))
	r.mapsEverywhere(2, "target", partitions)
	r.formed(ctx, 3)
	// The topic moved once, on every instance: the count keys shared
	// producer sessions, so the restarted one must not start from none.
	for i, in := range r.insts {
		if n := in.srv.TopicMoves("orders"); n != 1 {
			t.Fatalf("kp-%d counts %d moves of the topic, want 1 (the control topic's one flip)", i, n)
		}
	}
	want := settleAndCheck(t, ctx, tr, stop, partitions)
	if err := inSequence(readAll(t, ctx, r.tgt, partitions, want), want); err != nil {
		t.Fatalf("target: %v", err)
	}
	if err := inSequence(readAll(t, ctx, r.src, partitions, want), want); err != nil {
		t.Fatalf("source (the copy back): %v", err)
	}
}

// Issue 14: a reload while a coordinated flip holds, after this
// instance sealed its copy, leaves the copy stopped: the flip's end
// starts the right one. Restarted by the reload, the copy into the target
// ran on while the target became the home, copying the copy back's
// records (the target's, written into the source) into the target once
// more: each such record twice in the new home.
func TestReloadDuringACoordinatedHoldKeepsTheSealedCopyStopped(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startFlipTraffic(t, partitions)
	// kp-2 gets ready only when the test lets it.
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.insts[2].ctrl.cuts.prepareHook = func(ctx context.Context) error {
		once.Do(func() { close(entered) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stop := load(ctx, tr)
	r.routeToTargetUntil(ctx, []int{2, 1, 0}, entered)
	// kp-1 sealed its partitions and waits for kp-2.
	for r.insts[1].ctrl.repl.copiesInto("orders", "target") {
		if ctx.Err() != nil {
			t.Fatal("kp-1 never sealed its copy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.insts[1].Apply(routed(r.cfgs[1], config.Target)); err != nil { // the same file, saved again
		t.Fatal(err)
	}
	if r.insts[1].ctrl.repl.copiesInto("orders", "target") {
		t.Fatal("the reload during the hold restarted kp-1's sealed copy into the target")
	}
	close(release)
	r.waitHome(ctx, "target")
	want := settleAndCheck(t, ctx, tr, stop, partitions)
	if err := inSequence(readAll(t, ctx, r.tgt, partitions, want), want); err != nil {
		t.Fatalf("target: %v", err)
	}
}
