package replicator

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A restarted copy writes as the partition's saved producer, at the
// sequence after the last the target has from it, so a batch of the dead
// process that lands late (the same records, producer and sequence) is a
// duplicate the broker drops, not a second copy (decision 008).
func TestRestartedCopyKeepsItsProducerAndALateBatchIsADuplicate(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(1, "late"))
	prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("late"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	produce := func(tag string, n int) {
		t.Helper()
		var rs []*kgo.Record
		for i := 0; i < n; i++ {
			rs = append(rs, &kgo.Record{Value: []byte(fmt.Sprintf("%s-%d", tag, i))})
		}
		if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	run := func(end int64) {
		t.Helper()
		r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"late"},
			StateDir: dir, RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond})
		defer r.Stop()
		if err := r.WaitCopied(ctx, "late", 0, end); err != nil {
			t.Fatalf("copy to %d: %v", end, err)
		}
	}
	produce("a", 10)
	run(10)
	b, err := os.ReadFile(producerPath(dir, "late", 0))
	if err != nil {
		t.Fatal(err)
	}
	var saved savedProducer
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}

	// kfake lists only transactional producers in DescribeProducers; a real
	// broker lists the copy's idempotent one too: last sequence 9.
	tgt.ControlKey(kmsg.DescribeProducers.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		req := kreq.(*kmsg.DescribeProducersRequest)
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewDescribeProducersResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewDescribeProducersResponseTopicPartition()
				sp.Partition = p
				ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
				ap.ProducerID, ap.ProducerEpoch, ap.LastSequence, ap.CurrentTxnStartOffset = saved.ProducerID, int32(saved.Epoch), 9, -1
				sp.ActiveProducers = append(sp.ActiveProducers, ap)
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	produce("b", 5)
	run(15)

	// The dead process's batch of the same 5 records, landing now.
	raw := copyBatch(saved, 10, "b", 5)
	direct, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...), kgo.MaxVersions(kversion.V3_0_0()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "late"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = raw
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.BaseOffset != 10 {
		t.Errorf("the late batch: error %d at %d; want the restarted copy's offset 10 (a duplicate)", p.ErrorCode, p.BaseOffset)
	}
	got := readAll(t, tgt.ListenAddrs(), "late", 0, 15)
	if len(got) != 15 {
		t.Fatalf("target holds %d records, want 15", len(got))
	}
	adm := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "late"
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Timestamp = -1
	lt.Partitions = append(lt.Partitions, lp)
	adm.Topics = append(adm.Topics, lt)
	lo, err := adm.RequestWith(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	if end := lo.Topics[0].Partitions[0].Offset; end != 15 {
		t.Fatalf("target ends at %d, want 15: the late batch was appended a second time", end)
	}
}

// copyBatch is the batch a copy writing as producer sp sends for n source
// records valued tag-0.. at sequence first.
func copyBatch(sp savedProducer, first int32, tag string, n int) []byte {
	var recs []byte
	for i := 0; i < n; i++ {
		rec := []byte{0}
		rec = binary.AppendVarint(rec, 0)
		rec = binary.AppendVarint(rec, int64(i))
		rec = binary.AppendVarint(rec, -1)
		v := fmt.Sprintf("%s-%d", tag, i)
		rec = binary.AppendVarint(rec, int64(len(v)))
		rec = append(rec, v...)
		rec = binary.AppendVarint(rec, 0)
		recs = binary.AppendVarint(recs, int64(len(rec)))
		recs = append(recs, rec...)
	}
	rb := kmsg.RecordBatch{Magic: 2, NumRecords: int32(n), LastOffsetDelta: int32(n - 1), ProducerID: sp.ProducerID, ProducerEpoch: sp.Epoch, FirstSequence: first, Records: recs}
	raw := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}
