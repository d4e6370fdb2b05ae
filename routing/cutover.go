package routing

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kproxy/kproxy/config"
)

// State is where one topic's cutover stands.
type State int

// The cutover states. The zero State is Steady.
const (
	// Steady: the topic is served from From; no attempt is running. A new
	// Cutover starts here, ready for RouteChanged.
	Steady State = iota
	// Holding: new produce requests for the topic are queued inside the
	// proxy while the produce requests already sent to From finish.
	Holding
	// Draining: produce still held, waiting until the replicator has copied
	// From → To up to the frozen end offsets.
	Draining
	// Flipped: the topic's produce is served from To (its new home).
	Flipped
	// Aborted: the attempt timed out, failed or was reverted; the topic is
	// served from From again (Reason says why). Terminal for this attempt: the
	// next RouteChanged starts a new one, RouteReverted returns to Steady.
	Aborted
)

func (s State) String() string {
	switch s {
	case Steady:
		return "steady"
	case Holding:
		return "holding"
	case Draining:
		return "draining"
	case Flipped:
		return "flipped"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Policy is the configuration a cutover runs under. It is passed to Step on
// every event, like the time, so a reload's new values apply at once.
type Policy struct {
	// MaxHold bounds how long produce requests stay held (cutover.max_hold).
	// Zero or less means config.DefaultMaxHold.
	MaxHold time.Duration
	// ReverseReplication makes a flip that moves produce start replicating
	// the topic back, To → From (replication.reverse_after_cutover).
	ReverseReplication bool
}

// PolicyOf returns the cutover policy of cfg.
func PolicyOf(cfg *config.Config) Policy {
	return Policy{MaxHold: cfg.Cutover.MaxHold, ReverseReplication: cfg.Replication.ReverseAfterCutover}
}

func (p Policy) maxHold() time.Duration {
	if p.MaxHold <= 0 {
		return config.DefaultMaxHold
	}
	return p.MaxHold
}

// Cutover is one topic's cutover: the move of its produce route (its home)
// From → To, with produce held until the copy has every record. Fetch
// routes are not part of it: they move without a hold onto any cluster that
// holds the topic's records with a map (control/cutover.go). A Cutover is an
// immutable value. Step returns a new value and never modifies the one it is
// given; do not modify FrozenEnds either.
type Cutover struct {
	// Topic is the topic being moved.
	Topic string
	// From is the cluster that takes the topic's produce before the flip
	// (and again after an abort); To is the one that takes it after.
	From config.Cluster
	To   config.Cluster
	// State is where the cutover stands.
	State State
	// StartedAt is when the current attempt started (zero in Steady).
	StartedAt time.Time
	// HeldSince is when produce requests started being held.
	HeldSince time.Time
	// FrozenEnds are From's end offsets per partition once produce was held
	// and the in-flight produces drained: every acknowledged record lies
	// below them. Set from Draining on.
	FrozenEnds map[int32]int64
	// Reason says why the attempt aborted (Aborted only).
	Reason string
	// FlippedAt is when the attempt flipped (Flipped only).
	FlippedAt time.Time
	// HoldDuration is how long produce was held: until the flip or the
	// abort. Zero while holding.
	HoldDuration time.Duration
}

// HoldsProduce reports whether new produce requests for the topic must be
// queued now.
func (c Cutover) HoldsProduce() bool {
	return c.State == Holding || c.State == Draining
}

// Deadline returns when a Tick aborts the attempt under p (HeldSince plus
// max_hold), and false when nothing is held. The controller arms a timer for
// it.
func (c Cutover) Deadline(p Policy) (time.Time, bool) {
	if !c.HoldsProduce() {
		return time.Time{}, false
	}
	return c.HeldSince.Add(p.maxHold()), true
}

// HeldFrom is c with its hold starting at now. The controller lets the
// copy catch up before it holds produce (control's approach), and the
// hold, which max_hold bounds, starts when produce is held.
func (c Cutover) HeldFrom(now time.Time) Cutover {
	if c.State == Holding {
		c.HeldSince = now
	}
	return c
}

// Event is something that happened to a cutover: one of RouteChanged,
// InFlightDrained, Replicated, Tick, Failed and RouteReverted.
type Event interface {
	fmt.Stringer
	event()
}

// RouteChanged: a reload asks for the move From → To (start an attempt).
type RouteChanged struct{}

// InFlightDrained: every produce request sent to From before the hold has
// been answered; Ends are From's end offsets per partition right after.
type InFlightDrained struct{ Ends map[int32]int64 }

// Replicated: the replicator has copied what ActionWaitReplicated asked for
// (and the controller has recorded the flip: a Flipped state is durable).
type Replicated struct{}

// Tick: time passed. The time is Step's now argument.
type Tick struct{}

// Failed: the attempt cannot finish (target unreachable, topic mismatch,
// replication stopped, ...).
type Failed struct{ Reason string }

// RouteReverted: a reload put the route back to From.
type RouteReverted struct{}

func (RouteChanged) event()    {}
func (InFlightDrained) event() {}
func (Replicated) event()      {}
func (Tick) event()            {}
func (Failed) event()          {}
func (RouteReverted) event()   {}

func (RouteChanged) String() string    { return "route changed" }
func (InFlightDrained) String() string { return "in-flight drained" }
func (Replicated) String() string      { return "replicated" }
func (Tick) String() string            { return "tick" }
func (e Failed) String() string        { return fmt.Sprintf("failed (%s)", e.Reason) }
func (RouteReverted) String() string   { return "route reverted" }

// Action is something the controller must do for the cutover's topic, in the
// order Step returns them.
type Action interface {
	fmt.Stringer
	action()
}

// ActionHoldProduce: queue every new produce request for the topic, per
// connection in arrival order (responses keep request order; other topics
// keep flowing).
type ActionHoldProduce struct{}

// ActionDrainInFlight: wait until the produce requests for the topic already
// sent to From are answered, read From's end offsets, then send
// InFlightDrained with them.
type ActionDrainInFlight struct{ From config.Cluster }

// ActionWaitReplicated: wait until the topic is copied From → To up to Ends
// (per partition, From's offsets), then send Replicated.
type ActionWaitReplicated struct {
	From, To config.Cluster
	Ends     map[int32]int64
}

// ActionFlipRoute: route the topic's produce requests to To from now on.
type ActionFlipRoute struct{ To config.Cluster }

// ActionReleaseHeld: send the held produce requests to To, in their order,
// and stop holding.
type ActionReleaseHeld struct{ To config.Cluster }

// ActionStartReverseReplication: the topic's writes now land on Src; start
// copying it Src → Dst (and stop Dst → Src) so that flipping back loses
// nothing.
type ActionStartReverseReplication struct{ Src, Dst config.Cluster }

// ActionKeepRoute: the attempt ended without a flip; keep serving the topic's
// produce from Cluster even though the config may say otherwise.
type ActionKeepRoute struct{ Cluster config.Cluster }

func (ActionHoldProduce) action()             {}
func (ActionDrainInFlight) action()           {}
func (ActionWaitReplicated) action()          {}
func (ActionFlipRoute) action()               {}
func (ActionReleaseHeld) action()             {}
func (ActionStartReverseReplication) action() {}
func (ActionKeepRoute) action()               {}

func (ActionHoldProduce) String() string { return "hold produce" }
func (a ActionDrainInFlight) String() string {
	return fmt.Sprintf("drain in-flight produce to %s", a.From)
}
func (a ActionWaitReplicated) String() string {
	return fmt.Sprintf("wait until %s→%s replicated to %s", a.From, a.To, formatEnds(a.Ends))
}
func (a ActionFlipRoute) String() string { return fmt.Sprintf("flip produce to %s", a.To) }
func (a ActionReleaseHeld) String() string {
	return fmt.Sprintf("release held produce to %s", a.To)
}
func (a ActionStartReverseReplication) String() string {
	return fmt.Sprintf("start replication %s→%s", a.Src, a.Dst)
}
func (a ActionKeepRoute) String() string {
	return fmt.Sprintf("keep produce on %s", a.Cluster)
}

// formatEnds writes ends as {p:offset ...} in partition order.
func formatEnds(ends map[int32]int64) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range slices.Sorted(maps.Keys(ends)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", p, ends[p])
	}
	b.WriteByte('}')
	return b.String()
}

// TransitionError is the error of an event that is illegal in the cutover's
// state. The controller may see one for a late event (a Replicated after the hold
// timed out) and can ignore it; the cutover is unchanged.
type TransitionError struct {
	Topic   string
	From    State   // the cutover's state
	To      State   // the state the event leads to where it is legal
	Event   Event   // the event
	LegalIn []State // the states in which the event is legal
}

func (e *TransitionError) Error() string {
	legal := make([]string, len(e.LegalIn))
	for i, s := range e.LegalIn {
		legal[i] = s.String()
	}
	return fmt.Sprintf("routing: cutover of %q: illegal transition %s → %s on %s (legal only in %s)",
		e.Topic, e.From, e.To, e.Event, strings.Join(legal, ", "))
}

// Step applies ev to c at time now under policy p and returns the new
// cutover and the actions the controller must perform, in order. On error c
// is returned unchanged with no actions. The rules, by state:
//
//	steady + route changed            → holding  [hold produce, drain in-flight]
//	holding + in-flight drained       → draining [wait replicated to Ends]; FrozenEnds = Ends
//	draining + replicated             → flipped  [flip route, release held to To,
//	                                              start reverse replication To → From]
//	  reverse only if p.ReverseReplication
//	holding, draining + tick          → aborted  [release held to From, keep route]
//	  only when now - HeldSince > max_hold; reason "hold exceeded max_hold (5s) while holding"
//	holding, draining + failed        → aborted  [release held to From, keep route]; reason: the event's
//	holding, draining + route reverted → aborted [release held to From, keep route]; reason "route reverted"
//	flipped + route reverted          → rollback: a new attempt with From and To swapped,
//	                                    as steady + route changed
//	aborted + route changed           → a new attempt, as steady + route changed
//	aborted + route reverted          → steady   []  (config and traffic agree again)
//	any other tick                    → unchanged []
//
// Everything else is an illegal transition: a *TransitionError naming both
// states and the event.
//
// Fetch routes are not cutovers: a consumer cannot lose or duplicate a
// record by fetching elsewhere, only see it later, so the controller moves a
// fetch route without a hold onto any cluster that holds the topic's
// records with a map.
//
// max_hold is checked on Tick only: an InFlightDrained or Replicated that
// arrives before the Tick that would abort still counts (the flip releases the
// held requests as quickly as an abort would). Deadline says when to Tick.
func Step(c Cutover, ev Event, now time.Time, p Policy) (Cutover, []Action, error) {
	if ev == nil {
		return c, nil, fmt.Errorf("routing: cutover of %q: nil event", c.Topic)
	}
	if _, ok := ev.(Tick); ok {
		return tick(c, now, p)
	}
	switch c.State {
	case Steady:
		if _, ok := ev.(RouteChanged); ok {
			return start(c, now)
		}
	case Holding:
		switch ev := ev.(type) {
		case InFlightDrained:
			return drained(c, ev)
		case Failed:
			return abort(c, now, reasonOr(ev.Reason, "failed")), abortActions(c), nil
		case RouteReverted:
			return abort(c, now, "route reverted"), abortActions(c), nil
		}
	case Draining:
		switch ev := ev.(type) {
		case Replicated:
			return flip(c, now, p)
		case Failed:
			return abort(c, now, reasonOr(ev.Reason, "failed")), abortActions(c), nil
		case RouteReverted:
			return abort(c, now, "route reverted"), abortActions(c), nil
		}
	case Flipped:
		if _, ok := ev.(RouteReverted); ok {
			back := c
			back.From, back.To = c.To, c.From
			return start(back, now)
		}
	case Aborted:
		switch ev.(type) {
		case RouteChanged:
			return start(c, now)
		case RouteReverted:
			return Cutover{Topic: c.Topic, From: c.From, To: c.To, State: Steady}, nil, nil
		}
	default:
		return c, nil, fmt.Errorf("routing: cutover of %q: unknown %v", c.Topic, c.State)
	}
	return c, nil, illegal(c, ev)
}

// illegal builds the error of an event c's state does not accept.
func illegal(c Cutover, ev Event) error {
	e := &TransitionError{Topic: c.Topic, From: c.State, Event: ev}
	switch ev.(type) {
	case RouteChanged:
		e.To, e.LegalIn = Holding, []State{Steady, Aborted}
	case InFlightDrained:
		e.To, e.LegalIn = Draining, []State{Holding}
	case Replicated:
		e.To, e.LegalIn = Flipped, []State{Draining}
	case Failed:
		e.To, e.LegalIn = Aborted, []State{Holding, Draining}
	case RouteReverted:
		e.To, e.LegalIn = Aborted, []State{Holding, Draining, Flipped, Aborted}
	}
	return e
}

// start begins an attempt of c at now: produce is held from now on.
func start(c Cutover, now time.Time) (Cutover, []Action, error) {
	if err := c.validate(); err != nil {
		return c, nil, err
	}
	n := Cutover{Topic: c.Topic, From: c.From, To: c.To, State: Holding, StartedAt: now, HeldSince: now}
	return n, []Action{ActionHoldProduce{}, ActionDrainInFlight{From: c.From}}, nil
}

// validate checks what an attempt needs: a topic and two different valid
// clusters.
func (c Cutover) validate() error {
	var errs []error
	if c.Topic == "" {
		errs = append(errs, errors.New("empty topic"))
	}
	if !c.From.Valid() || !c.To.Valid() || c.From == c.To {
		errs = append(errs, fmt.Errorf("from %q to %q: want source→target or target→source", c.From, c.To))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("routing: cutover of %q cannot start: %w", c.Topic, err)
	}
	return nil
}

// drained records the frozen end offsets and moves holding → draining.
func drained(c Cutover, ev InFlightDrained) (Cutover, []Action, error) {
	if len(ev.Ends) == 0 {
		return c, nil, fmt.Errorf("routing: cutover of %q: in-flight drained without end offsets", c.Topic)
	}
	for p, off := range ev.Ends {
		if p < 0 || off < 0 {
			return c, nil, fmt.Errorf("routing: cutover of %q: in-flight drained with partition %d end offset %d", c.Topic, p, off)
		}
	}
	n := c
	n.State = Draining
	n.FrozenEnds = maps.Clone(ev.Ends)
	return n, []Action{ActionWaitReplicated{From: c.From, To: c.To, Ends: maps.Clone(ev.Ends)}}, nil
}

// flip completes the attempt: draining → flipped.
func flip(c Cutover, now time.Time, p Policy) (Cutover, []Action, error) {
	n := c
	n.State = Flipped
	n.FlippedAt = now
	n.HoldDuration = now.Sub(c.HeldSince)
	acts := []Action{ActionFlipRoute{To: c.To}, ActionReleaseHeld{To: c.To}}
	if p.ReverseReplication {
		acts = append(acts, ActionStartReverseReplication{Src: c.To, Dst: c.From})
	}
	return n, acts, nil
}

// tick aborts a hold that has run past max_hold and otherwise changes nothing.
func tick(c Cutover, now time.Time, p Policy) (Cutover, []Action, error) {
	deadline, ok := c.Deadline(p)
	if !ok || !now.After(deadline) {
		return c, nil, nil
	}
	reason := fmt.Sprintf("hold exceeded max_hold (%s) while %s", p.maxHold(), c.State)
	return abort(c, now, reason), abortActions(c), nil
}

// abort ends the attempt without a flip.
func abort(c Cutover, now time.Time, reason string) Cutover {
	n := c
	n.State = Aborted
	n.Reason = reason
	n.HoldDuration = now.Sub(c.HeldSince)
	return n
}

// abortActions is what the controller does when c's attempt aborts.
func abortActions(c Cutover) []Action {
	return []Action{ActionReleaseHeld{To: c.From}, ActionKeepRoute{Cluster: c.From}}
}

func reasonOr(reason, fallback string) string {
	if reason == "" {
		return fallback
	}
	return reason
}
