package checker

import (
	"fmt"
	"strings"
	"testing"
)

// history builds n acks on topic t over the given partitions (round robin) and
// the matching in-order consumption by one consumer.
func history(client string, parts int32, n int) ([]Ack, []Consumed) {
	var acks []Ack
	next := map[int32]int64{}
	for i := 0; i < n; i++ {
		p := int32(i) % parts
		acks = append(acks, Ack{Client: client, Topic: "t", Partition: p, Offset: next[p],
			Key: fmt.Sprintf("k-%d", i), Value: fmt.Sprintf("%s-0-%d", client, i)})
		next[p]++
	}
	return acks, consume("c1", acks)
}

func consume(consumer string, acks []Ack) []Consumed {
	var out []Consumed
	for _, a := range acks {
		out = append(out, Consumed{Client: a.Client, Consumer: consumer, Topic: a.Topic,
			Partition: a.Partition, Offset: a.Offset, Key: a.Key, Value: a.Value})
	}
	return out
}

func strict() Options { return Options{ExpectAll: true} }

// expect compares the non-zero counters of r with want and checks OK().
func expect(t *testing.T, r Report, ok bool, want Counts) {
	t.Helper()
	got := r.Counts
	got.Acked, got.Consumed = 0, 0
	want.Acked, want.Consumed = 0, 0
	if got != want {
		t.Errorf("counts = %+v, want %+v\n%s", got, want, r.Details())
	}
	if r.OK() != ok {
		t.Errorf("OK() = %v, want %v\n%s", r.OK(), ok, r.Details())
	}
}

func TestCleanSinglePartition(t *testing.T) {
	acks, cons := history("sarama", 1, 500)
	r := Check(acks, cons, strict())
	expect(t, r, true, Counts{})
	if r.Acked != 500 || r.Consumed != 500 {
		t.Fatalf("acked %d consumed %d", r.Acked, r.Consumed)
	}
	if len(r.Examples) != 0 {
		t.Fatalf("examples on a clean history: %v", r.Examples)
	}
}

func TestCleanManyPartitionsManyConsumers(t *testing.T) {
	acks, _ := history("franz", 3, 300)
	// Partition 0 and 1 to consumer a, partition 2 to consumer b, consumed
	// interleaved across partitions, in order within each.
	var cons []Consumed
	for _, a := range acks {
		c := "a"
		if a.Partition == 2 {
			c = "b"
		}
		cons = append(cons, consume(c, []Ack{a})...)
	}
	r := Check(acks, cons, strict())
	expect(t, r, true, Counts{})
	if len(r.Partitions) != 3 || r.Partitions[2].Acked != 100 || r.Partitions[2].Consumed != 100 {
		t.Fatalf("partitions: %+v", r.Partitions)
	}
}

func TestCleanSplitAcrossRuns(t *testing.T) {
	// Two consume runs of one group: the second resumes where the first
	// committed.
	acks, cons := history("kafkajs", 1, 600)
	cons1, cons2 := cons[:500], cons[500:]
	for i := range cons2 {
		cons2[i].Consumer = "run2"
	}
	r := Check(acks, append(cons1, cons2...), Options{ExpectAll: true, RequireAcked: true})
	expect(t, r, true, Counts{})
}

func TestString(t *testing.T) {
	acks, cons := history("rdkafka", 2, 3000)
	r := Check(acks, cons, strict())
	want := "acked 3000, consumed 3000, lost 0, duplicated 0, gaps 0, out of order 0, inconsistent 0, mismatched 0: OK"
	if r.String() != want {
		t.Fatalf("String() = %q\nwant       %q", r.String(), want)
	}
	r = Check(acks, cons[:10], Options{})
	if !strings.Contains(r.String(), "lost n/a") || !r.OK() {
		t.Fatalf("partial without ExpectAll: %s", r)
	}
	r = Check(acks, cons[1:], strict())
	if !strings.HasSuffix(r.String(), ": FAIL") || !strings.Contains(r.String(), "lost 1,") {
		t.Fatalf("lost one: %s", r)
	}
}

func TestLost(t *testing.T) {
	acks, cons := history("sarama", 2, 100)
	// Drop the last record of partition 1 (offset 49): lost, not a gap.
	var kept []Consumed
	for _, c := range cons {
		if c.Partition == 1 && c.Offset == 49 {
			continue
		}
		kept = append(kept, c)
	}
	r := Check(acks, kept, strict())
	expect(t, r, false, Counts{Lost: 1})
	if r.Partitions[1].Lost != 1 || r.Partitions[0].Lost != 0 {
		t.Fatalf("lost attributed wrongly: %+v", r.Partitions)
	}
	if len(r.Examples) != 1 || !strings.Contains(r.Examples[0], "lost") || !strings.Contains(r.Examples[0], "t[1] offset 49") {
		t.Fatalf("examples: %v", r.Examples)
	}
	// Without ExpectAll a consumer that stopped early is fine.
	expect(t, Check(acks, kept, Options{}), true, Counts{})
}

