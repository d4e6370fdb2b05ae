package proxy

import "testing"

// The bookkeeping behind "every requested partition is answered": a
// partition asked twice must be answered twice, an answer for a partition
// not asked is refused, and a failed leader leaves everything it was asked
// as missing.
func TestPartsAskedFindsWhatAnAnswerLeftOut(t *testing.T) {
	a, b := brokerRef{cluster: Source, id: 1}, brokerRef{cluster: Target, id: 2}
	var asked partsAsked
	p0, p1 := partKey{topic: "x", partition: 0}, partKey{topic: "x", partition: 1}
	asked.ask(a, p0)
	asked.ask(a, p1)
	asked.ask(a, p0) // the client named it twice
	asked.ask(b, p0)
	if len(asked.order) != 2 || asked.order[0] != a || asked.order[1] != b {
		t.Fatalf("order %v, want the leaders in request order", asked.order)
	}

	if !asked.answered(a, p0) || asked.answered(a, partKey{topic: "y"}) {
		t.Fatal("an asked partition must be taken, one never asked refused")
	}
	missing := asked.missing(a)
	if len(missing) != 2 || missing[0] != p0 || missing[1] != p1 {
		t.Fatalf("missing %v, want the second x/0 and x/1, in request order", missing)
	}
	if asked.answered(a, p0) || len(asked.missing(a)) != 0 {
		t.Fatal("a partition reported missing must not be answered again")
	}

	asked.answered(b, p0)
	asked.failed(b) // the answer turned out unusable as a whole
	if m := asked.missing(b); len(m) != 1 || m[0] != p0 {
		t.Fatalf("after a failure, missing %v, want x/0", m)
	}
}
