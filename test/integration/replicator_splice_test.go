package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

// Large uncompressed batches (about 120 KiB) between small ones on the
// real clusters: the large ones' bodies are spliced socket to socket
// (decision 014; counted by kproxy_replicator_spliced_batches_total), and
// the target holds the same batches byte for byte beyond the producer
// fields, the same records in order, and an exact map.
func TestReplicatorSplicesLargeBatchesByteForByte(t *testing.T) {
	topic := replTopic("splice")
	replCreateTopic(t, topic, 1, map[string]*string{"compression.type": kadm.StringPtr("producer")})
	cl := replClient(t, env.source, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rng := rand.New(rand.NewPCG(5, 14))
	n := 0
	for i := 0; i < 12; i++ {
		for _, size := range []struct{ recs, bytes int }{{60, 2 << 10}, {4, 100}} {
			var rs []*kgo.Record
			for j := 0; j < size.recs; j++ {
				v := make([]byte, size.bytes)
				for k := range v {
					v[k] = byte(rng.Uint32())
				}
				rs = append(rs, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", n)), Value: v})
				n++
			}
			if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	reg := prometheus.NewRegistry()
	r, err := replicator.New(replicator.Options{
		SourceBrokers: []string{env.source}, TargetBrokers: []string{env.target},
		Topics: []string{topic}, StateDir: t.TempDir(),
		Logger:     hclog.New(&hclog.LoggerOptions{Name: "replicator", Level: hclog.Warn, Output: os.Stderr}),
		Registerer: reg, FetchMaxWait: 200 * time.Millisecond, RetryBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	replWait(t, r, topic)
	src, tgt := rawBatches(t, env.source, topic, 0), rawBatches(t, env.target, topic, 0)
	if len(src) < 24 || len(tgt) != len(src) {
		t.Fatalf("%d source batches, %d target batches; want the same, at least 24", len(src), len(tgt))
	}
	sameBeyondProducerFields(t, src, tgt)
	replCompare(t, r, topic, 0, replSourceRecords(t, topic, 0, n))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	spliced := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "kproxy_replicator_spliced_batches_total" {
			spliced = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if spliced < 12 {
		t.Fatalf("%v batches spliced, want the 12 large ones", spliced)
	}
}
