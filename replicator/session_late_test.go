package replicator

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A dead process's late copy batch that lands on the target after the
// restarted copy reconciled its map but before it read its producer state
// (DescribeProducers) is in that state and not in the map: a session
// starting right there would copy the same records again under the next
// sequences, which the broker appends ("the target appended our batch at
// offset N, but the offset map expected M", the copy stopped for good;
// seen in the fault test's kproxy kill during a copy back). The session
// lists the target's end again after reading the state, and reconciles
// again when it moved.
func TestLateBatchLandingWhileTheCopySessionStartsIsMatchedNotCopiedAgain(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(1, "late"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("late"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
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
	run := func(end int64) error {
		r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"late"},
			StateDir: dir, RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond})
		defer r.Stop()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		return r.WaitCopied(wctx, "late", 0, end)
	}
	produce("a", 10)
	if err := run(10); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(producerPath(dir, "late", 0))
	if err != nil {
		t.Fatal(err)
	}
	var saved savedProducer
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}
	produce("b", 5)
	// The batch the dead process sent for them: the source's batch as the
	// copy rewrites it, sequence 10.
	fetch := kmsg.NewPtrFetchRequest()
	fetch.MaxWaitMillis, fetch.MaxBytes = 10, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "late"
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.FetchOffset, fp.PartitionMaxBytes = 10, 1<<20
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	srcDirect := newClient(t, src.ListenAddrs(), kgo.MaxVersions(kversion.V3_0_0()))
	fr, err := fetch.RequestWith(ctx, srcDirect)
	if err != nil {
		t.Fatal(err)
	}
	batches := splitRecordSet(nil, fr.Topics[0].Partitions[0].RecordBatches)
	if len(batches) != 1 {
		t.Fatalf("the source wrote b-0..b-4 as %d batches, want 1", len(batches))
	}
	late, err := prepareBatch(batches[0], 10, producerSession{pid: saved.ProducerID, epoch: saved.Epoch, seq: 10})
	if err != nil {
		t.Fatal(err)
	}

	// The dead process's batch of b-0..b-4 (sequences 10-14) lands when
	// the restarted copy asks for its producer state, which then includes
	// it (kfake lists only transactional producers; the test answers what
	// a real broker does).
	direct, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...), kgo.MaxVersions(kversion.V3_0_0()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	var once sync.Once
	tgt.ControlKey(kmsg.DescribeProducers.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		once.Do(func() {
			tgt.SleepControl(func() {
				req := kmsg.NewPtrProduceRequest()
				req.Acks, req.TimeoutMillis = -1, 5000
				rt := kmsg.NewProduceRequestTopic()
				rt.Topic = "late"
				rp := kmsg.NewProduceRequestTopicPartition()
				rp.Records = late.raw
				rt.Partitions = append(rt.Partitions, rp)
				req.Topics = append(req.Topics, rt)
				resp, err := req.RequestWith(ctx, direct)
				if err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
					t.Errorf("the late batch: %v %v", err, resp)
				}
			})
		})
		req := kreq.(*kmsg.DescribeProducersRequest)
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewDescribeProducersResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewDescribeProducersResponseTopicPartition()
				sp.Partition = p
				ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
				ap.ProducerID, ap.ProducerEpoch, ap.LastSequence, ap.CurrentTxnStartOffset = saved.ProducerID, int32(saved.Epoch), 14, -1
				sp.ActiveProducers = append(sp.ActiveProducers, ap)
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	if err := run(15); err != nil {
		t.Fatalf("the restarted copy: %v", err)
	}
	lo := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "late"
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Timestamp = -1
	lt.Partitions = append(lt.Partitions, lp)
	lo.Topics = append(lo.Topics, lt)
	ends, err := lo.RequestWith(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	if end := ends.Topics[0].Partitions[0].Offset; end != 15 {
		t.Fatalf("target ends at %d, want 15: the late batch's records were copied a second time", end)
	}
	for i, r := range readAll(t, tgt.ListenAddrs(), "late", 0, 15) {
		want := fmt.Sprintf("a-%d", i)
		if i >= 10 {
			want = fmt.Sprintf("b-%d", i-10)
		}
		if string(r.Value) != want {
			t.Errorf("target offset %d holds %q, want %q", i, r.Value, want)
		}
	}
}
