// Package hatest drives several kproxy instances of one virtual cluster
// from the clients' side, for the kfake test (control/) and the real-Kafka
// test (test/integration/) alike: what each instance tells a client about
// the virtual cluster (Ask, Agreed), and a producer and a consumer group
// bootstrapped from every instance whose history the repo's checker
// (test/checker) judges (Traffic).
package hatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/test/checker"
)

// View is what one instance tells a client about the virtual cluster.
type View struct {
	Brokers []string         // "id@host:port", sorted
	Leaders map[int32]int32  // the topic's partition -> leader node id
	Addr    map[int32]string // node id -> host:port
	Coord   int32            // the group's coordinator
}

// Ask asks the instance at addr directly (its seed connection, never a
// broker the client learned from it) for topic's metadata and group's
// coordinator.
func Ask(ctx context.Context, addr, topic, group string) (View, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return View{}, err
	}
	defer cl.Close()
	b := cl.SeedBrokers()[0]
	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(topic)}}
	mresp, err := b.Request(ctx, mreq)
	if err != nil {
		return View{}, err
	}
	m := mresp.(*kmsg.MetadataResponse)
	v := View{Leaders: map[int32]int32{}, Addr: map[int32]string{}}
	for _, br := range m.Brokers {
		a := fmt.Sprintf("%s:%d", br.Host, br.Port)
		v.Brokers = append(v.Brokers, fmt.Sprintf("%d@%s", br.NodeID, a))
		v.Addr[br.NodeID] = a
	}
	slices.Sort(v.Brokers)
	for _, t := range m.Topics {
		for _, p := range t.Partitions {
			v.Leaders[p.Partition] = p.Leader
		}
	}
	creq := kmsg.NewPtrFindCoordinatorRequest()
	creq.CoordinatorKey, creq.CoordinatorKeys = group, []string{group}
	cresp, err := b.Request(ctx, creq)
	if err != nil {
		return View{}, err
	}
	c := cresp.(*kmsg.FindCoordinatorResponse)
	code, node := c.ErrorCode, c.NodeID
	if len(c.Coordinators) > 0 { // v4+
		code, node = c.Coordinators[0].ErrorCode, c.Coordinators[0].NodeID
	}
	if err := kerr.ErrorForCode(code); err != nil {
		return View{}, err
	}
	v.Coord = node
	return v, nil
}

