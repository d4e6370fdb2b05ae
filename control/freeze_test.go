package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/proxy"
)

// freezingEnds is a home read with one freeze per drain round; its
// separate lookups fail, so a drain that uses them fails.
type freezingEnds struct {
	rounds []frozenHome // answered in order; the last one repeats
	frozen int
	notes  []map[int32][]proxy.ProducerState
	capped map[int32]int64
}

var errSeparateLookup = errors.New("a separate lookup: the drain should have frozen in one round trip")

func (e *freezingEnds) Ends(context.Context, string, string, bool) (map[int32]int64, error) {
	return nil, errSeparateLookup
}

func (e *freezingEnds) Producers(context.Context, string, string) (map[int32][]proxy.ProducerState, error) {
	return nil, errSeparateLookup
}

func (e *freezingEnds) Freeze(context.Context, string, string) (*frozenHome, error) {
	fh := e.rounds[min(e.frozen, len(e.rounds)-1)]
	e.frozen++
	return &fh, nil
}

// freezeGate has nothing in flight and keeps the drain's note and cap.
type freezeGate struct {
	produceGate
	e *freezingEnds
}

func (freezeGate) WaitProduceIdle(context.Context, string) error { return nil }
func (freezeGate) WaitTxnIdle(context.Context, string) error     { return nil }
func (g freezeGate) CapFetch(_, _ string, ends map[int32]int64)  { g.e.capped = maps.Clone(ends) }
func (g freezeGate) KeepOldHomeProducers(_, _ string, parts map[int32][]proxy.ProducerState) error {
	g.e.notes = append(g.e.notes, parts)
	return nil
}

func drainWith(t *testing.T, e *freezingEnds) map[int32]int64 {
	t.Helper()
	c := &cutovers{log: hclog.NewNullLogger(), gate: freezeGate{e: e}, ends: e}
	ends, err := c.drainInFlight(context.Background(), "t", proxy.Source, newPhaseTimer())
	if err != nil {
		t.Fatal(err)
	}
	return ends
}

// A settled home is frozen with one freeze (one round trip to each
// leader): ends, stable ends, producers and ends again together, and
// nothing looked up one after the other.
func TestDrainFreezesTheHomeInOneRoundTrip(t *testing.T) {
	prods := map[int32][]proxy.ProducerState{0: {{ID: 5, LastSequence: 9}}, 1: nil}
	e := &freezingEnds{rounds: []frozenHome{{ends: map[int32]int64{0: 10, 1: 20}, stable: map[int32]int64{0: 10, 1: 20},
		after: map[int32]int64{0: 10, 1: 20}, producers: prods}}}
	ends := drainWith(t, e)
	if fmt.Sprint(ends) != "map[0:10 1:20]" || e.frozen != 1 {
		t.Fatalf("ends %v after %d freezes; want map[0:10 1:20] after one", ends, e.frozen)
	}
	if len(e.notes) != 1 || fmt.Sprint(e.notes[0]) != fmt.Sprint(prods) || fmt.Sprint(e.capped) != "map[0:10 1:20]" {
		t.Fatalf("notes %v, reads capped at %v; want the freeze's producers noted once and reads capped at the ends", e.notes, e.capped)
	}
}

// The freeze keeps the separate lookups' exactness (decision 008): a
// record landing between the first ends and the producers (a killed
// kproxy's late write) freezes again, and only a state described between
// two equal listings is noted; an open transaction's pending marker
// (stable ends below the ends) waits until it is written.
func TestDrainFreezesAgainUntilTheEndsAgreeAroundTheProducers(t *testing.T) {
	e := &freezingEnds{rounds: []frozenHome{
		// a transaction's marker not written yet
		{ends: map[int32]int64{0: 10}, stable: map[int32]int64{0: 7}, after: map[int32]int64{0: 10},
			producers: map[int32][]proxy.ProducerState{0: {{ID: 5, LastSequence: 8}}}},
		// a late write lands around the producers
		{ends: map[int32]int64{0: 11}, stable: map[int32]int64{0: 11}, after: map[int32]int64{0: 12},
			producers: map[int32][]proxy.ProducerState{0: {{ID: 5, LastSequence: 9}}}},
		{ends: map[int32]int64{0: 12}, stable: map[int32]int64{0: 12}, after: map[int32]int64{0: 12},
			producers: map[int32][]proxy.ProducerState{0: {{ID: 5, LastSequence: 10}}}},
	}}
	ends := drainWith(t, e)
	if fmt.Sprint(ends) != "map[0:12]" || e.frozen != 3 {
		t.Fatalf("ends %v after %d freezes; want map[0:12] after three", ends, e.frozen)
	}
	if len(e.notes) != 1 || fmt.Sprint(e.notes[0]) != "map[0:[{5 0 10}]]" {
		t.Fatalf("notes %v; want only the state described with the ends unchanged around it (last sequence 10)", e.notes)
	}
}

// failingFreeze cannot freeze (no connection, a broker without
// DescribeProducers): the drain looks the ends up one after the other.
type failingFreeze struct{ *shiftingEnds }

func (failingFreeze) Freeze(context.Context, string, string) (*frozenHome, error) {
	return nil, errors.New("broker without DescribeProducers")
}

func TestDrainFallsBackToSeparateLookupsWhenTheFreezeFails(t *testing.T) {
	e := &shiftingEnds{}
	c := &cutovers{log: hclog.NewNullLogger(), gate: idleGate{e: e}, ends: failingFreeze{e}}
	ends, err := c.drainInFlight(context.Background(), "t", proxy.Source, newPhaseTimer())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ends) != "map[0:12]" || len(e.notes) != 1 || fmt.Sprint(e.notes[0]) != "map[0:[{5 0 10}]]" {
		t.Fatalf("ends %v, notes %v; want the separate lookups' result (12, last sequence 10)", ends, e.notes)
	}
}
