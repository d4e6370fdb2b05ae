package proxy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnRoutes routes topic t to cluster c and replicates it (a cutover holds
// only replicated topics).
func txnRoutes(t *testing.T, c string) Router {
	t.Helper()
	return tableFor(t, routesHeader+"state_dir: /nonexistent/unused\nreplicate: [t]\nroutes:\n  default: source\n  topics:\n    t: "+c+"\n")
}

// addPartitionsReads counts AddPartitionsToTxn answers a client read.
type addPartitionsReads struct{ n atomic.Int64 }

func (h *addPartitionsReads) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == kmsg.AddPartitionsToTxn.Int16() && err == nil {
		h.n.Add(1)
	}
}

// committedValues reads topic from a cluster directly, read_committed, and
// returns every value before the end sentinels it writes first (one per
// partition, non-transactional, after every transaction ended), so a value
// present twice or not committed would show.
func committedValues(t *testing.T, c *kfake.Cluster, topic string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for p := int32(0); p < 3; p++ {
		if err := w.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte("end")}).FirstErr(); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
	}
	r, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []string
	ends := map[int32]bool{}
	for len(ends) < 3 {
		fs := r.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: saw the end of %d of 3 partitions", topic, len(ends))
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(rec *kgo.Record) {
			if string(rec.Value) == "end" {
				ends[rec.Partition] = true
				return
			}
			if !ends[rec.Partition] {
				out = append(out, string(rec.Value))
			}
		})
	}
	sort.Strings(out)
	return out
}

