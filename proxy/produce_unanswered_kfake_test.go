package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// lostAnswerRig is a proxy over kfake source and target with topic t
// routed to the source and replicated, and an idempotent producer of its
// own (raw requests, so the test decides when a batch is resent).
type lostAnswerRig struct {
	t        *testing.T
	srv      *Server
	src, tgt *kfake.Cluster
	cl       *kgo.Client
	ctx      context.Context
	vpid     int64
	vepoch   int16
}

func newLostAnswerRig(t *testing.T) *lostAnswerRig {
	srv, src, tgt := twoClusterProxy(t, txnRoutes(t, Source), "t")
	cl, ctx := proxyClient(t, srv, 60*time.Second, kgo.MaxVersions(kversion.V3_0_0())) // Produce v9: topics by name
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionTimeoutMillis = -1
	ir, err := init.RequestWith(ctx, cl)
	if err != nil || ir.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %v", err, ir)
	}
	return &lostAnswerRig{t: t, srv: srv, src: src, tgt: tgt, cl: cl, ctx: ctx, vpid: ir.ProducerID, vepoch: ir.ProducerEpoch}
}

// produce sends the one-record batch of sequence seq to partition 0.
func (r *lostAnswerRig) produce(seq int32) kmsg.ProduceResponseTopicPartition {
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = 0, seqBatch(r.vpid, r.vepoch, seq, 1)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(r.ctx, r.cl)
	if err != nil {
		r.t.Errorf("produce sequence %d: %v", seq, err)
		return producePartitionError(0, kerr.UnknownServerError.Code)
	}
	return resp.Topics[0].Partitions[0]
}

// resendUntilAnswered resends the batch of sequence seq as a client does
// after a retriable error: again while the answer is retriable. The first
// resend can itself get a retriable error while kproxy is still catching
// up with the dropped upstream connection (a redial, a metadata refresh);
// a CI run saw that, and the one resend's drain then waited out
// unansweredWait.
func (r *lostAnswerRig) resendUntilAnswered(seq int32) kmsg.ProduceResponseTopicPartition {
	for attempt := 1; ; attempt++ {
		p := r.produce(seq)
		if p.ErrorCode != kerr.NotLeaderForPartition.Code || attempt == 20 {
			return p
		}
		time.Sleep(50 * time.Millisecond) // the clients' retry backoff
	}
}

// loseNextAnswer makes the source's next produce lose its answer: the
// connection from kproxy drops. write says when the source broker writes
// the batch anyway: at once (before the drop), or later (a request the
// broker read before the drop and handles after it), when writeLate is
// called or the producer's resend reaches the source, whichever is first.
func (r *lostAnswerRig) loseNextAnswer(late bool) (writeLate func()) {
	side := kfakeClient(r.t, r.src, kgo.MaxVersions(kversion.V3_0_0())) // the request as kproxy sent it: Produce v9
	leader := side.Broker(int(r.src.LeaderFor("t", 0)))
	var once sync.Once
	var lost kmsg.Request
	var writing atomic.Bool // the write itself passes the controls
	write := func() {
		once.Do(func() {
			writing.Store(true)
			defer writing.Store(false)
			r2, err := leader.Request(r.ctx, lost)
			if err == nil {
				err = kerr.ErrorForCode(r2.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode)
			}
			if err != nil {
				r.t.Errorf("the source's write of the batch whose answer was lost: %v", err)
			}
		})
	}
	r.src.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if writing.Load() {
			return nil, nil, false
		}
		lost = req
		if !late {
			r.src.SleepControl(write)
			return nil, errors.New("the answer is lost"), true
		}
		// The broker handles the lost request before a resend of it.
		r.src.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			if !writing.Load() {
				r.src.SleepControl(write)
			}
			return nil, nil, false
		})
		return nil, errors.New("the answer is lost"), true
	})
	return write
}

// sourceEnd is the source's end offset of partition 0: what a drain
// freezes.
func (r *lostAnswerRig) sourceEnd() int64 {
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = 0, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(r.ctx, kfakeClient(r.t, r.src))
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].Offset
}

