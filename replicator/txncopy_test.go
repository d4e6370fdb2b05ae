package replicator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
)

// pauser blocks a replicator's copy before its next batch once armed, as a
// SIGSTOP of the instance would (Hooks.BeforeSend).
type pauser struct {
	mu      sync.Mutex
	armed   bool
	blocked chan struct{} // closed once the copy is blocked
	resume  chan struct{} // closed to let it go on
}

func newPauser() *pauser {
	return &pauser{blocked: make(chan struct{}), resume: make(chan struct{})}
}

func (pz *pauser) arm() {
	pz.mu.Lock()
	pz.armed = true
	pz.mu.Unlock()
}

func (pz *pauser) hook(string, int32) {
	pz.mu.Lock()
	armed := pz.armed
	pz.armed = false
	pz.mu.Unlock()
	if armed {
		close(pz.blocked)
		<-pz.resume
	}
}

// readTarget reads every committed record of a partition of the target.
func readTarget(t *testing.T, addrs []string, topic string, partition int32, end int) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for len(got) < end && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	// Anything past end is a duplicate: give it a moment to show.
	short, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	return got
}

// Issue 14: an instance that copied a partition and was paused (SIGSTOP)
// while another instance took the partition over must not write the
// batch it had in hand when it resumes: the new owner's InitProducerId
// fenced it at the broker. The target holds every source record once, in
// order; the paused copy stops as fenced (no retry: a retry would fence
// the new owner in turn), and the new owner, which never copied the
// partition, rebuilt its offset map from the target log, markers included.
// With the idempotent copy (no TransactionalIDPrefix) the resumed batch is
// appended a second time.
func TestPausedOwnerIsFencedWhenAnotherInstanceTakesThePartitionOver(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(1, "own"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("own"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var want []string
	produce := func(tag string, n int) {
		t.Helper()
		for i := 0; i < n; i++ { // one batch each: several batches per fetch answer
			v := fmt.Sprintf("%s-%d", tag, i)
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			want = append(want, v)
		}
	}
	start := func(dir string, hooks Hooks) *Replicator {
		t.Helper()
		r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"own"},
			StateDir: dir, RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond,
			TransactionalIDPrefix: "kproxy-test-copy-", Hooks: hooks})
		t.Cleanup(r.Stop)
		return r
	}
	wait := func(r *Replicator, end int64) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		if err := r.WaitCopied(wctx, "own", 0, end); err != nil {
			t.Fatalf("copy did not reach %d: %v (status %+v)", end, err, r.Status())
		}
	}

	pz := newPauser()
	a := start(t.TempDir(), Hooks{BeforeSend: pz.hook})
	produce("a", 20)
	wait(a, 20)

	// A is paused with the next batch in hand, its transaction open.
	pz.arm()
	produce("b", 10)
	select {
	case <-pz.blocked:
	case <-ctx.Done():
		t.Fatal("the first copy never reached its next batch")
	}

	// B takes the partition over: it has no map of its own.
	b := start(t.TempDir(), Hooks{})
	wait(b, 30)
	produce("c", 10)
	wait(b, 40)

	// A resumes: the target refuses its write, and A stops.
	close(pz.resume)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := a.Status()
		if len(st) == 1 && st[0].Fenced {
			if st[0].Fatal {
				t.Fatalf("a fenced copy is reported fatal: %+v", st[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed copy was not fenced: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}

	got := readTarget(t, tgt.ListenAddrs(), "own", 0, len(want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the target holds %d records:\n%v\nwant the %d source records once, in order:\n%v", len(got), got, len(want), want)
	}

	// B's rebuilt map is exact: each source offset leads to its record,
	// and the markers are target gaps.
	m := b.Map("own", 0)
	if m.TargetGaps() == 0 {
		t.Fatal("the map records no target gap: the commit markers would be taken for copied records")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for s := int64(0); s < int64(len(want)); s++ {
		to, ok := m.ToTarget(s)
		if !ok {
			t.Fatalf("source offset %d does not map", s)
		}
		if back, _ := m.ToSource(to); back != s {
			t.Fatalf("source offset %d -> target %d -> source %d", s, to, back)
		}
		cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{"own": {0: kgo.NewOffset().At(to)}})
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		var rec *kgo.Record
		for rec == nil && fctx.Err() == nil {
			cl.PollRecords(fctx, 1).EachRecord(func(r *kgo.Record) {
				if rec == nil {
					rec = r
				}
			})
		}
		fcancel()
		cl.RemoveConsumePartitions(map[string][]int32{"own": {0}})
		if rec == nil || rec.Offset != to || string(rec.Value) != want[s] {
			t.Fatalf("source offset %d maps to target offset %d, which holds %+v, want %q", s, to, rec, want[s])
		}
	}
}

// With Options.Owns, each instance copies the partitions it owns, and a
// partition handed from one to the other (Reassign after a membership
// change) goes on from the target log on its new owner, which rebuilds
// its map there: every record once, in order, and the instance that gave
// the partition up no longer has a map for it (it translates nothing for
// a partition it does not copy).
func TestReassignHandsPartitionsOverBetweenInstances(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(2, "mv"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("mv"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	want := map[int32][]string{}
	produce := func(tag string) {
		t.Helper()
		for p := int32(0); p < 2; p++ {
			for i := 0; i < 5; i++ {
				v := fmt.Sprintf("%s-%d-%d", tag, p, i)
				if err := prod.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(v)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
				want[p] = append(want[p], v)
			}
		}
	}
	var mu sync.Mutex
	owner := map[int32]string{0: "a", 1: "b"}
	start := func(self string) *Replicator {
		t.Helper()
		r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"mv"},
			StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond,
			TransactionalIDPrefix: "kproxy-test-copy-",
			Owns: func(_ string, p int32) bool {
				mu.Lock()
				defer mu.Unlock()
				return owner[p] == self
			}})
		t.Cleanup(r.Stop)
		return r
	}
	wait := func(r *Replicator, p int32, end int64) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		if err := r.WaitCopied(wctx, "mv", p, end); err != nil {
			t.Fatalf("partition %d: copy did not reach %d: %v (status %+v)", p, end, err, r.Status())
		}
	}
	a, b := start("a"), start("b")
	if n := a.Partitions("mv"); n != 2 {
		t.Fatalf("Partitions = %d, want the topic's 2 whether copied here or not", n)
	}
	produce("one")
	wait(a, 0, 5)
	wait(b, 1, 5)
	if a.Map("mv", 1) != nil || b.Map("mv", 0) != nil {
		t.Fatal("an instance has a map of a partition it does not copy")
	}

	mu.Lock()
	owner[1] = "a" // b leaves
	mu.Unlock()
	b.Reassign()
	a.Reassign()
	if b.Map("mv", 1) != nil {
		t.Fatal("b still has a map of the partition it gave up")
	}
	produce("two")
	wait(a, 0, 10)
	wait(a, 1, 10)

	mu.Lock()
	owner[0], owner[1] = "b", "b" // a leaves, b comes back
	mu.Unlock()
	a.Reassign()
	b.Reassign()
	produce("three")
	wait(b, 0, 15)
	wait(b, 1, 15)
	for p := int32(0); p < 2; p++ {
		got := readTarget(t, tgt.ListenAddrs(), "mv", p, len(want[p]))
		if fmt.Sprint(got) != fmt.Sprint(want[p]) {
			t.Fatalf("partition %d: the target holds %v, want %v", p, got, want[p])
		}
	}
}

// Issue 14: the fenced copy continues its producer's sequence from one
// transaction to the next on a destination without transactions version 2
// (before Kafka 4.0, EndTxn below v5: the commit keeps the epoch). It
// restarted every transaction's sequence at 0, so every second
// transaction was refused with OUT_OF_ORDER_SEQUENCE_NUMBER and the copy
// started a new session each time (the copy back to a 3.9 source on real
// Kafka, seen as flips back to the source holding for over a second).
func TestFencedCopyContinuesItsSequenceAcrossTransactionsWithoutEpochBumps(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "seq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.MaxVersions(kversion.V3_9_0()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tgt.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var restarts []string
	r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"seq"},
		StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond,
		TransactionalIDPrefix: "kproxy-test-copy-"})
	t.Cleanup(r.Stop)
	prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("seq"))
	var want []string
	for round := 0; round < 6; round++ { // one transaction (at least) per round
		for i := 0; i < 3; i++ {
			v := fmt.Sprintf("r%d-%d", round, i)
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			want = append(want, v)
		}
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.WaitCopied(wctx, "seq", 0, int64(len(want)))
		wcancel()
		if err != nil {
			t.Fatalf("round %d: the copy did not reach %d: %v (status %+v)", round, len(want), err, r.Status())
		}
		for _, st := range r.Status() {
			if st.Topic == "seq" && st.Err != "" {
				restarts = append(restarts, fmt.Sprintf("round %d: %s", round, st.Err))
			}
		}
	}
	if len(restarts) > 0 {
		t.Fatalf("the copy's session was interrupted: %v", restarts)
	}
	got := readTarget(t, tgt.ListenAddrs(), "seq", 0, len(want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("target holds %v, want %v", got, want)
	}
}
