package proxy

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A record that lands on the old home after the cutover's drain froze its
// ends (a killed kproxy's late write) lies past the flip point: reads of the
// old home must stop at the frozen ends until the hold ends. A consumer that
// read it had a position past the flip point, which after the flip is past
// the new home's end: OFFSET_OUT_OF_RANGE, and a consumer resetting to the
// earliest offset read the whole topic again (the fault test's kproxy kill
// while holding, in a clean-clone make test).
func TestReadsOfTheOldHomeStopAtTheFrozenEnds(t *testing.T) {
	srv, src, _ := twoClusterProxy(t, txnRoutes(t, Source), "t")
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.MaxVersions(kversion.V3_0_0()), kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 2; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("acked")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	srv.HoldProduce("t")
	if err := srv.WaitProduceIdle(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	srv.CapFetch("t", Source, map[int32]int64{0: 2, 1: 0, 2: 0})
	// The late write lands on the source after the freeze.
	direct := kfakeClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
	if err := direct.ProduceSync(ctx, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("stray")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	read := func() (hwm int64, offsets []int64) {
		t.Helper()
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "t"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, 0, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		fp := resp.Topics[0].Partitions[0]
		recs, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "t", Partition: 0}, &fp, kgo.DefaultDecompressor(), nil)
		for _, r := range recs.Records {
			offsets = append(offsets, r.Offset)
		}
		return fp.HighWatermark, offsets
	}
	latest := func() int64 {
		t.Helper()
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = "t"
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = 0, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0].Offset
	}

	if hwm, offs := read(); hwm != 2 || len(offs) != 2 {
		t.Errorf("a fetch of the old home while its ends are frozen: high watermark %d, offsets %v; want 2, [0 1] (the late write past the flip point must not be read)", hwm, offs)
	}
	if end := latest(); end != 2 {
		t.Errorf("the old home's latest offset while its ends are frozen: %d, want 2", end)
	}
	// Aborted: the topic stays on the source, whose log is the virtual one
	// again, late write included.
	srv.ReleaseProduce("t")
	if hwm, offs := read(); hwm != 3 || len(offs) != 3 {
		t.Errorf("a fetch after the hold ended: high watermark %d, offsets %v; want 3, [0 1 2]", hwm, offs)
	}
}
