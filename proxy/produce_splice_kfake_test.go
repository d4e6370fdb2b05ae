package proxy

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// An idempotent producer's large batches through the proxy to a
// three-broker cluster go the spliced way: each request is split over the
// partitions' leaders, its batch headers get the cluster's producer id and
// a CRC derived from the old one, its bodies go socket to socket. Read
// back from the cluster directly, every record is there, in order, and
// every batch's CRC checks (the consumer validates them), so the bytes
// that never went through kproxy's memory arrived whole and in place.
func TestSplicedIdempotentProduceReadsBackWithValidCRCs(t *testing.T) {
	srv, c := newKfakeProxy(t, 3, kfake.SeedTopics(6, "big"))
	before := produceSpliced.Load()
	prod, ctx := proxyClient(t, srv, 60*time.Second, kgo.DefaultProduceTopic("big"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerLinger(50*time.Millisecond), kgo.MaxBufferedBytes(64<<20))
	const perPartition, size = 160, 4 << 10
	value := func(p, i int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("p%d-r%d|", p, i)), size)[:size]
	}
	var recs []*kgo.Record
	for i := range perPartition {
		for p := range 6 {
			recs = append(recs, &kgo.Record{Partition: int32(p), Value: value(p, i)})
		}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if produceSpliced.Load() == before {
		t.Fatal("no request went the spliced way")
	}
	cons := kfakeClient(t, c, kgo.ConsumeTopics("big"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	next := make([]int, 6)
	for got := 0; got < 6*perPartition; {
		fs := cons.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatal(err) // a bad CRC is an error here
		}
		fs.EachRecord(func(r *kgo.Record) {
			p := int(r.Partition)
			if !bytes.Equal(r.Value, value(p, next[p])) {
				t.Fatalf("partition %d offset %d: not record %d", p, r.Offset, next[p])
			}
			if r.ProducerID < 0 {
				t.Fatalf("partition %d offset %d: no producer id", p, r.Offset)
			}
			next[p]++
			got++
		})
	}
	if n := splicePipes.InUse(); n != 0 {
		t.Fatalf("%d pipes still out of the pool", n)
	}
}
