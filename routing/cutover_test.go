package routing

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/config"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus d: the tests' clock.
func at(d time.Duration) time.Time { return t0.Add(d) }

var (
	pol       = Policy{MaxHold: 5 * time.Second, ReverseReplication: true}
	polNoBack = Policy{MaxHold: 5 * time.Second}
	ends      = map[int32]int64{0: 120, 1: 98, 2: 0}
)

// The planned (steady) cutover of the tests.
var both = Cutover{Topic: "orders", From: S, To: T}

// in returns c moved into state s the way Step would get it there, with the
// hold starting at t0, the drain done at 1s and the flip or abort at 2s.
func in(c Cutover, s State) Cutover {
	c.State = s
	if s == Steady {
		return c
	}
	c.StartedAt = t0
	c.HeldSince = t0
	if s != Holding {
		c.FrozenEnds = map[int32]int64{0: 120, 1: 98, 2: 0}
	}
	switch s {
	case Flipped:
		c.FlippedAt = at(2 * time.Second)
	case Aborted:
		c.Reason = "route reverted"
	case Steady, Holding, Draining:
	}
	if s == Flipped || s == Aborted {
		c.HoldDuration = 2 * time.Second
	}
	return c
}

// with applies f to a copy of c.
func with(c Cutover, f func(*Cutover)) Cutover {
	f(&c)
	return c
}

func swapped(c Cutover) Cutover {
	c.From, c.To = c.To, c.From
	return c
}

