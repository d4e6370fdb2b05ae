package control

import (
	"context"
	"fmt"
	"testing"
	"time"

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
}

// startGroupTraffic is startFlipTraffic with a consumer that commits every
// 100 ms, so that commits arrive during a group move's hold.
func startGroupTraffic(t *testing.T, partitions int32) (*flipRig, context.Context, *hatest.Traffic) {
	t.Helper()
	r := newFlipRig(t, 3, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	r.formed(ctx, 3)
	tr, err := hatest.NewTraffic(r.addrs, "orders", partitions, "g", kgo.AutoCommitInterval(100*time.Millisecond))
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
