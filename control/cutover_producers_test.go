package control

import (
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/proxy"
)

// shiftingEnds is a home whose end moves once, between the drain's first
// ends and its producer description: a killed kproxy's write landing late.
type shiftingEnds struct {
	described int
	notes     []map[int32][]proxy.ProducerState
}

func (e *shiftingEnds) Ends(_ context.Context, _, _ string, _ bool) (map[int32]int64, error) {
	if e.described == 0 {
		return map[int32]int64{0: 10}, nil
	}
	return map[int32]int64{0: 12}, nil
}

func (e *shiftingEnds) Producers(_ context.Context, _, _ string) (map[int32][]proxy.ProducerState, error) {
	e.described++
	return map[int32][]proxy.ProducerState{0: {{ID: 5, LastSequence: int32(8 + e.described)}}}, nil
}

// idleGate has nothing in flight and keeps the drain's notes.
type idleGate struct {
	produceGate
	e *shiftingEnds
}

func (g idleGate) WaitProduceIdle(context.Context, string) error { return nil }
func (g idleGate) WaitTxnIdle(context.Context, string) error     { return nil }
func (idleGate) CapFetch(string, string, map[int32]int64)        {}

func (g idleGate) KeepOldHomeProducers(_, _ string, parts map[int32][]proxy.ProducerState) error {
	g.e.notes = append(g.e.notes, parts)
	return nil
}

// The drain's frozen ends and the producer state it notes for resends
// (decision 008) describe the same records: a record that lands between
// the ends and the description sends the drain round again, and only the
// state taken with unchanged ends around it is noted.
func TestDrainNotesProducerStateAtTheFrozenEnds(t *testing.T) {
	e := &shiftingEnds{}
	c := &cutovers{log: hclog.NewNullLogger(), gate: idleGate{e: e}, ends: e}
	ends, err := c.drainInFlight(context.Background(), "t", proxy.Source, newPhaseTimer())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ends) != "map[0:12]" || e.described != 2 {
		t.Fatalf("ends %v after %d descriptions; want the ends after the late record (12), described twice", ends, e.described)
	}
	if len(e.notes) != 1 || fmt.Sprint(e.notes[0]) != "map[0:[{5 0 10}]]" {
		t.Fatalf("notes %v; want only the state described with the ends unchanged (last sequence 10)", e.notes)
	}
}