// Coordinator asks the instance at addr directly which node coordinates
// key (typ 0: a group, 1: a transactional id), again while the answer is a
// retriable error (a real broker answers COORDINATOR_NOT_AVAILABLE until
// its transaction state topic exists).
func Coordinator(ctx context.Context, addr string, typ int8, key string) (int32, error) {
	for {
		node, err := coordinator(ctx, addr, typ, key)
		if err == nil || !kerr.IsRetriable(err) || ctx.Err() != nil {
			return node, err
		}
		select {
		case <-ctx.Done():
			return node, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func coordinator(ctx context.Context, addr string, typ int8, key string) (int32, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return -1, err
	}
	defer cl.Close()
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType, req.CoordinatorKey, req.CoordinatorKeys = typ, key, []string{key}
	r, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		return -1, err
	}
	c := r.(*kmsg.FindCoordinatorResponse)
	code, node := c.ErrorCode, c.NodeID
	if len(c.Coordinators) > 0 { // v4+
		code, node = c.Coordinators[0].ErrorCode, c.Coordinators[0].NodeID
	}
	return node, kerr.ErrorForCode(code)
}

// Agreed waits until every instance in addrs lists n brokers and all give
// the same answers, and returns that view, or the last answers when ctx
// ends first.
func Agreed(ctx context.Context, addrs []string, n int, topic, group string) (View, error) {
	var last []View
	for {
		last = last[:0]
		ok := true
		for _, a := range addrs {
			v, err := Ask(ctx, a, topic, group)
			if err != nil || len(v.Brokers) != n {
				ok = false
				break
			}
			last = append(last, v)
		}
		if ok && len(last) > 0 && allSame(last) {
			return last[0], nil
		}
		select {
		case <-ctx.Done():
			return View{}, fmt.Errorf("the instances never agreed on %d brokers; last answers: %+v", n, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AgreedAsBefore waits, as Agreed does, until the instances in addrs agree
// on as many brokers as before lists, then checks that they hand out the
// same partition leaders and group coordinator as before: instances that
// left and came back (same id and address) take back their share.
func AgreedAsBefore(ctx context.Context, addrs []string, before View, topic, group string) error {
	v, err := Agreed(ctx, addrs, len(before.Brokers), topic, group)
	if err != nil {
		return err
	}
	if !maps.Equal(v.Leaders, before.Leaders) || v.Coord != before.Coord {
		return fmt.Errorf("leaders %v coordinator %d; before: %v %d", v.Leaders, v.Coord, before.Leaders, before.Coord)
	}
	return nil
}

func allSame(vs []View) bool {
	for _, v := range vs[1:] {
		if !slices.Equal(v.Brokers, vs[0].Brokers) || v.Coord != vs[0].Coord || len(v.Leaders) != len(vs[0].Leaders) {
			return false
		}
		for p, l := range v.Leaders {
			if vs[0].Leaders[p] != l {
				return false
			}
		}
	}
	return true
}

// Instance returns the index in addrs of node's address in v, or -1.
func (v View) Instance(addrs []string, node int32) int {
	return slices.Index(addrs, v.Addr[node])
}

// Traffic is an idempotent producer writing numbered records to every
// partition of a topic and a consumer group reading them, both bootstrapped
// from every instance. Each record is "p<partition>/<sequence>", so Check
// can tell order and exactly-once per partition. AddGroup adds more
// consumer groups reading the same records, each judged on its own.
type Traffic struct {
	addrs      []string
	topic      string
	partitions int32
	prod       *kgo.Client
	cons       *kgo.Client // the first group's client (readers[0].cl)
	readers    []*reader

	mu      sync.Mutex // guards the fields below and each reader's committed, rereads and rewound
	next    []int      // per partition: the next sequence to produce
	acked   map[int32][]int
	acks    []checker.Ack
	ackedAt map[int32][]time.Time // per partition, when each ack came, in order
	failure error
}

// reader is one consumer group's client and what it read.
type reader struct {
	group string
	cl    *kgo.Client

	// only Consume touches seen and consumed
	seen     map[int32][]int // first readings, in the order read
	consumed []checker.Consumed
	// epoch counts the consumer's assignment changes: after one, the
	// group may read again from its last commit (at-least-once), which
	// the checker accepts as redelivery, not as reordering.
	epoch atomic.Int32
	// assigned, revoked and lost count kgo's callbacks: each assignment
	// after the first is a rebalance this member went through.
	assigned, revoked, lost atomic.Int32

	// committed is, per partition, the highest offset a commit the
	// coordinator acknowledged stored (written by kgo's commit callback).
	// rereads counts the records read again; rewound names those read
	// again from below committed: at-least-once allows reading again what
	// came after the last acknowledged commit, never before it.
	committed map[int32]int64
	rereads   int
	rewound   []string
}

// NewTraffic builds the clients; extra options apply to both.
func NewTraffic(addrs []string, topic string, partitions int32, group string, extra ...kgo.Opt) (*Traffic, error) {
	common := append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.MetadataMinAge(100 * time.Millisecond)}, extra...)
	prod, err := kgo.NewClient(append(common, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return nil, err
	}
	t := &Traffic{addrs: addrs, topic: topic, partitions: partitions, prod: prod,
		next: make([]int, partitions), acked: map[int32][]int{}, ackedAt: map[int32][]time.Time{}}
	if err := t.AddGroup(group, extra...); err != nil {
		prod.Close()
		return nil, err
	}
	t.cons = t.readers[0].cl
	return t, nil
}

// AddGroup adds a consumer group reading the topic from the start,
// bootstrapped from every instance like the first; extra options apply to
// it alone (kgo.FetchIsolationLevel, say). Consume and Settle read with
// every group, Check judges each against the same acknowledgements.
func (t *Traffic) AddGroup(group string, extra ...kgo.Opt) error {
	r := &reader{group: group, seen: map[int32][]int{}, committed: map[int32]int64{}}
	bump := func(n *atomic.Int32) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(context.Context, *kgo.Client, map[string][]int32) { n.Add(1); r.epoch.Add(1) }
	}
	// The offsets each commit stored, as the coordinator acknowledged them
	// partition by partition.
	noteCommit := func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil || req == nil || resp == nil {
			return
		}
		sent := map[int32]int64{}
		for _, qt := range req.Topics {
			for _, qp := range qt.Partitions {
				sent[qp.Partition] = qp.Offset
			}
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if o, ok := sent[rp.Partition]; ok && rp.ErrorCode == 0 {
					r.committed[rp.Partition] = max(r.committed[rp.Partition], o)
				}
			}
		}
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(t.addrs...), kgo.MetadataMinAge(100 * time.Millisecond)}, extra...)
	cl, err := kgo.NewClient(append(opts, kgo.ConsumerGroup(group), kgo.ConsumeTopics(t.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(500*time.Millisecond),
		kgo.OnPartitionsAssigned(bump(&r.assigned)), kgo.OnPartitionsRevoked(bump(&r.revoked)), kgo.OnPartitionsLost(bump(&r.lost)),
		kgo.AutoCommitCallback(noteCommit))...)
	if err != nil {
		return err
	}
	r.cl = cl
	t.readers = append(t.readers, r)
	return nil
}

// GroupStats is what one consumer group of a Traffic went through.
type GroupStats struct {
	Group string
	// Assigned, Revoked and Lost count kgo's callbacks for the member:
	// every assignment after the first is a rebalance it went through
	// (Lost: its group session ended without a revoke, e.g. because the
	// coordinator could not be reached).
	Assigned, Revoked, Lost int
	Generation              int32 // as the member last joined
	Rereads                 int   // records read again after an assignment change
}

// Rebalances is how many times the member rejoined after its first
// assignment.
func (g GroupStats) Rebalances() int { return max(g.Assigned-1, 0) }

func (g GroupStats) String() string {
	return fmt.Sprintf("%s: %d rebalances (assigned %d, revoked %d, lost %d), generation %d, read again %d",
		g.Group, g.Rebalances(), g.Assigned, g.Revoked, g.Lost, g.Generation, g.Rereads)
}

// Groups reports on every consumer group, the first first.
func (t *Traffic) Groups() []GroupStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gs []GroupStats
	for _, r := range t.readers {
		_, gen := r.cl.GroupMetadata()
		gs = append(gs, GroupStats{Group: r.group, Assigned: int(r.assigned.Load()), Revoked: int(r.revoked.Load()), Lost: int(r.lost.Load()),
			Generation: gen, Rereads: r.rereads})
	}
	return gs
}