func TestNothingConsumed(t *testing.T) {
	acks, _ := history("sarama", 1, 10)
	expect(t, Check(acks, nil, strict()), false, Counts{Lost: 10})
}

func TestGap(t *testing.T) {
	acks, cons := history("sarama", 1, 10)
	kept := append(append([]Consumed{}, cons[:4]...), cons[5:]...) // skip offset 4
	r := Check(acks, kept, strict())
	expect(t, r, false, Counts{Lost: 1, Gaps: 1})
	// A gap is an anomaly even when not everything had to be consumed.
	expect(t, Check(acks, kept, Options{}), false, Counts{Gaps: 1})
}

func TestGapOnlyForAckedOffsets(t *testing.T) {
	// Offsets 3 and 4 were never acked (a transaction marker, an aborted
	// batch, a failed send): skipping them is not a gap.
	acks, cons := history("sarama", 1, 10)
	acks = append(acks[:3], acks[5:]...)
	cons = append(cons[:3], cons[5:]...)
	expect(t, Check(acks, cons, strict()), true, Counts{})
}

func TestRedelivery(t *testing.T) {
	acks, cons := history("sarama", 1, 10)
	// A second consumer of the group re-reads offsets 5..9 (e.g. the first
	// one never committed them).
	again := consume("c2", acks[5:])
	r := Check(acks, append(cons, again...), strict())
	expect(t, r, false, Counts{Redelivered: 5})
	if r.Duplicated() != 5 || !strings.Contains(r.String(), "duplicated 5") {
		t.Fatalf("duplicated: %s", r)
	}
	// At-least-once allowed: counted but OK.
	expect(t, Check(acks, append(cons, again...), Options{ExpectAll: true, AllowRedelivery: true}), true, Counts{Redelivered: 5})
}

func TestRedeliveryAfterRebalanceIsNotOutOfOrder(t *testing.T) {
	acks, cons := history("sarama", 1, 10)
	again := consume("c1", acks[5:])
	for i := range again {
		again[i].Epoch = 1
	}
	expect(t, Check(acks, append(cons, again...), strict()), false, Counts{Redelivered: 5})
	// Without the rebalance the rewind is also out of order.
	again = consume("c1", acks[5:])
	expect(t, Check(acks, append(cons, again...), strict()), false, Counts{Redelivered: 5, OutOfOrder: 1})
	// A second run (another stream) under the same consumer name is another
	// consumer.
	for i := range again {
		again[i].Stream = "run2.jsonl"
	}
	expect(t, Check(acks, append(cons, again...), strict()), false, Counts{Redelivered: 5})
}

func TestDuplicateValue(t *testing.T) {
	// A non-idempotent retry wrote value v-3 twice, at offsets 3 and 4; the
	// producer saw one ack (offset 4).
	var acks []Ack
	var cons []Consumed
	for i := int64(0); i < 6; i++ {
		v := fmt.Sprintf("v-%d", i)
		if i >= 4 {
			v = fmt.Sprintf("v-%d", i-1)
		}
		if i != 3 {
			acks = append(acks, Ack{Topic: "t", Offset: i, Value: v})
		}
		cons = append(cons, Consumed{Consumer: "c", Topic: "t", Offset: i, Value: v})
	}
	r := Check(acks, cons, strict())
	expect(t, r, false, Counts{DuplicateValues: 1, Unacked: 1})
	if !strings.Contains(r.String(), "duplicated 1") {
		t.Fatalf("%s", r)
	}
}

func TestDuplicateValueAcrossPartitions(t *testing.T) {
	acks := []Ack{{Topic: "t", Partition: 0, Offset: 0, Value: "x"}, {Topic: "t", Partition: 1, Offset: 0, Value: "x"}}
	expect(t, Check(acks, consume("c", acks), strict()), false, Counts{DuplicateValues: 1})
	// The same value in two different topics is fine.
	acks[1].Topic = "u"
	expect(t, Check(acks, consume("c", acks), strict()), true, Counts{})
}

func TestEmptyValuesAreNotDuplicates(t *testing.T) {
	acks := []Ack{{Topic: "t", Offset: 0}, {Topic: "t", Offset: 1}}
	expect(t, Check(acks, consume("c", acks), strict()), true, Counts{})
	expect(t, Check(acks, consume("c", acks[:1]), strict()), false, Counts{Lost: 1})
}

