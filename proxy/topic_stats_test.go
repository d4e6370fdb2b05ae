package proxy

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Named topics get their own produce/fetch series per cluster; the others
// are summed under _other; source writes are counted per partition, sent
// and settled, for the bypass check.
func TestTopicCountersNamedAndOther(t *testing.T) {
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "named", "unnamed"))
	reg := prometheus.NewRegistry()
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source), Registerer: reg})
	srv.SetStatsTopics([]string{"named"})
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	for i := range 10 {
		for _, topic := range []string{"named", "unnamed"} {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: fmt.Append(nil, i)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	cons, _ := proxyClient(t, srv, 30*time.Second, kgo.ConsumeTopics("named"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := 0
	for got < 10 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 10", got)
		}
		got += fs.NumRecords()
	}
	tc := srv.topics
	for i, want := range []struct {
		vec   *prometheus.CounterVec
		topic string
		n     float64
	}{
		{tc.produceRecords, "named", 10}, {tc.produceRecords, OtherTopics, 10},
		{tc.fetchRecords, "named", 10}, {tc.fetchRecords, OtherTopics, 0},
	} {
		if v := counterValue(want.vec.WithLabelValues(want.topic, Source)); v != want.n {
			t.Errorf("counter %d %s: %v, want %v", i, want.topic, v, want.n)
		}
	}
	if v := counterValue(tc.produceBytes.WithLabelValues("named", Target)); v != 0 {
		t.Errorf("named produced %v bytes to the target", v)
	}
	ws := srv.SourceWrites("named")
	if len(ws) != 2 {
		t.Fatalf("source writes of named: %d partitions", len(ws))
	}
	for p, w := range ws {
		if w.Sent.Load() != 5 || w.Settled.Load() != 5 || w.TxnSent.Load() != 0 {
			t.Errorf("partition %d: sent %d settled %d txn %d, want 5 5 0", p, w.Sent.Load(), w.Settled.Load(), w.TxnSent.Load())
		}
	}
	if srv.SourceWrites("unnamed") != nil {
		t.Error("an unnamed topic's writes are tracked")
	}
}

// countBatches reads offsets, records and transactional batches from v2
// headers and stops at a truncated tail.
func TestCountBatches(t *testing.T) {
	b := batchBytes(t, 0, 2, 3)
	txn := batchBytes(t, 0, 2, 2)
	binary.BigEndian.PutUint16(txn[21:], batchTransactional)
	b = append(b, txn...)
	c := countBatches(append(b, b[:70]...))
	if c.offsets != 5 || c.records != 5 || c.txnBatches != 1 {
		t.Errorf("counted %+v, want 5 offsets, 5 records, 1 transactional batch", c)
	}
}

// The per-request work of the counters (look the topic up, count a
// produce sent and settled, count a fetch answer) allocates nothing once a
// partition has been seen.
func TestTopicCountersDoNotAllocatePerRequest(t *testing.T) {
	srv, err := New(Options{Listen: "127.0.0.1:0", Clusters: map[string][]string{Source: {"127.0.0.1:1"}}, Router: StaticRouter(Source)})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetStatsTopics([]string{"orders"})
	batch := batchBytes(t, 0, 2, 5)
	srv.topicStats("orders").noteProduce(Source, 3, batch, false).settle() // first sight of partition 3
	allocs := testing.AllocsPerRun(1000, func() {
		for _, name := range []string{"orders", "elsewhere"} {
			ts := srv.topicStats(name)
			n := ts.noteProduce(Source, 3, batch, false)
			n.settle()
			ts.noteFetched(Target, batch)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request", allocs)
	}
}