// An idempotent batch reaches the source, its answer is lost (the upstream
// connection drops), and the topic's cutover holds before the producer
// resends it. The resend must be answered by the source before the drain
// freezes the ends: sent to the target after the flip on a fresh session,
// it is written a second time when the note of the source's producers
// (decision 008) could not be taken, or when the source wrote the batch
// only after the freeze (then the virtual log has it once, from the
// target, but the source has a stray copy beyond the flip point, which
// stops the copy back). The soak with connection resets wrote 96 records
// twice this way.
func TestBatchWhoseAnswerWasLostIsSettledOnItsClusterBeforeTheFlip(t *testing.T) {
	for _, tc := range []struct {
		name string
		late bool // the source writes the batch after the drop
		note bool // the drain noted the source's producers
	}{
		{"the drain could not describe the source's producers", false, false},
		{"the source writes the batch after the connection dropped", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newLostAnswerRig(t)
			if p := r.produce(0); p.ErrorCode != 0 {
				t.Fatalf("first batch: %v", kerr.ErrorForCode(p.ErrorCode))
			}
			writeLate := r.loseNextAnswer(tc.late)
			if p := r.produce(1); p.ErrorCode != kerr.NotLeaderForPartition.Code {
				t.Fatalf("the batch whose answer was lost: %v, want NOT_LEADER_FOR_PARTITION (retriable)", kerr.ErrorForCode(p.ErrorCode))
			}

			// The cutover holds; the producer resends meanwhile.
			r.srv.HoldProduce("t")
			idle := make(chan error, 1)
			go func() { idle <- r.srv.WaitProduceIdle(r.ctx, "t") }()
			resent := make(chan kmsg.ProduceResponseTopicPartition, 1)
			go func() { resent <- r.resendUntilAnswered(1) }()
			if err := <-idle; err != nil {
				t.Fatal(err)
			}
			frozen := r.sourceEnd()
			var parts map[int32][]ProducerState
			if tc.note {
				r.srv.pids.mu.Lock()
				old := r.srv.pids.m[pidKey{vpid: r.vpid, vepoch: r.vepoch, cluster: Source}]
				r.srv.pids.mu.Unlock()
				// Sequences 0.. sit at offsets 0.. on the source.
				parts = map[int32][]ProducerState{0: {{ID: old.pid, Epoch: old.epoch, LastSequence: int32(frozen - 1)}}}
			}
			if err := r.srv.KeepOldHomeProducers("t", Source, parts); err != nil {
				t.Fatal(err)
			}
			// The copy brings the source's records below the frozen
			// ends to the target.
			direct := kfakeClient(t, r.tgt, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
			for i := int64(0); i < frozen; i++ {
				if err := direct.ProduceSync(r.ctx, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("copied")}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			r.srv.SetRouter(txnRoutes(t, Target))
			r.srv.ReleaseProduce("t")
			if p := <-resent; p.ErrorCode != 0 || p.BaseOffset != 1 {
				t.Errorf("the resend: %v at offset %d, want offset 1 (where the source wrote it)", kerr.ErrorForCode(p.ErrorCode), p.BaseOffset)
			}
			writeLate() // if nothing made the source handle it yet

			if frozen != 2 {
				t.Errorf("the drain froze the source's end at %d, want 2: the batch whose answer was lost was written on the source beyond the flip point", frozen)
			}
			if n := countOn(t, r.src, "t"); n != 2 {
				t.Errorf("source has %d records, want 2 (the batch once)", n)
			}
			if n := countOn(t, r.tgt, "t"); n != int(frozen) {
				t.Errorf("target has %d records, want the %d copied: the resend of a batch the source has was written on the target too", n, frozen)
			}
		})
	}
}

// A batch whose answer was lost and that is never resent (the producer
// gave up or died) keeps a drain waiting only for a bounded time: the wait
// names it, and after unansweredWait the drain goes on; a resend that comes
// after that waits in the hold like any batch (the resend rule judges it
// after a flip).
func TestBatchWhoseAnswerWasLostDelaysADrainOnlyForABoundedTime(t *testing.T) {
	r := newLostAnswerRig(t)
	if p := r.produce(0); p.ErrorCode != 0 {
		t.Fatalf("first batch: %v", kerr.ErrorForCode(p.ErrorCode))
	}
	r.loseNextAnswer(false)
	if p := r.produce(1); p.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("the batch whose answer was lost: %v, want NOT_LEADER_FOR_PARTITION", kerr.ErrorForCode(p.ErrorCode))
	}
	r.srv.HoldProduce("t")
	short, cancel := context.WithTimeout(r.ctx, 50*time.Millisecond)
	err := r.srv.WaitProduceIdle(short, "t")
	cancel()
	if err == nil || !strings.Contains(err.Error(), "whose upstream answer was lost") {
		t.Fatalf("the drain while the batch is unsettled: %v, want it to wait and name the batch", err)
	}
	if err := r.srv.WaitProduceIdle(r.ctx, "t"); err != nil {
		t.Fatalf("the drain after the batch's wait ended: %v", err)
	}
	resent := make(chan kmsg.ProduceResponseTopicPartition, 1)
	go func() { resent <- r.produce(1) }()
	for r.srv.HeldCount("t") == 0 {
		select {
		case p := <-resent:
			t.Fatalf("a resend after the wait ended passed the hold: %v at %d", kerr.ErrorForCode(p.ErrorCode), p.BaseOffset)
		case <-r.ctx.Done():
			t.Fatal("the resend was never held")
		case <-time.After(5 * time.Millisecond):
		}
	}
	r.srv.ReleaseProduce("t") // an abort: back to the source
	if p := <-resent; p.ErrorCode != 0 || p.BaseOffset != 1 {
		t.Errorf("the resend released to the source: %v at offset %d, want offset 1", kerr.ErrorForCode(p.ErrorCode), p.BaseOffset)
	}
}

