package control

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/test/hatest"
)

// seqBatch is a one-record v2 batch of idempotent producer (pid, epoch) at
// sequence seq, its value "s<seq>".
func seqBatch(pid int64, epoch int16, seq int32) []byte {
	val := fmt.Sprintf("s%d", seq)
	rec := []byte{0}                   // attributes
	rec = binary.AppendVarint(rec, 0)  // timestamp delta
	rec = binary.AppendVarint(rec, 0)  // offset delta
	rec = binary.AppendVarint(rec, -1) // key: null
	rec = binary.AppendVarint(rec, int64(len(val)))
	rec = append(rec, val...)
	rec = binary.AppendVarint(rec, 0) // headers
	recs := append(binary.AppendVarint(nil, int64(len(rec))), rec...)
	b := kmsg.RecordBatch{Magic: 2, NumRecords: 1, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, Records: recs}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// rawBroker is a connection to one instance, for requests sent as they are.
func rawBroker(t *testing.T, addr string) *kgo.Broker {
	t.Helper()
	// Versions before topic ids, so produce requests name the topic.
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.MaxVersions(kversion.V3_0_0()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl.SeedBrokers()[0]
}

// produceSeq sends one idempotent batch to b and returns the partition's
// error code.
func produceSeq(t *testing.T, ctx context.Context, b *kgo.Broker, topic string, p int32, pid int64, epoch int16, seq int32) int16 {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = p, seqBatch(pid, epoch, seq)
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
	req.Topics = []kmsg.ProduceRequestTopic{rt}
	r, err := b.Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode
}

// An idempotent producer's partition moves to another instance while its
// batches are in flight: batch 2 is refused by the old owner (it does not
// lead the partition any more) and batch 3 reaches the new owner first.
// The new owner writes with the producer's session every instance shares,
// so the broker refuses batch 3 as out of order, as a real new leader
// would; the client sends 2 then 3, and the partition holds 0-3 once each,
// in order. With a session of the new owner's own (before the shared
// sessions) batch 3 was written ahead of 2: a librdkafka producer then
// takes 2 as written and the record is lost.
func TestProducerSessionMovesWithItsPartitionBetweenInstances(t *testing.T) {
	const partitions = 8
	r := newHARig(t, 2, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.close(1)
	if _, err := hatest.Agreed(ctx, r.open(), 1, "orders", "g"); err != nil {
		t.Fatal(err)
	}
	a := rawBroker(t, r.addrs[0])
	ir, err := a.Request(ctx, kmsg.NewPtrInitProducerIDRequest())
	if err != nil {
		t.Fatal(err)
	}
	init := ir.(*kmsg.InitProducerIDResponse)
	if init.ErrorCode != 0 {
		t.Fatal(kerr.ErrorForCode(init.ErrorCode))
	}
	pid, epoch := init.ProducerID, init.ProducerEpoch
	// Sequences 0 and 1 on every partition, through the only instance.
	for p := range int32(partitions) {
		for seq := range int32(2) {
			if code := produceSeq(t, ctx, a, "orders", p, pid, epoch, seq); code != 0 {
				t.Fatalf("partition %d sequence %d: %v", p, seq, kerr.ErrorForCode(code))
			}
		}
	}
	// The second instance joins and takes some partitions over.
	r.start(1)
	v, err := hatest.Agreed(ctx, r.open(), 2, "orders", "g")
	if err != nil {
		t.Fatal(err)
	}
	moved := int32(-1)
	for p, l := range v.Leaders {
		if v.Instance(r.addrs, l) == 1 {
			moved = p
			break
		}
	}
	if moved < 0 {
		t.Fatalf("no partition moved to the second instance: %v", v.Leaders)
	}
	b := rawBroker(t, r.addrs[1])
	if code := produceSeq(t, ctx, a, "orders", moved, pid, epoch, 2); code != kerr.NotLeaderForPartition.Code {
		t.Fatalf("batch 2 on the old owner: %v, want NOT_LEADER_OR_FOLLOWER", kerr.ErrorForCode(code))
	}
	if code := produceSeq(t, ctx, b, "orders", moved, pid, epoch, 3); code != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("batch 3 ahead of batch 2 on the new owner: %v, want OUT_OF_ORDER_SEQUENCE_NUMBER (the broker must still hold the partition's sequence)", kerr.ErrorForCode(code))
	}
	for _, seq := range []int32{2, 3} {
		if code := produceSeq(t, ctx, b, "orders", moved, pid, epoch, seq); code != 0 {
			t.Fatalf("batch %d on the new owner: %v", seq, kerr.ErrorForCode(code))
		}
	}
	// A resend of batch 3 (its answer lost) is the broker's duplicate.
	if code := produceSeq(t, ctx, b, "orders", moved, pid, epoch, 3); code != 0 && code != kerr.DuplicateSequenceNumber.Code {
		t.Fatalf("batch 3 resent: %v", kerr.ErrorForCode(code))
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(r.tgt.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {moved: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	for len(got) < 4 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("partition %d holds %v", moved, got)
		}
		fs.EachRecord(func(rec *kgo.Record) { got = append(got, string(rec.Value)) })
	}
	if fmt.Sprint(got) != "[s0 s1 s2 s3]" {
		t.Fatalf("partition %d holds %v, want [s0 s1 s2 s3]", moved, got)
	}
	if end := endOffset(t, ctx, r.tgt, "orders", moved); end != 4 {
		t.Fatalf("partition %d ends at %d, want 4 (the resent batch 3 written again?)", moved, end)
	}
}

// Two instances that need the same producer's session at once each obtain
// one and propose it: both use the first proposal in the control topic,
// and an instance that opens the topic later agrees.
func TestSharedSessionsFirstProposalWins(t *testing.T) {
	ctl := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newSharedSessions(hclog.NewNullLogger(), "a", openTestStateTopic(t, ctx, ctl))
	b := newSharedSessions(hclog.NewNullLogger(), "b", openTestStateTopic(t, ctx, ctl))
	k := proxy.SharedSession{VPID: 1<<62 | 5, VEpoch: 0, Cluster: "target"}
	if _, _, ok := a.Session(k); ok {
		t.Fatal("a session before any proposal")
	}
	var wg sync.WaitGroup
	var pa, pb int64
	var ea, eb error
	wg.Add(2)
	go func() { defer wg.Done(); pa, _, ea = a.Propose(ctx, k, 100, 0) }()
	go func() { defer wg.Done(); pb, _, eb = b.Propose(ctx, k, 200, 0) }()
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatal(ea, eb)
	}
	if pa != pb || (pa != 100 && pa != 200) {
		t.Fatalf("a uses %d, b uses %d: want the same, one of the proposals", pa, pb)
	}
	c := newSharedSessions(hclog.NewNullLogger(), "c", openTestStateTopic(t, ctx, ctl))
	if pc, _, ok := c.Session(k); !ok || pc != pa {
		t.Fatalf("a later instance reads %d %v, want %d", pc, ok, pa)
	}
	// Another key (the next epoch) is its own session.
	k2 := k
	k2.VEpoch = 1
	if p, _, err := c.Propose(ctx, k2, 300, 0); err != nil || p != 300 {
		t.Fatalf("the next epoch's session: %d %v, want 300", p, err)
	}
	// The chosen session's proposer forgets it: every proposal of the key
	// is tombstoned, and the next need proposes afresh.
	winner := a
	if pa == 200 {
		winner = b
	}
	winner.Forget(k)
	winner.wg.Wait()
	if err := c.st.waitRead(ctx, endOffset(t, ctx, ctl, StateTopicName("kc"), 0)); err != nil {
		t.Fatal(err)
	}
	if p, _, ok := c.Session(k); ok {
		t.Fatalf("session %d still chosen after its proposer forgot it", p)
	}
	if p, _, ok := c.Session(k2); !ok || p != 300 {
		t.Fatalf("the next epoch's session went too: %d %v", p, ok)
	}
}

// endOffset is a partition's end offset on c.
func endOffset(t *testing.T, ctx context.Context, c *kfake.Cluster, topic string, p int32) int64 {
	t.Helper()
	cl := mustClient(t, c)
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition = p
	rp.Timestamp = -1
	rt.Partitions = []kmsg.ListOffsetsRequestTopicPartition{rp}
	req.Topics = []kmsg.ListOffsetsRequestTopic{rt}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	return resp.Topics[0].Partitions[0].Offset
}
