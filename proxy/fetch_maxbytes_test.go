package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A Fetch whose partitions have different leaders used to get MaxBytes from
// each leader, so the merged answer reached MaxBytes × leaders (over
// franz-go's and Sarama's 100 MiB limit for large MaxBytes). Kafka's rule
// (at most MaxBytes, or one batch if the first is larger) now holds per
// leader with MaxBytes split across them.
func TestMergedFetchStaysWithinMaxBytes(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// One leader per partition, so the fetch is split three ways (kfake
	// places leaders at random, and sometimes on one broker).
	for p := range int32(3) {
		if err := c.MoveTopicPartition("t", p, p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 2 MiB per partition, in batches of at most 128 KiB.
	const batchMax = 128 << 10
	pcl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchMaxBytes(batchMax),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 32<<10)
	var rs []*kgo.Record
	for p := range int32(3) {
		for range 64 {
			rs = append(rs, &kgo.Record{Topic: "t", Partition: p, Value: val})
		}
	}
	if err := pcl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, pcl)
	if err != nil {
		t.Fatal(err)
	}
	leaders := map[int32]bool{}
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			leaders[p.Leader] = true
		}
	}
	pcl.Close()
	if len(leaders) < 2 {
		t.Fatalf("kfake put every partition on one leader (%v); the test needs several", leaders)
	}

	srv, err := New(Options{Listen: "127.0.0.1:0", Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.MaxVersions(kversion.V3_0_0())) // Fetch by name
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	const maxBytes = 1 << 20
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(11)
	req.ReplicaID = -1
	req.MaxWaitMillis = 100
	req.MaxBytes = maxBytes
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	for p := range int32(3) {
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition = p
		fp.PartitionMaxBytes = maxBytes
		fp.LogStartOffset = -1
		ft.Partitions = append(ft.Partitions, fp)
	}
	req.Topics = append(req.Topics, ft)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				t.Fatalf("partition %d: error %d", rp.Partition, rp.ErrorCode)
			}
			total += len(rp.RecordBatches)
		}
	}
	t.Logf("merged answer from %d leaders: %d KiB of batches for MaxBytes %d KiB", len(leaders), total>>10, maxBytes>>10)
	if total == 0 {
		t.Fatal("no records fetched")
	}
	// Each leader may exceed its share by one batch, as a broker may.
	if limit := maxBytes + len(leaders)*batchMax; total > limit {
		t.Errorf("merged answer holds %d bytes of batches; MaxBytes is %d (limit with one extra batch per leader: %d)", total, maxBytes, limit)
	}
}
