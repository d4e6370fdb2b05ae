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

	answered := func(ref brokerRef, k partKey) bool { _, ok := asked.answered(ref, k); return ok }
	keys := func(entries []int) []partKey {
		var out []partKey
		for _, e := range entries {
			out = append(out, asked.key(e))
		}
		return out
	}
	if e, ok := asked.answered(a, p0); !ok || e != 0 || answered(a, partKey{topic: "y"}) {
		t.Fatal("an asked partition must be taken (the first entry naming it), one never asked refused")
	}
	missing := keys(asked.missing(a))
	if len(missing) != 2 || missing[0] != p1 || missing[1] != p0 {
		t.Fatalf("missing %v, want x/1 and the second x/0, in request order", missing)
	}
	if answered(a, p0) || len(asked.missing(a)) != 0 {
		t.Fatal("a partition reported missing must not be answered again")
	}

	answered(b, p0)
	asked.failed(b) // the answer turned out unusable as a whole
	if m := keys(asked.missing(b)); len(m) != 1 || m[0] != p0 {
		t.Fatalf("after a failure, missing %v, want x/0", m)
	}
}
