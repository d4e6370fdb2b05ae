package control

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
)

// A drain against a cluster (two brokers, partitions led by both) while
// a transaction on the topic is open: it freezes only once the
// transaction's markers are written, at the ends the cluster lists then,
// with the producer state of those ends, and it asks the brokers nothing
// but the freeze's requests: no Metadata, and per freeze and leader one
// DescribeProducers after ListOffsets for the ends and the stable ends
// and before the ends again (the separate lookups asked DescribeProducers
// once per round, after listing the ends twice at once, then the ends
// again).
func TestDrainAgainstAClusterFreezesWithoutMetadataAfterAnOpenTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := newKfake(t, kfake.NumBrokers(2), kfake.SeedTopics(4, "orders"))
	for p := range int32(4) {
		if err := src.MoveTopicPartition("orders", p, p%2); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse(fmt.Appendf(nil, "listen: 127.0.0.1:1\nclusters:\n  source: {bootstrap: [%s]}\n  target: {bootstrap: [127.0.0.1:3]}\nroutes:\n  default: source\n", src.ListenAddrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	admins := &clusterAdmins{}
	t.Cleanup(admins.close)
	ao := adminOffsets{admins: admins, cfg: cfg, leaders: &endLeaders{}, freeze: &freezeConns{}}
	t.Cleanup(ao.freeze.close)

	txn, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.TransactionalID("app"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	produce := func(n int) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			for p := range int32(4) {
				if err := txn.ProduceSync(ctx, &kgo.Record{Partition: p, Value: fmt.Append(nil, i)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	produce(3)
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	produce(2) // left open: its markers are not written yet

	ao.Warm(ctx, proxy.Source, []string{"orders"})
	leaders := map[int32]bool{}
	for _, l := range ao.leaders.get(proxy.Source, "orders") {
		leaders[l] = true
	}
	if len(leaders) != 2 {
		t.Fatalf("leaders %v; want partitions led by both brokers", ao.leaders.get(proxy.Source, "orders"))
	}

	var metadata, listOffsets, describe atomic.Int32
	count := func(n *atomic.Int32) func(kmsg.Request) (kmsg.Response, error, bool) {
		return func(kmsg.Request) (kmsg.Response, error, bool) {
			src.KeepControl()
			n.Add(1)
			return nil, nil, false
		}
	}
	src.ControlKey(int16(kmsg.Metadata), count(&metadata))
	src.ControlKey(int16(kmsg.ListOffsets), count(&listOffsets))
	src.ControlKey(int16(kmsg.DescribeProducers), count(&describe))

	e := &freezingEnds{} // only its gate's notes and cap
	c := &cutovers{log: hclog.NewNullLogger(), gate: freezeGate{e: e}, ends: ao}
	type drained struct {
		ends map[int32]int64
		err  error
	}
	done := make(chan drained, 1)
	go func() {
		ends, err := c.drainInFlight(ctx, "orders", proxy.Source, newPhaseTimer())
		done <- drained{ends, err}
	}()
	for listOffsets.Load() < 12 { // two freezes on both leaders
		select {
		case d := <-done:
			t.Fatalf("the drain froze %v (%v) while a transaction was open", d.ends, d.err)
		case <-time.After(time.Millisecond):
		}
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	d := <-done
	if d.err != nil {
		t.Fatal(d.err)
	}
	m, lo, dp := metadata.Load(), listOffsets.Load(), describe.Load()
	adm := kadm.NewClient(txn)
	listed, err := adm.ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	if !maps.Equal(d.ends, want) || !maps.Equal(e.capped, want) {
		t.Fatalf("frozen %v, reads capped at %v; the cluster's ends after the commit are %v", d.ends, e.capped, want)
	}
	for p, end := range want {
		if end != 3+1+2+1 { // 3 records and a marker, 2 and a marker
			t.Fatalf("partition %d ends at %d; want 7", p, end)
		}
	}
	if len(e.notes) != 1 || len(e.notes[0]) != 4 {
		t.Fatalf("notes %v; want one note with the producers of the 4 partitions", e.notes)
	}
	if m != 0 || lo != 3*dp || dp%2 != 0 {
		t.Fatalf("the drain asked %d Metadata, %d ListOffsets, %d DescribeProducers; want no Metadata and, per freeze and leader, 3 ListOffsets around 1 DescribeProducers", m, lo, dp)
	}
}