func TestStepLegalTransitions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    Cutover
		ev   Event
		now  time.Time
		p    Policy
		want Cutover
		acts []Action
	}{
		{
			name: "a route change of produce and fetch holds produce and drains the in-flight requests",
			c:    both, ev: RouteChanged{}, now: t0, p: pol,
			want: in(both, Holding),
			acts: []Action{ActionHoldProduce{}, ActionDrainInFlight{From: S}},
		},
		{
			name: "drained in-flight produces freeze the end offsets and wait for replication up to them",
			c:    in(both, Holding), ev: InFlightDrained{Ends: ends}, now: at(time.Second), p: pol,
			want: in(both, Draining),
			acts: []Action{ActionWaitReplicated{From: S, To: T, Ends: ends}},
		},
		{
			name: "replication up to the frozen ends flips, releases the held requests to the target and reverses replication",
			c:    in(both, Draining), ev: Replicated{}, now: at(2 * time.Second), p: pol,
			want: in(both, Flipped),
			acts: []Action{
				ActionFlipRoute{To: T},
				ActionReleaseHeld{To: T},
				ActionStartReverseReplication{Src: T, Dst: S},
			},
		},
		{
			name: "without reverse_after_cutover the flip starts no reverse replication",
			c:    in(both, Draining), ev: Replicated{}, now: at(2 * time.Second), p: polNoBack,
			want: in(both, Flipped),
			acts: []Action{ActionFlipRoute{To: T}, ActionReleaseHeld{To: T}},
		},
		{
			name: "a failure while holding aborts and releases the held requests to the source",
			c:    in(both, Holding), ev: Failed{Reason: "target unreachable"}, now: at(2 * time.Second), p: pol,
			want: with(in(both, Aborted), func(c *Cutover) { c.Reason, c.FrozenEnds = "target unreachable", nil }),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a failure without a reason aborts with reason failed",
			c:    in(both, Draining), ev: Failed{}, now: at(2 * time.Second), p: pol,
			want: with(in(both, Aborted), func(c *Cutover) { c.Reason = "failed" }),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a revert while holding aborts and releases the held requests to the source",
			c:    in(both, Holding), ev: RouteReverted{}, now: at(2 * time.Second), p: pol,
			want: with(in(both, Aborted), func(c *Cutover) { c.FrozenEnds = nil }),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a revert while draining aborts and releases the held requests to the source",
			c:    in(both, Draining), ev: RouteReverted{}, now: at(2 * time.Second), p: pol,
			want: in(both, Aborted),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a tick within max_hold changes nothing while holding",
			c:    in(both, Holding), ev: Tick{}, now: at(5 * time.Second), p: pol,
			want: in(both, Holding),
		},
		{
			name: "a tick past max_hold aborts a hold",
			c:    in(both, Holding), ev: Tick{}, now: at(5*time.Second + 1), p: pol,
			want: with(in(both, Aborted), func(c *Cutover) {
				c.Reason, c.FrozenEnds, c.HoldDuration = "hold exceeded max_hold (5s) while holding", nil, 5*time.Second+1
			}),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a tick past max_hold aborts a drain and names the state",
			c:    in(both, Draining), ev: Tick{}, now: at(6 * time.Second), p: pol,
			want: with(in(both, Aborted), func(c *Cutover) {
				c.Reason, c.HoldDuration = "hold exceeded max_hold (5s) while draining", 6*time.Second
			}),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a zero policy bounds the hold by the default max_hold",
			c:    in(both, Holding), ev: Tick{}, now: at(config.DefaultMaxHold + time.Millisecond), p: Policy{},
			want: with(in(both, Aborted), func(c *Cutover) {
				c.Reason = fmt.Sprintf("hold exceeded max_hold (%s) while holding", config.DefaultMaxHold)
				c.FrozenEnds, c.HoldDuration = nil, config.DefaultMaxHold+time.Millisecond
			}),
			acts: []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}},
		},
		{
			name: "a tick changes nothing in steady",
			c:    both, ev: Tick{}, now: at(time.Hour), p: pol,
			want: both,
		},
		{
			name: "a tick changes nothing once flipped",
			c:    in(both, Flipped), ev: Tick{}, now: at(time.Hour), p: pol,
			want: in(both, Flipped),
		},
		{
			name: "a tick changes nothing once aborted",
			c:    in(both, Aborted), ev: Tick{}, now: at(time.Hour), p: pol,
			want: in(both, Aborted),
		},
		{
			name: "a revert after the flip starts a rollback: the same hold in the other direction",
			c:    in(both, Flipped), ev: RouteReverted{}, now: at(time.Minute), p: pol,
			want: with(swapped(both), func(c *Cutover) { c.State, c.StartedAt, c.HeldSince = Holding, at(time.Minute), at(time.Minute) }),
			acts: []Action{ActionHoldProduce{}, ActionDrainInFlight{From: T}},
		},
		{
			name: "a route change after an abort starts a new attempt from scratch",
			c:    in(both, Aborted), ev: RouteChanged{}, now: at(time.Minute), p: pol,
			want: with(both, func(c *Cutover) { c.State, c.StartedAt, c.HeldSince = Holding, at(time.Minute), at(time.Minute) }),
			acts: []Action{ActionHoldProduce{}, ActionDrainInFlight{From: S}},
		},
		{
			name: "a revert after an abort returns to steady, where config and traffic agree",
			c:    in(both, Aborted), ev: RouteReverted{}, now: at(time.Minute), p: pol,
			want: both,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := fmt.Sprintf("%+v", tt.c)
			got, acts, err := Step(tt.c, tt.ev, tt.now, tt.p)
			if err != nil {
				t.Fatalf("Step(%v, %v): %v", tt.c.State, tt.ev, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Step(%v, %v) =\n  %+v\nwant\n  %+v", tt.c.State, tt.ev, got, tt.want)
			}
			if !reflect.DeepEqual(acts, tt.acts) {
				t.Errorf("Step(%v, %v) actions = %v, want %v", tt.c.State, tt.ev, acts, tt.acts)
			}
			if after := fmt.Sprintf("%+v", tt.c); after != before {
				t.Errorf("Step modified its input:\n  %s\nnow\n  %s", before, after)
			}
		})
	}
}