// A transactional producer keeps committing while its topic is cut over to
// the target and back, with the controller's hold around each flip: no
// client error; a transaction open when the hold starts keeps producing
// through it and ends on the source before WaitTxnIdle returns; a
// transaction begun during the hold waits (CONCURRENT_TRANSACTIONS) and runs
// on the target; every committed record is readable exactly once,
// read_committed, from the cluster it was written to.
func TestTransactionalProducerAcrossCutovers(t *testing.T) {
	srv, src, tgt := twoClusterProxy(t, txnRoutes(t, Source), "t")
	reads := &addPartitionsReads{}
	prod, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.TransactionalID("txn-cutover"),
		kgo.DefaultProduceTopic("t"), kgo.WithHooks(reads))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wantSrc, wantTgt []string
	produce := func(tag string, n int) []string {
		t.Helper()
		var vals []string
		for i := 0; i < n; i++ {
			v := fmt.Sprintf("%s-%d", tag, i)
			if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
			vals = append(vals, v)
		}
		return vals
	}
	commit := func() {
		t.Helper()
		if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	txn := func(tag string, n int) []string {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		vals := produce(tag, n)
		commit()
		return vals
	}
	// flipTo runs a controller's cutover of t to cluster c, after the hold
	// and drain; between hold and flip, during(…) runs.
	hold := func() {
		srv.HoldProduce("t")
		if err := srv.WaitProduceIdle(ctx, "t"); err != nil {
			t.Fatal(err)
		}
	}
	flip := func(c string) {
		srv.SetRouter(txnRoutes(t, c))
		srv.ReleaseProduce("t")
	}

	for i := 0; i < 3; i++ {
		wantSrc = append(wantSrc, txn(fmt.Sprintf("src1.%d", i), 5)...)
	}

	// A transaction is open on the source when the cutover starts.
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	open := produce("open", 5)
	hold()
	idle := make(chan error, 1)
	go func() { idle <- srv.WaitTxnIdle(ctx, "t") }()
	select {
	case err := <-idle:
		t.Fatalf("WaitTxnIdle returned with a transaction open on t: %v", err)
	default:
	}
	// It keeps producing through the hold (the hold cannot end before it
	// does), then commits on the source.
	open = append(open, produce("open-held", 5)...)
	select {
	case err := <-idle:
		t.Fatalf("WaitTxnIdle returned before the open transaction ended: %v", err)
	default:
	}
	commit()
	if err := <-idle; err != nil {
		t.Fatal(err)
	}
	wantSrc = append(wantSrc, open...)

	// A transaction begun during the hold waits for it, then runs on the
	// target.
	before := reads.n.Load()
	heldTxn := make(chan error, 1)
	var heldVals []string
	go func() {
		if err := prod.BeginTransaction(); err != nil {
			heldTxn <- err
			return
		}
		for i := 0; i < 3; i++ {
			v := fmt.Sprintf("held-%d", i)
			if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
				heldTxn <- err
				return
			}
			heldVals = append(heldVals, v)
		}
		heldTxn <- prod.EndTransaction(ctx, kgo.TryCommit)
	}()
	for reads.n.Load() == before {
		select {
		case err := <-heldTxn:
			t.Fatalf("a transaction on a held topic finished during the hold: %v", err)
		case <-ctx.Done():
			t.Fatal("the held transaction never asked to add its partitions")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := srv.WaitTxnIdle(ctx, "t"); err != nil {
		t.Fatalf("a refused transaction counts as open: %v", err)
	}
	flip(Target)
	if err := <-heldTxn; err != nil {
		t.Fatalf("transaction begun during the hold: %v", err)
	}
	wantTgt = append(wantTgt, heldVals...)

	for i := 0; i < 3; i++ {
		wantTgt = append(wantTgt, txn(fmt.Sprintf("tgt.%d", i), 5)...)
	}

	// Roll back to the source: nothing is open, so WaitTxnIdle is
	// immediate, and the next transactions run on the source again.
	hold()
	if err := srv.WaitTxnIdle(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	flip(Source)
	for i := 0; i < 3; i++ {
		wantSrc = append(wantSrc, txn(fmt.Sprintf("src2.%d", i), 5)...)
	}

	sort.Strings(wantSrc)
	sort.Strings(wantTgt)
	if got := committedValues(t, src, "t"); fmt.Sprint(got) != fmt.Sprint(wantSrc) {
		t.Errorf("source, read_committed:\n got %v\nwant %v", got, wantSrc)
	}
	if got := committedValues(t, tgt, "t"); fmt.Sprint(got) != fmt.Sprint(wantTgt) {
		t.Errorf("target, read_committed:\n got %v\nwant %v", got, wantTgt)
	}
}

// A transaction may not span clusters: with a on the source and b on the
// target, adding b to a transaction open on the source is refused with
// INVALID_TXN_STATE (nothing of it reaches the target); once the id is
// re-initialized (which aborts the source transaction), the next
// transaction may run on the target.
func TestTransactionSpanningClustersIsRefused(t *testing.T) {
	srv, src, tgt := twoClusterProxy(t, tableFor(t, routesHeader+"routes:\n  default: source\n  topics:\n    a: source\n    b: target\n"), "a", "b")
	prod, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.TransactionalID("txn-span"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "a", Value: []byte("a0")}).FirstErr(); err != nil {
		t.Fatalf("produce a: %v", err)
	}
	err = prod.ProduceSync(ctx, &kgo.Record{Topic: "b", Value: []byte("b0")}).FirstErr()
	if !errors.Is(err, kerr.InvalidTxnState) {
		t.Fatalf("produce b in a transaction open on the source: %v, want INVALID_TXN_STATE", err)
	}
	// franz-go treats INVALID_TXN_STATE as fatal for its producer id; a
	// new client for the same transactional id re-initializes it, which
	// aborts the open transaction on the source.
	_ = prod.EndTransaction(ctx, kgo.TryAbort)
	prod.Close()
	prod, err = kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.TransactionalID("txn-span"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "b", Value: []byte("b1")}).FirstErr(); err != nil {
		t.Fatalf("produce b in a new transaction: %v", err)
	}
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit on the target: %v", err)
	}
	if got := committedValues(t, tgt, "b"); fmt.Sprint(got) != "[b1]" {
		t.Fatalf("target b, read_committed: %v, want [b1]", got)
	}
	if got := committedValues(t, src, "a"); len(got) != 0 {
		t.Fatalf("source a, read_committed: %v, want nothing (aborted)", got)
	}
}