// NewTxnTraffic builds the clients of Txn: a producer with transactional
// id txnID and a read_committed consumer group. extra options apply to the
// producer after the defaults (kgo.TransactionTimeout, say: 10 s unless
// given).
func NewTxnTraffic(addrs []string, topic string, partitions int32, group, txnID string, extra ...kgo.Opt) (*Traffic, error) {
	t, err := NewTraffic(addrs, topic, partitions, group, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	t.prod.Close()
	t.prod, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.MetadataMinAge(100 * time.Millisecond), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID(txnID), kgo.TransactionTimeout(10 * time.Second)}, extra...)...)
	if err != nil {
		t.cons.Close()
		return nil, err
	}
	return t, nil
}

// Txn runs one transaction of n records to every partition (a Traffic from
// NewTxnTraffic). A committed transaction's records count as produced and
// acknowledged; an aborted one's are written as "aborted/..." and must
// never be read (Consume records a failure for each).
func (t *Traffic) Txn(ctx context.Context, n int, commit bool) error {
	if err := t.prod.BeginTransaction(); err != nil {
		return err
	}
	if commit {
		t.Produce(ctx, n)
	} else {
		for i := range n {
			for p := range t.partitions {
				t.prod.Produce(ctx, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "aborted/%d", i)}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.mu.Lock()
						t.failure = errors.Join(t.failure, fmt.Errorf("aborted transaction, partition %d: %w", p, err))
						t.mu.Unlock()
					}
				})
			}
		}
	}
	if err := t.Flush(ctx); err != nil {
		_ = t.prod.EndTransaction(ctx, kgo.TryAbort)
		return err
	}
	return t.prod.EndTransaction(ctx, kgo.TransactionEndTry(commit))
}