func TestOutOfOrder(t *testing.T) {
	acks, cons := history("kafkago", 1, 10)
	cons[3], cons[4] = cons[4], cons[3]
	r := Check(acks, cons, strict())
	expect(t, r, false, Counts{OutOfOrder: 1})
	if !strings.Contains(r.Examples[0], "offset 3 after offset 4") {
		t.Fatalf("examples: %v", r.Examples)
	}
}

func TestOrderIsPerConsumerAndPartition(t *testing.T) {
	acks, _ := history("kafkago", 2, 20)
	// Consumer a reads partition 1 first, then partition 0: fine.
	var cons []Consumed
	for _, p := range []int32{1, 0} {
		for _, a := range acks {
			if a.Partition == p {
				cons = append(cons, consume("a", []Ack{a})...)
			}
		}
	}
	expect(t, Check(acks, cons, strict()), true, Counts{})
	// Two consumers (e.g. before and after a rebalance) may each read a
	// part of one partition, in any interleaving, without anomaly.
	cons = append(consume("b", acks[10:]), consume("a", acks[:10])...)
	expect(t, Check(acks, cons, strict()), true, Counts{})
}

func TestInconsistentConsumers(t *testing.T) {
	// Two consumers saw different values at the same unacked offset.
	cons := []Consumed{
		{Consumer: "a", Topic: "t", Offset: 0, Value: "x"},
		{Consumer: "b", Topic: "t", Offset: 0, Value: "y"},
	}
	expect(t, Check(nil, cons, Options{AllowRedelivery: true}), false, Counts{Redelivered: 1, Inconsistent: 1, Unacked: 1})
}

func TestInconsistentAcks(t *testing.T) {
	// Two producers were told the same offset for different records.
	acks := []Ack{
		{Client: "p1", Topic: "t", Offset: 7, Value: "x"},
		{Client: "p2", Topic: "t", Offset: 7, Value: "y"},
	}
	r := Check(acks, nil, Options{})
	expect(t, r, false, Counts{Inconsistent: 1})
	if r.Acked != 2 {
		t.Fatalf("acked %d", r.Acked)
	}
	// The same ack reported twice is not an anomaly and counts once.
	r = Check([]Ack{acks[0], acks[0]}, nil, Options{})
	expect(t, r, true, Counts{})
	if r.Acked != 1 {
		t.Fatalf("acked %d", r.Acked)
	}
}

func TestMismatch(t *testing.T) {
	acks, cons := history("sarama", 1, 5)
	cons[2].Value = "something-else"
	r := Check(acks, cons, strict())
	expect(t, r, false, Counts{Mismatched: 1, Inconsistent: 1, Lost: 1})
	if !strings.Contains(r.String(), "mismatched 1") {
		t.Fatalf("%s", r)
	}
}

func TestOffByOneAcks(t *testing.T) {
	// A proxy that reports offset-1 to producers: every record is consumed,
	// but at a different offset than acked.
	acks, cons := history("sarama", 1, 5)
	for i := range acks {
		acks[i].Offset--
	}
	r := Check(acks, cons, strict())
	// Offsets 0..3 carry another value than acked, the record acked at -1
	// is at 0, 4 was never acked, and all 5 records moved.
	expect(t, r, false, Counts{Mismatched: 4, Inconsistent: 4, Moved: 5, Unacked: 1})
}

func TestUnacked(t *testing.T) {
	acks, cons := history("sarama", 1, 10)
	// The second consume run should have seen only the last 4 records but
	// re-read everything.
	expect(t, Check(acks[6:], cons, Options{ExpectAll: true}), true, Counts{Unacked: 6})
	expect(t, Check(acks[6:], cons, Options{ExpectAll: true, RequireAcked: true}), false, Counts{Unacked: 6})
	expect(t, Check(acks[6:], cons[6:], Options{ExpectAll: true, RequireAcked: true}), true, Counts{})
}

func TestMaxExamples(t *testing.T) {
	acks, _ := history("sarama", 1, 100)
	r := Check(acks, nil, Options{ExpectAll: true, MaxExamples: 3})
	if len(r.Examples) != 3 || r.Lost != 100 {
		t.Fatalf("examples %d lost %d", len(r.Examples), r.Lost)
	}
	r = Check(acks, nil, Options{ExpectAll: true, MaxExamples: -1})
	if len(r.Examples) != 0 {
		t.Fatalf("examples %d", len(r.Examples))
	}
	if !strings.Contains(r.Details(), "t[0]") {
		t.Fatalf("details: %s", r.Details())
	}
}
