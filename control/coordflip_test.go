package control

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kproxy/kproxy/replicator"
)

// fixedView is a membership view that never changes.
type fixedView []string

func (v fixedView) memberIDs() ([]string, bool)  { return v, true }
func (v fixedView) viewChanged() <-chan struct{} { return nil }

// recLocal records what the coordinator asks of the local side.
type recLocal struct {
	mu    sync.Mutex
	calls []string
}

func (l *recLocal) note(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf(format, args...))
}

func (l *recLocal) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

func (l *recLocal) coordHold(topic, from, to string) { l.note("hold %s->%s", from, to) }
func (l *recLocal) coordPrepare(ctx context.Context, topic, from, to string) (int32, map[int32]flipPoint, error) {
	return 1, map[int32]flipPoint{0: {FromEnd: 1}}, nil
}
func (l *recLocal) coordCommit(topic, from, to string, gen int64, prepared bool, points map[int32]flipPoint) {
	l.note("commit %d %s->%s", gen, from, to)
}
func (l *recLocal) coordRefuse(topic string) { l.note("refuse") }
func (l *recLocal) coordAbort(topic, from, to string, prepared bool, reason string) {
	l.note("abort %s->%s", from, to)
}
func (l *recLocal) coordMoves(topic string, n uint64) {}

func (l *recLocal) coordRestore(topic, from, to string, gen int64, points, left map[int32]flipPoint) error {
	return nil
}

// waitReady waits until instance answered ready for orders' flip gen.
func waitReady(t *testing.T, ctx context.Context, st *stateTopic, gen int64, instance string) {
	t.Helper()
	for {
		ch := st.changes()
		var r readyRecord
		if ok, _ := st.get(readyKey("orders", gen, instance), &r); ok {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s never answered ready for gen %d", instance, gen)
		}
	}
}