// Close closes the producer and every group's client.
func (t *Traffic) Close() {
	t.prod.Close()
	for _, r := range t.readers {
		r.cl.Close()
	}
}

// Produce sends n more records to every partition without waiting.
func (t *Traffic) Produce(ctx context.Context, n int) {
	for range n {
		for p := range t.partitions {
			t.mu.Lock()
			seq := t.next[p]
			t.next[p]++
			t.mu.Unlock()
			key := fmt.Appendf(nil, "p%d", p)
			t.prod.Produce(ctx, &kgo.Record{Partition: p, Key: key, Value: fmt.Appendf(nil, "p%d/%d", p, seq)}, func(rec *kgo.Record, err error) {
				t.mu.Lock()
				defer t.mu.Unlock()
				if err != nil {
					t.failure = errors.Join(t.failure, fmt.Errorf("partition %d sequence %d: %w", p, seq, err))
					return
				}
				t.acked[rec.Partition] = append(t.acked[rec.Partition], seq)
				t.ackedAt[rec.Partition] = append(t.ackedAt[rec.Partition], time.Now())
				t.acks = append(t.acks, checker.Ack{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Key: string(rec.Key), Value: string(rec.Value)})
			})
		}
	}
}

// ProduceEvery produces one record to each partition every period until
// load ends (Produce; ctx bounds each record): the steady load the
// instance tests restart and kill instances under.
func (t *Traffic) ProduceEvery(ctx, load context.Context, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-load.Done():
			return
		case <-tick.C:
			t.Produce(ctx, 1)
		}
	}
}

// Flush waits for every record produced so far; an error names the first
// records that failed.
func (t *Traffic) Flush(ctx context.Context) error {
	if err := t.prod.Flush(ctx); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failure
}

// Produced is how many records were produced so far, over all partitions.
func (t *Traffic) Produced() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, x := range t.next {
		n += x
	}
	return n
}

// Consume polls, with every group at once, until each has consumed total
// distinct records in all (reads again after an assignment change do not
// count) or ctx ends.
func (t *Traffic) Consume(ctx context.Context, total int) error {
	errs := make([]error, len(t.readers))
	var wg sync.WaitGroup
	for i, r := range t.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = t.consume(ctx, r, total)
			if errs[i] != nil && len(t.readers) > 1 {
				errs[i] = fmt.Errorf("group %s: %w", r.group, errs[i])
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (t *Traffic) consume(ctx context.Context, r *reader, total int) error {
	distinct := func() int {
		n := 0
		for _, s := range r.seen {
			n += len(s)
		}
		return n
	}
	for distinct() < total {
		if ctx.Err() != nil {
			return fmt.Errorf("consumed %d of %d records: %w", distinct(), total, ctx.Err())
		}
		fs := r.cl.PollFetches(ctx)
		fs.EachRecord(func(rec *kgo.Record) {
			if strings.HasPrefix(string(rec.Value), "aborted/") {
				t.mu.Lock()
				t.failure = errors.Join(t.failure, fmt.Errorf("group %s read an aborted transaction's record at partition %d offset %d", r.group, rec.Partition, rec.Offset))
				t.mu.Unlock()
				return
			}
			_, s, _ := strings.Cut(string(rec.Value), "/")
			n, _ := strconv.Atoi(s)
			if n >= len(r.seen[rec.Partition]) { // else read again after an assignment change
				r.seen[rec.Partition] = append(r.seen[rec.Partition], n)
			} else {
				t.mu.Lock()
				r.rereads++
				if c := r.committed[rec.Partition]; rec.Offset < c {
					r.rewound = append(r.rewound, fmt.Sprintf("partition %d offset %d (acknowledged commit %d)", rec.Partition, rec.Offset, c))
				}
				t.mu.Unlock()
			}
			r.consumed = append(r.consumed, checker.Consumed{Client: "franz", Consumer: r.group, Topic: rec.Topic, Partition: rec.Partition,
				Offset: rec.Offset, Key: string(rec.Key), Value: string(rec.Value), Epoch: int(r.epoch.Load())})
		})
	}
	return nil
}

// AckGap is the longest time within [from, to] that a partition went
// without an acknowledgement (counted from its last ack before from, and
// up to to when none came after), and that partition: how long a fault in
// that window held the producer up, for a producer that keeps producing.
func (t *Traffic) AckGap(from, to time.Time) (time.Duration, int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gap time.Duration
	part := int32(-1)
	for p := range t.partitions {
		last := from
		for _, at := range t.ackedAt[p] {
			if at.After(to) {
				break
			}
			if at.After(from) && at.Sub(last) > gap {
				gap, part = at.Sub(last), p
			}
			last = at
		}
		if to.Sub(last) > gap {
			gap, part = to.Sub(last), p
		}
	}
	return gap, part
}

// Acks is every acknowledgement so far, for a checker run over another
// client's consumption of the same records.
func (t *Traffic) Acks() []checker.Ack {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.acks)
}

// Generation is the first consumer group's generation as the consumer
// last joined it (-1 before it joined): the difference between two
// readings is the number of rebalances in between.
func (t *Traffic) Generation() int32 {
	_, gen := t.cons.GroupMetadata()
	return gen
}

// Rereads is how many records the groups have read again so far (after an
// assignment change, from their last commit).
func (t *Traffic) Rereads() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, r := range t.readers {
		n += r.rereads
	}
	return n
}

