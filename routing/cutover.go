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
	// Steady: the topic is served from From; no attempt is running. A
	// Cutover from PlanCutovers starts here, ready for RouteChanged.
	Steady State = iota
	// Holding: new produce requests for the topic are queued inside the
	// proxy while the produce requests already sent to From finish.
	Holding
	// Draining: waiting until the replicator has copied From → To up to the
	// frozen end offsets (or, for a fetch-only cutover, until it caught up).
	Draining
	// Flipped: the topic's Scope is served from To.
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

// Scope is which of a topic's routes a cutover moves.
type Scope int

// The scopes. The zero Scope is ScopeBoth, the plain "orders: target" edit.
const (
	// ScopeBoth moves produce and fetch together (produce is held).
	ScopeBoth Scope = iota
	// ScopeProduce moves produce only, producers first (produce is held).
	ScopeProduce
	// ScopeFetch moves fetch only, consumers first or back; nothing is held.
	ScopeFetch
)

func (s Scope) String() string {
	switch s {
	case ScopeBoth:
		return "produce+fetch"
	case ScopeProduce:
		return "produce"
	case ScopeFetch:
		return "fetch"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Includes reports whether s moves the route of dir.
func (s Scope) Includes(dir Direction) bool {
	switch s {
	case ScopeBoth:
		return true
	case ScopeProduce:
		return dir == Produce
	case ScopeFetch:
		return dir == Fetch
	}
	return false
}

// holds reports whether a cutover of scope s holds produce requests.
func (s Scope) holds() bool { return s.Includes(Produce) }

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

// Cutover is one topic's cutover: an immutable value. Step returns a new value
// and never modifies the one it is given; do not modify FrozenEnds either.
type Cutover struct {
	// Topic is the topic being moved.
	Topic string
	// From is the cluster that serves Scope before the flip (and again after
	// an abort); To is the cluster that serves it after the flip.
	From config.Cluster
	To   config.Cluster
	// Scope is which routes move.
	Scope Scope
	// Other is where the route outside Scope goes (the fetch of a
	// ScopeProduce cutover, the produce of a ScopeFetch one); this cutover
	// does not move it. Empty for ScopeBoth.
	Other config.Cluster
	// State is where the cutover stands.
	State State
	// StartedAt is when the current attempt started (zero in Steady).
	StartedAt time.Time
	// HeldSince is when produce requests started being held; zero when the
	// attempt holds nothing (ScopeFetch).
	HeldSince time.Time
	// FrozenEnds are From's end offsets per partition once produce was held
	// and the in-flight produces drained: every acknowledged record lies
	// below them. Set from Draining on, for scopes that hold produce.
	FrozenEnds map[int32]int64
	// Reason says why the attempt aborted (Aborted only).
	Reason string
	// FlippedAt is when the attempt flipped (Flipped only).
	FlippedAt time.Time
	// HoldDuration is how long produce was held: until the flip or the
	// abort. Zero while holding and for attempts that hold nothing.
	HoldDuration time.Duration
}

// HoldsProduce reports whether new produce requests for the topic must be
// queued now.
func (c Cutover) HoldsProduce() bool {
	return (c.State == Holding || c.State == Draining) && c.Scope.holds()
}

// Deadline returns when a Tick aborts the attempt under p (HeldSince plus
// max_hold), and false when nothing is held. The proxy can arm a timer for it.
func (c Cutover) Deadline(p Policy) (time.Time, bool) {
	if !c.HoldsProduce() {
		return time.Time{}, false
	}
	return c.HeldSince.Add(p.maxHold()), true
}

// Serving returns the cluster that serves dir requests for the topic in this
// cutover's state, and false when dir is outside Scope (the new route table
// answers). It answers for consumers outside the topic's canary: a canary's
// consumers keep following the table.
func (c Cutover) Serving(dir Direction) (config.Cluster, bool) {
	if !c.Scope.Includes(dir) {
		return "", false
	}
	switch c.State {
	case Flipped:
		return c.To, true
	case Steady, Holding, Draining, Aborted:
		return c.From, true
	}
	return c.From, true
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

// Replicated: the replicator has copied what ActionWaitReplicated or
// ActionWaitCaughtUp asked for.
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

// Action is something the proxy must do for the cutover's topic, in the order
// Step returns them.
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

// ActionWaitCaughtUp: a fetch-only cutover onto the replica: read From's end
// offsets now, wait until the topic is copied From → To up to them, then send
// Replicated. Nothing is held.
type ActionWaitCaughtUp struct{ From, To config.Cluster }

// ActionFlipRoute: route the topic's Scope requests to To from now on.
type ActionFlipRoute struct {
	Scope Scope
	To    config.Cluster
}

// ActionReleaseHeld: send the held produce requests to To, in their order,
// and stop holding.
type ActionReleaseHeld struct{ To config.Cluster }

// ActionStartReverseReplication: the topic's writes now land on Src; start
// copying it Src → Dst (and stop Dst → Src) so that flipping back loses
// nothing.
type ActionStartReverseReplication struct{ Src, Dst config.Cluster }

// ActionKeepRoute: the attempt ended without a flip; keep serving the topic's
// Scope from Cluster even though the config may say otherwise.
type ActionKeepRoute struct {
	Scope   Scope
	Cluster config.Cluster
}

func (ActionHoldProduce) action()             {}
func (ActionDrainInFlight) action()           {}
func (ActionWaitReplicated) action()          {}
func (ActionWaitCaughtUp) action()            {}
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
func (a ActionWaitCaughtUp) String() string {
	return fmt.Sprintf("wait until %s→%s caught up", a.From, a.To)
}
func (a ActionFlipRoute) String() string { return fmt.Sprintf("flip %s to %s", a.Scope, a.To) }
func (a ActionReleaseHeld) String() string {
	return fmt.Sprintf("release held produce to %s", a.To)
}
func (a ActionStartReverseReplication) String() string {
	return fmt.Sprintf("start replication %s→%s", a.Src, a.Dst)
}
func (a ActionKeepRoute) String() string {
	return fmt.Sprintf("keep %s on %s", a.Scope, a.Cluster)
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
// state. The proxy may see one for a late event (a Replicated after the hold
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
// cutover and the actions the proxy must perform, in order. On error c is
// returned unchanged with no actions. The rules, by state:
//
//	steady + route changed:
//	  ScopeBoth, ScopeProduce         → holding  [hold produce, drain in-flight]
//	  ScopeFetch onto the replica     → draining [wait caught up]   (Other == From)
//	  ScopeFetch onto the produce log → flipped  [flip route]       (Other == To)
//	holding + in-flight drained       → draining [wait replicated to Ends]; FrozenEnds = Ends
//	draining + replicated             → flipped  [flip route, release held to To,
//	                                              start reverse replication To → From]
//	  release and reverse only when produce moves, reverse only if p.ReverseReplication
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
// "release held to From" is left out when nothing is held (ScopeFetch).
// Everything else is an illegal transition: a *TransitionError naming both
// states and the event.
//
// Why fetch-only moves hold nothing: a consumer cannot lose or duplicate a
// record by fetching elsewhere, only see it later, so consumers-first needs no
// produce hold. Fetch onto the cluster that takes the topic's produce
// (Other == To) is safe at once: that log has every record. Fetch onto the
// replica (Other == From) first waits until the replica has caught up, so
// consumers' positions are (almost) all below its end; the proxy must still
// answer a fetch beyond the replica's end with no records, never
// OFFSET_OUT_OF_RANGE. Such a wait holds nothing, so max_hold does not bound
// it: it ends by Replicated, Failed or RouteReverted.
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
			return Cutover{Topic: c.Topic, From: c.From, To: c.To, Scope: c.Scope, Other: c.Other, State: Steady}, nil, nil
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
		e.To, e.LegalIn = startState(c), []State{Steady, Aborted}
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

// startState is the state RouteChanged leads c to.
func startState(c Cutover) State {
	switch {
	case c.Scope.holds():
		return Holding
	case c.Other == c.To:
		return Flipped
	default:
		return Draining
	}
}

// start begins an attempt of c at now.
func start(c Cutover, now time.Time) (Cutover, []Action, error) {
	if err := c.validate(); err != nil {
		return c, nil, err
	}
	n := Cutover{Topic: c.Topic, From: c.From, To: c.To, Scope: c.Scope, Other: c.Other, StartedAt: now}
	n.State = startState(c)
	switch n.State {
	case Holding:
		n.HeldSince = now
		return n, []Action{ActionHoldProduce{}, ActionDrainInFlight{From: c.From}}, nil
	case Flipped:
		n.FlippedAt = now
		return n, []Action{ActionFlipRoute{Scope: c.Scope, To: c.To}}, nil
	case Draining:
		return n, []Action{ActionWaitCaughtUp{From: c.From, To: c.To}}, nil
	case Steady, Aborted: // startState never returns these
	}
	return c, nil, fmt.Errorf("routing: cutover of %q: cannot start into %v", c.Topic, n.State)
}

// validate checks what an attempt needs: two different valid clusters, a
// known scope and, for ScopeFetch, where produce goes.
func (c Cutover) validate() error {
	var errs []error
	if c.Topic == "" {
		errs = append(errs, errors.New("empty topic"))
	}
	if !c.From.Valid() || !c.To.Valid() || c.From == c.To {
		errs = append(errs, fmt.Errorf("from %q to %q: want source→target or target→source", c.From, c.To))
	}
	switch c.Scope {
	case ScopeBoth:
	case ScopeProduce:
		if !c.Other.Valid() {
			errs = append(errs, fmt.Errorf("scope produce: fetch cluster %q unknown", c.Other))
		}
	case ScopeFetch:
		if !c.Other.Valid() {
			errs = append(errs, fmt.Errorf("scope fetch: produce cluster %q unknown", c.Other))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown %v", c.Scope))
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
	acts := []Action{ActionFlipRoute{Scope: c.Scope, To: c.To}}
	if c.Scope.holds() {
		n.HoldDuration = now.Sub(c.HeldSince)
		acts = append(acts, ActionReleaseHeld{To: c.To})
		if p.ReverseReplication {
			acts = append(acts, ActionStartReverseReplication{Src: c.To, Dst: c.From})
		}
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
	if c.Scope.holds() {
		n.HoldDuration = now.Sub(c.HeldSince)
	}
	return n
}

// abortActions is what the proxy does when c's attempt aborts.
func abortActions(c Cutover) []Action {
	keep := ActionKeepRoute{Scope: c.Scope, Cluster: c.From}
	if c.Scope.holds() {
		return []Action{ActionReleaseHeld{To: c.From}, keep}
	}
	return []Action{keep}
}

func reasonOr(reason, fallback string) string {
	if reason == "" {
		return fallback
	}
	return reason
}
