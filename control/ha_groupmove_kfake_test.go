package control

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/test/hatest"
)

// homed is cfg with group g's home on cluster, as a reload of the edited
// file would apply it.
func homed(cfg *config.Config, cluster config.Cluster) *config.Config {
	next := *cfg
	next.Groups.Homes = map[string]config.Cluster{"g": cluster}
	return &next
}

// groupHome is group g's home as instance i routes it now.
func (r *flipRig) groupHome(i int) string {
	return r.insts[i].ctrl.overlay.router().GroupCluster("g")
}

// groupMoveOf is instance i's move status of group g (zero when none).
func (r *flipRig) groupMoveOf(i int) GroupMoveStatus {
	for _, m := range r.insts[i].ctrl.GroupMoves() {
		if m.Group == "g" {
			return m
		}
	}
	return GroupMoveStatus{}
}

// moveGroupAll applies next(i) to the instances in order and waits until
// every open one routes group g to home with its move over. A move the
// driver aborts (the membership dropping an instance for a moment on a
// loaded machine) is asked for again by the same reload, as for flips.
func (r *flipRig) moveGroupAll(ctx context.Context, home string, order []int, next func(i int) *config.Config) {
	r.t.Helper()
	for attempt := 0; ; attempt++ {
		for _, i := range order {
			if err := r.insts[i].Apply(next(i)); err != nil {
				r.t.Fatal(err)
			}
		}
		for {
			done, aborted := true, false
			var states []string
			for i := range r.insts {
				if r.closed[i] {
					continue
				}
				m := r.groupMoveOf(i)
				states = append(states, fmt.Sprintf("kp-%d: home %s, %s %s", i, r.groupHome(i), m.State, m.Reason))
				done = done && r.groupHome(i) == home && m.State == groupMoved && m.To == home
				aborted = aborted || m.State == groupAborted
			}
			if done {
				return
			}
			if aborted && attempt < 5 {
				r.t.Logf("the group move to the %s aborted (%v); asking again", home, states)
				break
			}
			if ctx.Err() != nil {
				r.t.Fatalf("group g never moved to the %s everywhere: %v", home, states)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Issue 14 item 5: three instances move a consumer group's home to the
// target and back through the control topic, under produce and consume
// load through all three. The two instances that see the edit before the
// driver neither hold nor move the group on their own; every instance
// ends with the same home; the group reads every acknowledged record once
// and in order and never rewinds past an acknowledged commit (hatest's
// checker), so its offsets moved exactly, both ways.
func TestThreeInstancesMoveAGroupHomeTogetherAndBack(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startGroupTraffic(t, partitions)
	stop := load(ctx, tr)
	stopConsume := consume(ctx, tr)

	for _, i := range []int{2, 1} {
		if err := r.insts[i].Apply(homed(r.cfgs[i], config.Target)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, i := range []int{1, 2} {
		if h, m := r.groupHome(i), r.groupMoveOf(i); h != "source" || m.State != "" {
			t.Fatalf("kp-%d moved the group on its own before the driver saw the edit: home %s, %+v", i, h, m)
		}
	}
	gen := tr.Generation()
	r.moveGroupAll(ctx, "target", []int{0}, func(i int) *config.Config { return homed(r.cfgs[i], config.Target) })
	time.Sleep(time.Second) // consumed and committed on the new home
	r.moveGroupAll(ctx, "source", []int{1, 2, 0}, func(i int) *config.Config { return r.cfgs[i] })
	time.Sleep(time.Second)
	stopConsume()
	settleAndCheck(t, ctx, tr, stop, partitions)
	t.Logf("group generation %d before the moves, %d after; read again %d", gen, tr.Generation(), tr.Rereads())
	for i := range r.insts {
		if h := r.groupHome(i); h != "source" {
			t.Fatalf("kp-%d homes the group on the %s after the move back", i, h)
		}
	}

	// Exact offsets: with the group idle, a move leaves the new home with
	// the commits the old one had, answered through kproxy at once (a
	// member that starts after a move resumes there). Without the copy
	// the target answers the older commits of the group's first stay.
	before := commitsSettled(t, ctx, r, partitions)
	r.moveGroupAll(ctx, "target", []int{1, 2, 0}, func(i int) *config.Config { return homed(r.cfgs[i], config.Target) })
	if got := committedThrough(t, ctx, r.addrs); !maps.Equal(got, before) {
		t.Fatalf("committed offsets after the move %v, want %v as before it", got, before)
	}
	if got := committedThrough(t, ctx, r.tgt.ListenAddrs()); !maps.Equal(got, before) {
		t.Fatalf("committed offsets on the target after the move %v, want %v", got, before)
	}
}

// committedThrough is group g's committed offsets of orders as kproxy
// answers them.
func committedThrough(t *testing.T, ctx context.Context, addrs []string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, "g")
	out := map[int32]int64{}
	if err != nil {
		return out
	}

	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == "orders" && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

// startGroupTraffic is startFlipTraffic with a consumer that commits every
// 100 ms, so that commits arrive during a group move's hold.
func startGroupTraffic(t *testing.T, partitions int32) (*flipRig, context.Context, *hatest.Traffic) {
	t.Helper()
	return startFlipTraffic(t, partitions, kgo.AutoCommitInterval(100*time.Millisecond))
}

// consume has the group read on until the returned func is called.
func consume(ctx context.Context, tr *hatest.Traffic) (stop func()) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tr.Consume(cctx, 1<<30)
	}()
	return func() { cancel(); <-done }
}

// Issue 14 item 5: an instance that leaves while a group move holds aborts
// the move everywhere (never two homes): the others release the group on
// its home, the control topic's decision says aborted, and the group reads
// on with nothing lost and no rewind.
func TestCoordinatedGroupMoveAbortsWhenAnInstanceLeavesMidHold(t *testing.T) {
	const partitions = 6
	r, ctx, tr := startGroupTraffic(t, partitions)
	entered := make(chan struct{})
	var once sync.Once
	r.insts[2].ctrl.groups.prepareHook = func(ctx context.Context) error {
		once.Do(func() { close(entered) })
		<-ctx.Done()
		return ctx.Err()
	}
	stop := load(ctx, tr)
	stopConsume := consume(ctx, tr)
	for _, i := range []int{1, 2, 0} {
		if err := r.insts[i].Apply(homed(r.cfgs[i], config.Target)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the move never reached kp-2's prepare")
	}
	r.close(2)
	r.formed(ctx, 2)
	for _, i := range []int{0, 1} {
		for r.groupMoveOf(i).State != groupAborted {
			if ctx.Err() != nil {
				t.Fatalf("kp-%d: %+v, want aborted", i, r.groupMoveOf(i))
			}
			time.Sleep(20 * time.Millisecond)
		}
		m := r.groupMoveOf(i)
		if h := r.groupHome(i); h != "source" || !strings.Contains(m.Reason, "instances changed") {
			t.Fatalf("kp-%d: home %s, %+v; want the source, aborted for the view change", i, h, m)
		}
	}
	if d, ok := r.insts[0].coord.decision(groupSubject("g"), 1); !ok || d.Outcome != phaseAborted {
		t.Fatalf("the control topic's decision of the move: %+v (found %v), want aborted", d, ok)
	}
	time.Sleep(500 * time.Millisecond) // reads and commits on the home
	stopConsume()
	settleAndCheck(t, ctx, tr, stop, partitions)
}

// Issue 14 item 5: every instance agrees on a group's home after a
// restart: one restarted after a move, with a config that still names the
// old home (its ConfigMap not yet updated) and an empty state_dir, routes
// the group to the home the control topic decided, not to its config's.
// The driver then moves it back only when its own config asks.
func TestInstanceRestartedAfterAGroupMoveTakesItsHomeFromTheControlTopic(t *testing.T) {
	const partitions = 3
	r, ctx, tr := startGroupTraffic(t, partitions)
	r.moveGroupAll(ctx, "target", []int{1, 2, 0}, func(i int) *config.Config { return homed(r.cfgs[i], config.Target) })
	r.close(2)
	r.formed(ctx, 2)
	cfg := *r.cfgs[2]
	cfg.StateDir = t.TempDir()
	r.restart(2, &cfg)
	r.formed(ctx, 3)
	if h := r.groupHome(2); h != "target" {
		t.Fatalf("kp-2 restarted with the old config routes the group to the %s, want the target (the control topic's home)", h)
	}
	// A reload on a non-driver asks nothing the driver acts on.
	if err := r.insts[1].Apply(r.cfgs[1]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for i := range r.insts {
		if h := r.groupHome(i); h != "target" {
			t.Fatalf("kp-%d routes the group to the %s before the driver asked for a move", i, h)
		}
	}
	stop := load(ctx, tr)
	stopConsume := consume(ctx, tr)
	time.Sleep(500 * time.Millisecond)
	stopConsume()
	settleAndCheck(t, ctx, tr, stop, partitions)
}

// A member on the new home that did not join through kproxy (a consumer
// connected to the target directly) fails the driver's offset copy: the
// move aborts everywhere and the group stays on its home.
func TestCoordinatedGroupMoveAbortsWhenTheCopyFails(t *testing.T) {
	const partitions = 3
	r, ctx, tr := startGroupTraffic(t, partitions)
	// The copy looks for strangers on the new home only when there are
	// offsets to copy: wait for the group's first commit on its home
	// (kgo commits what a poll returned at a later poll: the group reads
	// on meanwhile).
	stop := load(ctx, tr)
	stopConsume := consume(ctx, tr)
	srcAdm, err := kgo.NewClient(kgo.SeedBrokers(r.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer srcAdm.Close()
	for {
		offs, err := kadm.NewClient(srcAdm).FetchOffsets(ctx, "g")
		if err == nil && len(offs) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the group never committed on the source")
		}
		time.Sleep(50 * time.Millisecond)
	}
	direct, err := kgo.NewClient(kgo.SeedBrokers(r.tgt.ListenAddrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	for len(direct.PollFetches(ctx).Errors()) > 0 || !joined(direct) {
		if ctx.Err() != nil {
			t.Fatal("the direct consumer never joined the target")
		}
	}
	for _, i := range []int{1, 2, 0} {
		if err := r.insts[i].Apply(homed(r.cfgs[i], config.Target)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range r.insts {
		for r.groupMoveOf(i).State != groupAborted {
			if ctx.Err() != nil {
				t.Fatalf("kp-%d: %+v, want aborted", i, r.groupMoveOf(i))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if m, h := r.groupMoveOf(i), r.groupHome(i); h != "source" || !strings.Contains(m.Reason, "did not join through kproxy") {
			t.Fatalf("kp-%d: home %s, %+v; want the source, aborted by the copy", i, h, m)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopConsume()
	settleAndCheck(t, ctx, tr, stop, partitions)
}

func joined(cl *kgo.Client) bool {
	_, gen := cl.GroupMetadata()
	return gen > 0
}

// Committed offsets are virtual on both clusters, for a topic flipped or
// not: after orders flipped to the target (its virtual offsets there
// shifted from the target's own), the group moves there and back under
// load with its offsets copied verbatim. Checker clean, no rewind, and an
// idle move leaves the new home answering the same commits.
func TestGroupMovesAfterItsTopicFlipped(t *testing.T) {
	const partitions = 3
	r, ctx, tr := startGroupTraffic(t, partitions)
	stop := load(ctx, tr)
	stopConsume := consume(ctx, tr)
	r.flipAll(ctx, "target", []int{1, 2, 0}, func(i int) *config.Config { return routed(r.cfgs[i], config.Target) })
	time.Sleep(500 * time.Millisecond) // produced and committed on the new home
	r.moveGroupAll(ctx, "target", []int{1, 2, 0}, func(i int) *config.Config { return homed(routed(r.cfgs[i], config.Target), config.Target) })
	time.Sleep(500 * time.Millisecond)
	r.moveGroupAll(ctx, "source", []int{1, 2, 0}, func(i int) *config.Config { return routed(r.cfgs[i], config.Target) })
	time.Sleep(500 * time.Millisecond)
	stopConsume()
	settleAndCheck(t, ctx, tr, stop, partitions)

	before := commitsSettled(t, ctx, r, partitions)
	r.moveGroupAll(ctx, "target", []int{1, 2, 0}, func(i int) *config.Config { return homed(routed(r.cfgs[i], config.Target), config.Target) })
	if got := committedThrough(t, ctx, r.addrs); !maps.Equal(got, before) {
		t.Fatalf("committed offsets after the move %v, want %v as before it", got, before)
	}
}

// commitsSettled waits until the group's commits on every partition read
// the same through the instances twice 300 ms apart and on the source
// directly (the group idle), and returns them.
func commitsSettled(t *testing.T, ctx context.Context, r *flipRig, partitions int) map[int32]int64 {
	t.Helper()
	for {
		before := committedThrough(t, ctx, r.addrs)
		time.Sleep(300 * time.Millisecond)
		if len(before) == partitions && maps.Equal(before, committedThrough(t, ctx, r.src.ListenAddrs())) && maps.Equal(before, committedThrough(t, ctx, r.addrs)) {
			return before
		}
		if ctx.Err() != nil {
			t.Fatalf("the group's commits never settled: %v", before)
		}
	}
}