// InitProducerId for a transactional id is answered virtually, like a
// broker's coordinator: a new producer keeps the PID and bumps the epoch
// (fencing the old one), the current producer's KIP-360 bump raises it
// again, a retried bump gets the same answer, and an older epoch is fenced.
// The PIDs are virtual even though kfake's real ones are random 63-bit
// numbers.
func TestTransactionalInitProducerIDIsVirtualAndMonotonic(t *testing.T) {
	srv, _, _ := twoClusterProxy(t, txnRoutes(t, Source), "t")
	cl, ctx := proxyClient(t, srv, 20*time.Second)
	initPID := func(pid int64, epoch int16) *kmsg.InitProducerIDResponse {
		t.Helper()
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = kmsg.StringPtr("txn-init")
		req.TransactionTimeoutMillis = 60000
		req.ProducerID, req.ProducerEpoch = pid, epoch
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first := initPID(-1, -1)
	if first.ErrorCode != 0 || !isVirtualPID(first.ProducerID) || first.ProducerEpoch != 0 {
		t.Fatalf("first init: %+v", first)
	}
	v := first.ProducerID
	steps := []struct {
		name        string
		pid         int64
		epoch       int16
		wantCode    int16
		wantEpoch   int16
		wantSamePID bool
	}{
		{"a new producer bumps the epoch", -1, -1, 0, 1, true},
		{"the current producer bumps (KIP-360)", v, 1, 0, 2, true},
		{"a retried bump gets the same answer", v, 1, 0, 2, true},
		{"an older epoch is fenced", v, 0, kerr.ProducerFenced.Code, -1, false},
		{"another PID is not this id's", v ^ 1, 2, kerr.InvalidProducerIDMapping.Code, -1, false},
	}
	for _, s := range steps {
		r := initPID(s.pid, s.epoch)
		if r.ErrorCode != s.wantCode || r.ProducerEpoch != s.wantEpoch || (s.wantSamePID && r.ProducerID != v) {
			t.Fatalf("%s: code %d pid %d epoch %d, want code %d epoch %d", s.name, r.ErrorCode, r.ProducerID, r.ProducerEpoch, s.wantCode, s.wantEpoch)
		}
	}
}

// A transaction whose client went away does not block a cutover forever:
// once its transaction.timeout.ms has passed and its coordinator no longer
// calls it ongoing (kfake aborts it), WaitTxnIdle stops waiting for it.
func TestWaitTxnIdleOutlivesAnAbandonedTransaction(t *testing.T) {
	srv, _, _ := twoClusterProxy(t, txnRoutes(t, Source), "t")
	cl, ctx := proxyClient(t, srv, 30*time.Second)

	// A client that begins a transaction on t and then says nothing more.
	ireq := kmsg.NewPtrInitProducerIDRequest()
	ireq.TransactionalID = kmsg.StringPtr("txn-abandoned")
	ireq.TransactionTimeoutMillis = 200
	iresp, err := ireq.RequestWith(ctx, cl)
	if err != nil || iresp.ErrorCode != 0 {
		t.Fatalf("init: %v %v", err, iresp)
	}
	areq := kmsg.NewPtrAddPartitionsToTxnRequest()
	areq.TransactionalID, areq.ProducerID, areq.ProducerEpoch = "txn-abandoned", iresp.ProducerID, iresp.ProducerEpoch
	at := kmsg.NewAddPartitionsToTxnRequestTopic()
	at.Topic, at.Partitions = "t", []int32{0}
	areq.Topics = append(areq.Topics, at)
	aresp, err := areq.RequestWith(ctx, cl)
	if err != nil || aresp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("add partitions: %v %v", err, aresp)
	}
	if got := srv.pids.txnOpenCluster("txn-abandoned"); got != Source {
		t.Fatalf("transaction open on %q, want source", got)
	}

	srv.HoldProduce("t")
	defer srv.ReleaseProduce("t")
	if err := srv.WaitTxnIdle(ctx, "t"); err != nil {
		t.Fatalf("an abandoned transaction blocked the cutover: %v", err)
	}
	// The cutover is safe: the client's late commit is refused upstream.
	ereq := kmsg.NewPtrEndTxnRequest()
	ereq.TransactionalID, ereq.ProducerID, ereq.ProducerEpoch, ereq.Commit = "txn-abandoned", iresp.ProducerID, iresp.ProducerEpoch, true
	eresp, err := ereq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if eresp.ErrorCode == 0 {
		t.Fatalf("a commit of an aborted transaction succeeded")
	}
}
