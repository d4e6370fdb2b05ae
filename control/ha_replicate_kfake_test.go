package control

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
)

// copiers is which instances copy each partition of topic (by index).
func copiers(insts []*Instance, closed []bool, topic string) map[int32][]int {
	out := map[int32][]int{}
	for i, inst := range insts {
		if closed[i] {
			continue
		}
		for _, p := range inst.ctrl.Replication().Partitions {
			if p.Topic == topic && p.Partition >= 0 && !p.Fenced && !p.Fatal {
				out[p.Partition] = append(out[p.Partition], i)
			}
		}
	}
	return out
}

// Issue 14: with control and replicate, each replicated partition is
// copied by exactly one instance, the one that leads it, and the partitions
// of an instance that stops are copied on by the others from the target
// log: the target holds every source record once, in order.
func TestInstancesCopyEachPartitionOnceAndHandOver(t *testing.T) {
	const parts = 6
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(parts, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	var insts []*Instance
	closed := make([]bool, 3)
	for i := range 3 {
		listen, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(fmt.Appendf(nil, "listen: %s\nstate_dir: %s\ninstance:\n  id: kp-%d\ncontrol:\n  session_timeout: 2s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\nreplicate: [orders]\n",
			listen, t.TempDir(), i, src.ListenAddrs()[0], tgt.ListenAddrs()[0]))
		if err != nil {
			t.Fatal(err)
		}
		inst, err := Start(context.Background(), cfg, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, inst)
		t.Cleanup(func() {
			if !closed[i] {
				inst.Close()
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.DefaultProduceTopic("orders"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	want := map[int32][]string{}
	produce := func(tag string) {
		t.Helper()
		for p := int32(0); p < parts; p++ {
			for i := range 3 {
				v := fmt.Sprintf("%s-%d-%d", tag, p, i)
				if err := prod.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(v)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
				want[p] = append(want[p], v)
			}
		}
	}
	// once waits until every partition is copied by exactly one open
	// instance, up to the source's end.
	once := func() {
		t.Helper()
		for {
			cs := copiers(insts, closed, "orders")
			ok := len(cs) == parts
			for p := int32(0); p < parts && ok; p++ {
				if len(cs[p]) != 1 {
					ok = false
					break
				}
				wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				r := insts[cs[p][0]].ctrl.repl.copyInto("target")
				ok = r != nil && r.WaitCopied(wctx, "orders", p, int64(len(want[p]))) == nil
				wcancel()
			}
			if ok {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("the partitions are not each copied once to the end: %v", cs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Every instance agrees on the three before the spread is checked.
	for formed := false; !formed; time.Sleep(50 * time.Millisecond) {
		formed = true
		for _, inst := range insts {
			st := inst.insts.status()
			formed = formed && st.Formed && len(st.Members) == 3
		}
		if ctx.Err() != nil {
			t.Fatal("the three instances never agreed on a view")
		}
	}
	produce("one")
	once()
	spread := map[int]bool{}
	for _, is := range copiers(insts, closed, "orders") {
		spread[is[0]] = true
	}
	if len(spread) < 2 {
		t.Fatalf("one instance copies every partition: %v", copiers(insts, closed, "orders"))
	}

	closed[0] = true
	insts[0].Close()
	produce("two")
	once()

	tcl, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	for p := int32(0); p < parts; p++ {
		got := readTargetPartition(t, tgt.ListenAddrs(), "orders", p, len(want[p]))
		if fmt.Sprint(got) != fmt.Sprint(want[p]) {
			t.Fatalf("partition %d: the target holds %v, want %v", p, got, want[p])
		}
	}
}

// readTargetPartition reads every committed record of a target partition,
// and a moment more for anything past end (a duplicate).
func readTargetPartition(t *testing.T, addrs []string, topic string, partition int32, end int) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for len(got) < end && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	short, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	return got
}

// With control (and no replicate), a reload that changes the groups section
// moves the group through the control topic, as with several instances:
// the move is recorded there (a decision of subject group:<id>) and the
// group is routed to its new home. It was refused before group moves were
// coordinated.
func TestInstanceMovesGroupsThroughTheControlTopic(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("listen: %s\ninstance: { id: kp-0 }\ncontrol: { session_timeout: 2s }\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n", listen, src.ListenAddrs()[0], tgt.ListenAddrs()[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst := startYAML(t, ctx, []byte(base))
	defer inst.Close()
	moved, err := config.Parse([]byte(base + "groups: { default: source, orders-readers: target }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Apply(moved); err != nil {
		t.Fatalf("Apply = %v, want the group move accepted", err)
	}
	for {
		ms := inst.ctrl.GroupMoves()
		if len(ms) == 1 && ms[0].State == groupMoved && inst.ctrl.overlay.router().GroupCluster("orders-readers") == "target" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the group never moved: %+v", ms)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h := inst.coord.home(groupSubject("orders-readers")); h.Cluster != "target" || h.Gen != 1 {
		t.Fatalf("the control topic's home of the group: %+v, want the target at gen 1", h)
	}
}