// Settle flushes the producer, then consumes every record produced so
// far: the step the tests take between faults.
func (t *Traffic) Settle(ctx context.Context) error {
	if err := t.Flush(ctx); err != nil {
		return err
	}
	return t.Consume(ctx, t.Produced())
}

// Check judges the history: the checker finds nothing lost, duplicated,
// reordered or moved, and every partition's records were acknowledged
// exactly once each and first read in sequence order by every group. A
// group reads again from its last commit after an assignment change (an
// instance leaving moves the coordinator: at-least-once), which counts as
// redelivery, not as a duplicate; but a record read again from before a
// commit the coordinator acknowledged is a rewind, and fails. It returns
// the checker's one-line verdict (one per group, named, when there are
// several) and how many records were read again.
func (t *Traffic) Check() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failure != nil {
		return "", t.failure
	}
	for p := range t.partitions {
		got := slices.Clone(t.acked[p])
		slices.Sort(got)
		if !slices.Equal(got, seq(t.next[p])) {
			return "", fmt.Errorf("partition %d: acknowledged %v, want 0..%d once each", p, got, t.next[p]-1)
		}
	}
	var verdicts []string
	for _, r := range t.readers {
		v, err := t.check(r)
		if len(t.readers) > 1 {
			v = r.group + ": " + v
			if err != nil {
				err = fmt.Errorf("group %s: %w", r.group, err)
			}
		}
		verdicts = append(verdicts, v)
		if err != nil {
			return strings.Join(verdicts, "; "), err
		}
	}
	return strings.Join(verdicts, "; "), nil
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// check judges one group's readings (t.mu held).
func (t *Traffic) check(r *reader) (string, error) {
	rep := checker.Check(t.acks, r.consumed, checker.Options{ExpectAll: true, RequireAcked: true, AllowRedelivery: true})
	verdict := fmt.Sprintf("%s; read again %d", rep, r.rereads)
	if len(r.rewound) > 0 {
		return verdict, fmt.Errorf("the group read %d records again from before a commit its coordinator had acknowledged (a rewind, not at-least-once), first: %s", len(r.rewound), r.rewound[0])
	}
	if !rep.OK() {
		return rep.String(), fmt.Errorf("checker: %s\n%s", rep, rep.Details())
	}
	for p := range t.partitions {
		if want := seq(t.next[p]); !slices.Equal(r.seen[p], want) {
			return verdict, fmt.Errorf("partition %d: consumed %v, want 0..%d once each, in order", p, r.seen[p], t.next[p]-1)
		}
	}
	return verdict, nil
}

// ProducedTo is how many records were produced to partition p so far.
func (t *Traffic) ProducedTo(p int32) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next[p]
}
