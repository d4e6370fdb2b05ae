package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawBatch is a v2 batch of n records from producer (pid, epoch) starting
// at sequence first, with values "<tag>-<sequence>".
func rawBatch(pid int64, epoch int16, first, n int32, tag string) []byte {
	var recs []byte
	for i := int32(0); i < n; i++ {
		v := fmt.Sprintf("%s-%d", tag, first+i)
		rec := []byte{0}                         // attributes
		rec = binary.AppendVarint(rec, 0)        // timestamp delta
		rec = binary.AppendVarint(rec, int64(i)) // offset delta
		rec = binary.AppendVarint(rec, -1)       // key: null
		rec = binary.AppendVarint(rec, int64(len(v)))
		rec = append(rec, v...)
		rec = binary.AppendVarint(rec, 0) // headers
		recs = binary.AppendVarint(recs, int64(len(rec)))
		recs = append(recs, rec...)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{Magic: 2, NumRecords: n, LastOffsetDelta: n - 1, FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: first, Records: recs}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// An idempotent producer that bumps its epoch (KIP-360: franz-go does so
// for the whole client when one partition's batch is refused with
// OUT_OF_ORDER_SEQUENCE_NUMBER, e.g. after a request it gave up on reached
// the broker behind a later one) still resends, under the old epoch and
// sequences, the batches it may have written. Real Kafka answers them as
// duplicates; through kproxy they were written again, because the bump
// dropped the producer's upstream sessions and the resend opened a fresh
// one (the draining phase of TestFaultKproxyKilledInEachCutoverPhase: 5
// records written twice, at offsets no producer was acked at). Checked
// before a flip, and after it (the old epoch's batch is then judged by the
// old home's producer state the drain noted, decision 008), with the
// topic's log read through kproxy at the end: every record once.
func TestResendUnderTheOldEpochAfterABumpOnRealKafka(t *testing.T) {
	r := newFaultRig(t, "bump", 1)
	r.writeCfg("source")
	r.start()
	waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
	cl := replClient(t, r.listen)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initPID := func(pid int64, epoch int16) (int64, int16) {
		t.Helper()
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionTimeoutMillis, req.ProducerID, req.ProducerEpoch = -1, pid, epoch
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("InitProducerId(%d, %d): %v %v", pid, epoch, err, resp)
		}
		return resp.ProducerID, resp.ProducerEpoch
	}
	produce := func(what string, pid int64, epoch int16, first, n int32, tag string, want int64) {
		t.Helper()
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = r.topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = 0, rawBatch(pid, epoch, first, n, tag)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 || p.BaseOffset != want {
			t.Errorf("%s: %v at offset %d; want offset %d", what, kerr.ErrorForCode(p.ErrorCode), p.BaseOffset, want)
		}
	}

	vpid, e0 := initPID(-1, -1)
	produce("the first batch", vpid, e0, 0, 2, "e0", 0)
	// Appended; its answer is the one the client did not get.
	produce("the second batch", vpid, e0, 2, 2, "e0", 2)
	_, e1 := initPID(vpid, e0)
	produce("the second batch resent under the old epoch after the bump", vpid, e0, 2, 2, "e0", 2)
	produce("the first batch of the new epoch", vpid, e1, 0, 1, "e1", 4)
	// Its answer is lost too, then the epoch bumps again: both old epochs
	// have a batch to resend across the flip.
	_, e2 := initPID(vpid, e1)

	r.reroute("target")
	r.waitState("the flip", "flipped", "target", 60*time.Second)
	produce("the old epoch's batch resent after the flip", vpid, e0, 2, 2, "e0", 2)
	produce("the next epoch's batch resent after the flip", vpid, e1, 0, 1, "e1", 4)
	produce("the newest epoch's first batch, on the target", vpid, e2, 0, 2, "e2", 5)

	got := map[string][]int64{}
	for _, rec := range readAllThrough(t, r.listen, r.topic, 7) {
		got[rec.Value] = append(got[rec.Value], rec.Offset)
	}
	want := map[string]int64{"e0-0": 0, "e0-1": 1, "e0-2": 2, "e0-3": 3, "e1-0": 4, "e2-0": 5, "e2-1": 6}
	for v, off := range want {
		if fmt.Sprint(got[v]) != fmt.Sprint([]int64{off}) {
			t.Errorf("record %s at offsets %v, want once at %d", v, got[v], off)
		}
	}
	if len(got) != len(want) {
		t.Errorf("records read through kproxy: %v, want %v", got, want)
	}
}
