package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

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

// A raw produce's answer goes to the client byte for byte only when the
// translation steps would change nothing in it; each case here would be
// wrong to pass through.
func TestProduceAnswerAsIsOnlyWhenNothingChanges(t *testing.T) {
	ref := brokerRef{cluster: Source, id: 1}
	var asked partsAsked
	plans := []producePlan{{}, {}}
	asked.ask(ref, partKey{topic: "x", partition: 0})
	asked.ask(ref, partKey{topic: "x", partition: 1})
	answer := func(edit func(*kmsg.ProduceResponse)) *kmsg.ProduceResponse {
		pr := kmsg.NewPtrProduceResponse()
		pr.Version = 10
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = "x"
		for p := int32(0); p < 2; p++ {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p
			rt.Partitions = append(rt.Partitions, rp)
		}
		pr.Topics = []kmsg.ProduceResponseTopic{rt}
		if edit != nil {
			edit(pr)
		}
		return pr
	}
	if !produceAnswerAsIs(answer(nil), &asked, plans) {
		t.Fatal("an exact, error-free answer with identity plans must pass through")
	}
	for name, edit := range map[string]func(*kmsg.ProduceResponse){
		"partition left out": func(pr *kmsg.ProduceResponse) { pr.Topics[0].Partitions = pr.Topics[0].Partitions[:1] },
		"out of order": func(pr *kmsg.ProduceResponse) {
			pr.Topics[0].Partitions[0].Partition, pr.Topics[0].Partitions[1].Partition = 1, 0
		},
		"error":       func(pr *kmsg.ProduceResponse) { pr.Topics[0].Partitions[1].ErrorCode = 6 },
		"leader hint": func(pr *kmsg.ProduceResponse) { pr.Topics[0].Partitions[0].CurrentLeader.LeaderID = 3 },
		"endpoints":   func(pr *kmsg.ProduceResponse) { pr.Brokers = []kmsg.ProduceResponseBroker{{NodeID: 3}} },
	} {
		if produceAnswerAsIs(answer(edit), &asked, plans) {
			t.Errorf("%s: passed through; the client would see upstream state", name)
		}
	}
}