// A client resends a batch whose answer was lost only after its later
// in-flight requests are answered (franz-go does). Those wait in the
// cutover's hold, so the resend, and the drain waiting for it, would wait
// until the batch's wait expired (on real Kafka every such batch did, and
// the hold took 3.3 s). The producer's held requests are answered at once,
// retriably (they were never sent), and so are those arriving while its
// batch is unsettled; its resend then passes the hold and settles it.
func TestHeldRequestsOfAProducerWithALostAnswerAreAnsweredAtOnce(t *testing.T) {
	r := newLostAnswerRig(t)
	if p := r.produce(0); p.ErrorCode != 0 {
		t.Fatalf("first batch: %v", kerr.ErrorForCode(p.ErrorCode))
	}
	// The hold begins while batch 1 is at the source, and batch 2 waits
	// in it; then batch 1's answer is lost.
	later := make(chan kmsg.ProduceResponseTopicPartition, 1)
	side := kfakeClient(t, r.src, kgo.MaxVersions(kversion.V3_0_0()))
	leader := side.Broker(int(r.src.LeaderFor("t", 0)))
	var writing atomic.Bool
	r.src.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if writing.Load() {
			return nil, nil, false
		}
		r.srv.HoldProduce("t")
		go func() { later <- r.produce(2) }()
		r.src.SleepControl(func() {
			for r.srv.HeldCount("t") == 0 && r.ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			writing.Store(true)
			if _, err := leader.Request(r.ctx, req); err != nil {
				t.Errorf("the source's write of batch 1: %v", err)
			}
			writing.Store(false)
		})
		return nil, errors.New("the answer is lost"), true
	})
	if p := r.produce(1); p.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("batch 1, whose answer was lost: %v, want NOT_LEADER_FOR_PARTITION", kerr.ErrorForCode(p.ErrorCode))
	}
	if n := r.srv.HeldCount("t"); n != 0 {
		t.Errorf("%d requests still held after batch 1's answer was lost, want 0: batch 2's request keeps the producer from resending batch 1", n)
	}
	if p := <-later; p.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Errorf("held batch 2: %v, want NOT_LEADER_FOR_PARTITION at once (retriable, never sent)", kerr.ErrorForCode(p.ErrorCode))
	}
	// The producer resends in order: batch 1 passes the hold and settles,
	// then batch 2 is held like any other.
	if p := r.resendUntilAnswered(1); p.ErrorCode != 0 || p.BaseOffset != 1 {
		t.Errorf("batch 1 resent: %v at %d, want offset 1 (the source's duplicate answer)", kerr.ErrorForCode(p.ErrorCode), p.BaseOffset)
	}
	if r.srv.holds.producerUnanswered("t", Source, r.vpid) {
		t.Error("batch 1 is still unsettled after the source answered its resend")
	}
	go func() { later <- r.produce(2) }()
	for r.srv.HeldCount("t") == 0 && r.ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	r.srv.ReleaseProduce("t")
	if p := <-later; p.ErrorCode != 0 || p.BaseOffset != 2 {
		t.Errorf("batch 2 after the release: %v at %d, want offset 2", kerr.ErrorForCode(p.ErrorCode), p.BaseOffset)
	}
	if n := countOn(t, r.src, "t"); n != 3 {
		t.Errorf("source has %d records, want 3", n)
	}
}