// Issue 14: only the first decision of a flip is acted on, and only a
// flip started from the topic's home is held. Two drivers exist while the
// instances' views of the membership differ; one that read the state
// just before the last decision starts a flip from the cluster the topic
// just left (its home, read before the decision, was the old one), and
// the next flip's start can reach a participant together with the
// decision of the flip it is still in. Each must leave the participant on
// the home the first decision gave: a session in which every instance
// drove wrote 13 records twice.
func TestCoordinatedFlipActsOnlyOnTheFirstDecisionFromTheHome(t *testing.T) {
	ctl := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openTestStateTopic(t, ctx, ctl)
	local := &recLocal{}
	view := fixedView{"kp-0", "kp-1"}
	cf := newCoordFlips(hclog.NewNullLogger(), "kp-1", st, view, local, func() time.Duration { return time.Minute })
	put := func(recs ...stateRecord) {
		t.Helper()
		if err := st.put(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	hold := func(gen int64, from, to string) stateRecord {
		return stateRecord{flipKey("orders"), flipRecord{Gen: gen, Phase: phaseHold, From: from, To: to, Members: view, Driver: "kp-0", Started: time.Now()}}
	}
	decided := func(gen int64, driver, outcome, from, to string) stateRecord {
		return stateRecord{decidedPrefix("orders", gen) + driver, decisionRecord{Outcome: outcome, From: from, To: to, At: time.Now()}}
	}
	want := func(calls ...string) {
		t.Helper()
		if got := local.got(); !slices.Equal(got, calls) {
			t.Fatalf("the participant did %q, want %q", got, calls)
		}
	}

	// Gen 1 flips to the target; a second driver's abort comes after
	// the first decision and counts for nothing.
	put(hold(1, "source", "target"))
	cf.participate(ctx)
	waitReady(t, ctx, st, 1, "kp-1")
	put(decided(1, "kp-0", phaseFlipped, "source", "target"), decided(1, "kp-2", phaseAborted, "source", "target"))
	cf.participate(ctx)
	want("hold source->target", "commit 1 source->target")

	// A driver that read the home before gen 1's decision starts gen 2
	// from the source: nobody holds it, and the driver aborts it.
	put(hold(2, "source", "target"))
	cf.participate(ctx)
	want("hold source->target", "commit 1 source->target")
	var d0 *coordFlips = newCoordFlips(hclog.NewNullLogger(), "kp-0", st, view, &recLocal{}, func() time.Duration { return time.Minute })
	d0.drive(ctx)
	if d, ok := cf.decision("orders", 2); !ok || d.Outcome != phaseAborted {
		t.Fatalf("the stale flip's decision: %+v %v, want aborted", d, ok)
	}

	// Gen 3 (back to the source) starts; its decision and gen 4's start
	// reach the participant in one read: gen 3 ends first, as decided.
	put(hold(3, "target", "source"))
	cf.participate(ctx)
	waitReady(t, ctx, st, 3, "kp-1")
	put(decided(3, "kp-0", phaseFlipped, "target", "source"), hold(4, "source", "target"))
	cf.participate(ctx)
	want("hold source->target", "commit 1 source->target", "hold target->source", "commit 3 target->source", "hold source->target")
}

// Issue 14: the driver flips only when the members' flip points cover
// every partition once: views that differed for a moment can leave a
// partition sealed by nobody (its copy never drained for the flip), and
// flipped, its records past the copy would be missing on the new home.
func TestCoordinatedFlipAbortsWhenAPartitionWasSealedByNobody(t *testing.T) {
	ctl := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openTestStateTopic(t, ctx, ctl)
	view := fixedView{"kp-0", "kp-1"}
	d := newCoordFlips(hclog.NewNullLogger(), "kp-0", st, view, &recLocal{}, func() time.Duration { return time.Minute })
	d.want("orders", "source", "target", false)
	pt := flipPoint{Map: replicator.NewOffsetMap(replicator.MapMeta{Topic: "orders"}, 0, 0).AppendBinary(nil)}
	if err := st.put(ctx,
		stateRecord{flipKey("orders"), flipRecord{Gen: 1, Phase: phaseHold, From: "source", To: "target", Members: view, Driver: "kp-0", Started: time.Now()}},
		stateRecord{readyKey("orders", 1, "kp-0"), readyRecord{Gen: 1, Partitions: 3, Points: map[int32]flipPoint{0: pt}}},
		stateRecord{readyKey("orders", 1, "kp-1"), readyRecord{Gen: 1, Partitions: 3, Points: map[int32]flipPoint{2: pt}}},
	); err != nil {
		t.Fatal(err)
	}
	d.drive(ctx)
	got, ok := d.decision("orders", 1)
	if !ok || got.Outcome != phaseAborted || !strings.Contains(got.Reason, "partitions [1] were sealed by no instance") {
		t.Fatalf("decision %+v %v, want aborted for partition 1", got, ok)
	}
}

// The ready records of earlier flips are tombstoned once a later flip is
// decided, but for the last two flips decided flipped (restore rebuilds
// the home's maps and the left cluster's from their points): the control
// topic no longer grows with every flip.
func TestDecidedFlipTombstonesReadiesNoInstanceReads(t *testing.T) {
	ctl := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openTestStateTopic(t, ctx, ctl)
	view := fixedView{"kp-0"}
	d := newCoordFlips(hclog.NewNullLogger(), "kp-0", st, view, &recLocal{}, func() time.Duration { return time.Minute })
	pt := flipPoint{Map: replicator.NewOffsetMap(replicator.MapMeta{Topic: "orders"}, 0, 0).AppendBinary(nil)}
	ready := func(gen int64) stateRecord {
		return stateRecord{readyKey("orders", gen, "kp-0"), readyRecord{Gen: gen, Partitions: 1, Points: map[int32]flipPoint{0: pt}}}
	}
	decided := func(gen int64, outcome, from, to string) stateRecord {
		return stateRecord{decidedPrefix("orders", gen) + "kp-0", decisionRecord{Outcome: outcome, From: from, To: to, At: time.Now()}}
	}
	// Gens 1 (flipped), 2 (aborted) and 3 (flipped back) decided; gen 4
	// holds with its member ready.
	if err := st.put(ctx, ready(1), decided(1, phaseFlipped, "source", "target"),
		ready(2), decided(2, phaseAborted, "target", "source"),
		ready(3), decided(3, phaseFlipped, "target", "source"),
		stateRecord{flipKey("orders"), flipRecord{Gen: 4, Phase: phaseHold, From: "source", To: "target", Members: view, Driver: "kp-0", Started: time.Now()}},
		ready(4)); err != nil {
		t.Fatal(err)
	}
	d.want("orders", "source", "target", false)
	d.drive(ctx)
	if got, ok := d.decision("orders", 4); !ok || got.Outcome != phaseFlipped {
		t.Fatalf("gen 4's decision %+v %v, want flipped", got, ok)
	}
	left := st.keys("ready/orders/")
	slices.Sort(left)
	if want := []string{readyKey("orders", 3, "kp-0"), readyKey("orders", 4, "kp-0")}; !slices.Equal(left, want) {
		t.Fatalf("ready records left %v, want %v (the last two flipped)", left, want)
	}
	if pts := d.points("orders", 3); len(pts) != 1 {
		t.Fatalf("gen 3's points %v: restore needs them (the cluster left's maps)", pts)
	}
}