func TestStepIllegalTransitions(t *testing.T) {
	t.Parallel()
	events := []Event{RouteChanged{}, InFlightDrained{Ends: ends}, Replicated{}, Failed{Reason: "boom"}, RouteReverted{}}
	// legal lists, per state, the events Step accepts (Tick is legal everywhere).
	legal := map[State][]string{
		Steady:   {"route changed"},
		Holding:  {"in-flight drained", "failed (boom)", "route reverted"},
		Draining: {"replicated", "failed (boom)", "route reverted"},
		Flipped:  {"route reverted"},
		Aborted:  {"route changed", "route reverted"},
	}
	leadsTo := map[string]State{
		"route changed": Holding, "in-flight drained": Draining, "replicated": Flipped,
		"failed (boom)": Aborted, "route reverted": Aborted,
	}
	n := 0
	for _, s := range []State{Steady, Holding, Draining, Flipped, Aborted} {
		for _, ev := range events {
			if contains(legal[s], ev.String()) {
				continue
			}
			n++
			c := in(both, s)
			t.Run(fmt.Sprintf("%s is illegal in %s", ev, s), func(t *testing.T) {
				t.Parallel()
				got, acts, err := Step(c, ev, at(time.Second), pol)
				var te *TransitionError
				if !errors.As(err, &te) {
					t.Fatalf("Step(%v, %v) error = %v, want a *TransitionError", s, ev, err)
				}
				if te.From != s || te.To != leadsTo[ev.String()] {
					t.Errorf("TransitionError states = %v → %v, want %v → %v", te.From, te.To, s, leadsTo[ev.String()])
				}
				want := fmt.Sprintf("illegal transition %s → %s on %s", s, leadsTo[ev.String()], ev)
				if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, `"orders"`) {
					t.Errorf("error %q does not say %q and name the topic", msg, want)
				}
				if !reflect.DeepEqual(got, c) || acts != nil {
					t.Errorf("an illegal event changed the cutover or asked for actions: %+v %v", got, acts)
				}
			})
		}
	}
	if n != 15 {
		t.Errorf("checked %d illegal transitions, want 15 (5 states × 5 events − 10 legal)", n)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestIllegalTransitionErrorText(t *testing.T) {
	t.Parallel()
	_, _, err := Step(in(both, Steady), Replicated{}, t0, pol)
	want := `routing: cutover of "orders": illegal transition steady → flipped on replicated (legal only in draining)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	_, _, err = Step(in(both, Flipped), RouteChanged{}, t0, pol)
	want = `routing: cutover of "orders": illegal transition flipped → holding on route changed (legal only in steady, aborted)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

// run applies events in order, failing the test on an error, and returns the
// final cutover and every action asked for.
func run(t *testing.T, c Cutover, p Policy, steps ...step) (Cutover, [][]Action) {
	t.Helper()
	var all [][]Action
	for _, s := range steps {
		var acts []Action
		var err error
		c, acts, err = Step(c, s.ev, s.now, p)
		if err != nil {
			t.Fatalf("Step(%v, %v): %v", c.State, s.ev, err)
		}
		all = append(all, acts)
	}
	return c, all
}

type step struct {
	ev  Event
	now time.Time
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		c     Cutover
		p     Policy
		steps []step
		state State
		check func(t *testing.T, c Cutover, acts [][]Action)
	}{
		{
			name: "a full cutover holds produce for as long as the drain and the replication take",
			c:    both, p: pol,
			steps: []step{
				{RouteChanged{}, t0},
				{Tick{}, at(20 * time.Millisecond)},
				{InFlightDrained{Ends: ends}, at(40 * time.Millisecond)},
				{Tick{}, at(100 * time.Millisecond)},
				{Replicated{}, at(180 * time.Millisecond)},
			},
			state: Flipped,
			check: func(t *testing.T, c Cutover, acts [][]Action) {
				if c.HoldDuration != 180*time.Millisecond || !c.FlippedAt.Equal(at(180*time.Millisecond)) {
					t.Errorf("hold %v flipped at %v, want 180ms and t0+180ms", c.HoldDuration, c.FlippedAt)
				}
				if !reflect.DeepEqual(c.FrozenEnds, ends) {
					t.Errorf("FrozenEnds = %v, want %v", c.FrozenEnds, ends)
				}
				if c.HoldsProduce() {
					t.Errorf("a flipped cutover still holds produce")
				}
			},
		},
		{
			name: "a replicator that cannot catch up makes the hold time out, and a late replicated is refused",
			c:    both, p: pol,
			steps: []step{
				{RouteChanged{}, t0},
				{InFlightDrained{Ends: ends}, at(10 * time.Millisecond)},
				{Tick{}, at(4 * time.Second)},
				{Tick{}, at(5100 * time.Millisecond)},
			},
			state: Aborted,
			check: func(t *testing.T, c Cutover, acts [][]Action) {
				if c.Reason != "hold exceeded max_hold (5s) while draining" || c.HoldDuration != 5100*time.Millisecond {
					t.Errorf("reason %q hold %v", c.Reason, c.HoldDuration)
				}
				want := []Action{ActionReleaseHeld{To: S}, ActionKeepRoute{Cluster: S}}
				if !reflect.DeepEqual(acts[3], want) {
					t.Errorf("abort actions = %v, want %v", acts[3], want)
				}
				if c.HoldsProduce() {
					t.Errorf("an aborted cutover still holds produce")
				}
				late, _, err := Step(c, Replicated{}, at(6*time.Second), pol)
				var te *TransitionError
				if !errors.As(err, &te) || late.State != Aborted {
					t.Errorf("late replicated: state %v, error %v; want aborted and a TransitionError", late.State, err)
				}
			},
		},
		{
			name: "an operator reverting the route before the flip aborts and the retry starts over",
			c:    both, p: pol,
			steps: []step{
				{RouteChanged{}, t0},
				{InFlightDrained{Ends: ends}, at(10 * time.Millisecond)},
				{RouteReverted{}, at(20 * time.Millisecond)},
				{RouteChanged{}, at(time.Minute)},
			},
			state: Holding,
			check: func(t *testing.T, c Cutover, acts [][]Action) {
				if acts[2][0] != (ActionReleaseHeld{To: S}) {
					t.Errorf("revert actions = %v, want the held requests released to the source first", acts[2])
				}
				if c.FrozenEnds != nil || c.Reason != "" || !c.HeldSince.Equal(at(time.Minute)) {
					t.Errorf("the retry kept the old attempt's data: %+v", c)
				}
			},
		},
		{
			name: "a rollback after the flip holds on the target, waits for reverse replication and flips back to the source",
			c:    both, p: pol,
			steps: []step{
				{RouteChanged{}, t0},
				{InFlightDrained{Ends: ends}, at(10 * time.Millisecond)},
				{Replicated{}, at(30 * time.Millisecond)},
				{RouteReverted{}, at(time.Minute)},
				{InFlightDrained{Ends: map[int32]int64{0: 7, 1: 3, 2: 1}}, at(time.Minute + 10*time.Millisecond)},
				{Replicated{}, at(time.Minute + 50*time.Millisecond)},
			},
			state: Flipped,
			check: func(t *testing.T, c Cutover, acts [][]Action) {
				if c.From != T || c.To != S || c.HoldDuration != 50*time.Millisecond {
					t.Errorf("rollback %s→%s hold %v, want target→source 50ms", c.From, c.To, c.HoldDuration)
				}
				if want := (ActionDrainInFlight{From: T}); acts[3][1] != want {
					t.Errorf("rollback drains %v, want %v", acts[3][1], want)
				}
				wait := acts[4][0].(ActionWaitReplicated)
				if wait.From != T || wait.To != S {
					t.Errorf("rollback waits for %s→%s, want target→source", wait.From, wait.To)
				}
				want := []Action{
					ActionFlipRoute{To: S},
					ActionReleaseHeld{To: S},
					ActionStartReverseReplication{Src: S, Dst: T},
				}
				if !reflect.DeepEqual(acts[5], want) {
					t.Errorf("rollback flip actions = %v, want %v", acts[5], want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, acts := run(t, tt.c, tt.p, tt.steps...)
			if c.State != tt.state {
				t.Fatalf("final state %v, want %v (%+v)", c.State, tt.state, c)
			}
			tt.check(t, c, acts)
		})
	}
}

func TestStepRejectsBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    Cutover
		ev   Event
		want string
	}{
		{"a nil event is an error", both, nil, "nil event"},
		{"an unknown state is an error", with(both, func(c *Cutover) { c.State = State(42) }), RouteChanged{}, "unknown State(42)"},
		{"in-flight drained without end offsets is an error", in(both, Holding), InFlightDrained{}, "without end offsets"},
		{"a negative end offset is an error", in(both, Holding), InFlightDrained{Ends: map[int32]int64{0: -1}}, "partition 0 end offset -1"},
		{"a negative partition is an error", in(both, Holding), InFlightDrained{Ends: map[int32]int64{-1: 5}}, "partition -1 end offset 5"},
		{"a cutover without a topic cannot start", with(both, func(c *Cutover) { c.Topic = "" }), RouteChanged{}, "empty topic"},
		{"a cutover to the cluster it is on cannot start", with(both, func(c *Cutover) { c.To = S }), RouteChanged{}, `from "source" to "source"`},
		{"a cutover to an unknown cluster cannot start", with(both, func(c *Cutover) { c.To = "blue" }), RouteChanged{}, `to "blue"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, acts, err := Step(tt.c, tt.ev, t0, pol)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
			var te *TransitionError
			if errors.As(err, &te) {
				t.Errorf("bad input reported as an illegal transition: %v", err)
			}
			if !reflect.DeepEqual(got, tt.c) || acts != nil {
				t.Errorf("a rejected event changed the cutover or asked for actions: %+v %v", got, acts)
			}
		})
	}
}

func TestFrozenEndsAreCopied(t *testing.T) {
	t.Parallel()
	src := map[int32]int64{0: 10}
	c, acts, err := Step(in(both, Holding), InFlightDrained{Ends: src}, t0, pol)
	if err != nil {
		t.Fatal(err)
	}
	src[0] = 99
	acts[0].(ActionWaitReplicated).Ends[0] = 77
	if c.FrozenEnds[0] != 10 {
		t.Errorf("FrozenEnds[0] = %d after the caller changed its maps, want 10", c.FrozenEnds[0])
	}
}

func TestCutoverQueries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		c        Cutover
		holds    bool
		deadline time.Time // zero: none
	}{
		{"a planned cutover holds nothing", both, false, time.Time{}},
		{"a holding cutover holds produce until max_hold", in(both, Holding), true, at(5 * time.Second)},
		{"a draining cutover still holds produce", in(both, Draining), true, at(5 * time.Second)},
		{"a flipped cutover holds nothing", in(both, Flipped), false, time.Time{}},
		{"an aborted cutover holds nothing", in(both, Aborted), false, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.c.HoldsProduce(); got != tt.holds {
				t.Errorf("HoldsProduce() = %v, want %v", got, tt.holds)
			}
			d, ok := tt.c.Deadline(pol)
			if ok != !tt.deadline.IsZero() || !d.Equal(tt.deadline) {
				t.Errorf("Deadline() = %v, %v; want %v", d, ok, tt.deadline)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    fmt.Stringer
		want string
	}{
		{"steady", Steady, "steady"},
		{"holding", Holding, "holding"},
		{"draining", Draining, "draining"},
		{"flipped", Flipped, "flipped"},
		{"aborted", Aborted, "aborted"},
		{"an unknown state", State(9), "State(9)"},
		{"route changed", RouteChanged{}, "route changed"},
		{"in-flight drained", InFlightDrained{}, "in-flight drained"},
		{"replicated", Replicated{}, "replicated"},
		{"tick", Tick{}, "tick"},
		{"failed", Failed{Reason: "x"}, "failed (x)"},
		{"route reverted", RouteReverted{}, "route reverted"},
		{"hold", ActionHoldProduce{}, "hold produce"},
		{"drain", ActionDrainInFlight{From: S}, "drain in-flight produce to source"},
		{"wait replicated lists partitions in order", ActionWaitReplicated{From: S, To: T, Ends: ends}, "wait until source→target replicated to {0:120 1:98 2:0}"},
		{"flip", ActionFlipRoute{To: T}, "flip produce to target"},
		{"release", ActionReleaseHeld{To: S}, "release held produce to source"},
		{"reverse", ActionStartReverseReplication{Src: T, Dst: S}, "start replication target→source"},
		{"keep", ActionKeepRoute{Cluster: S}, "keep produce on source"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%s: String() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// cutoverYAML is a config with both clusters, replication of replicate and
// the given routes block (indented under routes:).
func cutoverYAML(replicate, routes string) string {
	return `
listen: 127.0.0.1:9092
clusters:
  source: { bootstrap: [127.0.0.1:19092] }
  target: { bootstrap: [127.0.0.1:29092] }
state_dir: /tmp/kproxy-cutover-test
replicate: ` + replicate + `
routes:
` + routes
}

func TestPolicyOf(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse([]byte(cutoverYAML("[orders]", "  default: source\n") +
		"cutover: { max_hold: 1500ms }\nreplication: { reverse_after_cutover: false }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := PolicyOf(cfg), (Policy{MaxHold: 1500 * time.Millisecond}); got != want {
		t.Errorf("PolicyOf = %+v, want %+v", got, want)
	}
}
