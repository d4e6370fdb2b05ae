package replicator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchLog records the source Fetch requests the replicator sends.
type fetchLog struct {
	mu   sync.Mutex
	reqs []fetchSeen
}

type fetchSeen struct {
	sessionID, epoch  int32
	minBytes, maxWait int32
	partitions        int // named in the request
	forgotten         int
	// The topics named and forgotten, by id (the replicator's fetches
	// name topics by id).
	named, forgot map[[16]byte]bool
}

func (l *fetchLog) add(req *kmsg.FetchRequest) {
	s := fetchSeen{sessionID: req.SessionID, epoch: req.SessionEpoch, minBytes: req.MinBytes, maxWait: req.MaxWaitMillis, named: map[[16]byte]bool{}, forgot: map[[16]byte]bool{}}
	for _, t := range req.Topics {
		s.partitions += len(t.Partitions)
		s.named[t.TopicID] = true
	}
	for _, t := range req.ForgottenTopics {
		s.forgotten += len(t.Partitions)
		s.forgot[t.TopicID] = true
	}
	l.mu.Lock()
	l.reqs = append(l.reqs, s)
	l.mu.Unlock()
}

func (l *fetchLog) since(n int) []fetchSeen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]fetchSeen(nil), l.reqs[n:]...)
}

func (l *fetchLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

type kfakePair struct {
	src, tgt *kfake.Cluster
	prod     *kgo.Client
	log      *fetchLog
	r        *Replicator
}

// startPair starts a source and a target kfake cluster, topics × parts
// partitions on the source with one record each, and a replicator copying
// them; it waits until everything is copied.
func startPair(t *testing.T, topics []string, parts int32, o Options) *kfakePair {
	t.Helper()
	src, tgt := newClusters(t, kfake.SeedTopics(parts, topics...))
	pp := &kfakePair{src: src, tgt: tgt, log: &fetchLog{}}
	src.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if fr := req.(*kmsg.FetchRequest); fr.ReplicaID == -1 && fr.IsolationLevel == 1 {
			pp.log.add(fr) // the replicator's shared fetches (read_committed)
		}
		return nil, nil, false
	})
	pp.prod = newClient(t, src.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for _, tp := range topics {
		for p := int32(0); p < parts; p++ {
			pp.produce(t, tp, p, 1)
		}
	}
	o.SourceBrokers, o.TargetBrokers = src.ListenAddrs(), tgt.ListenAddrs()
	o.Topics = topics
	o.StateDir = t.TempDir()
	if o.RetryBackoff == 0 {
		o.RetryBackoff = 50 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pp.r = startReplicator(t, ctx, o)
	t.Cleanup(pp.r.Stop)
	for _, tp := range topics {
		for p := int32(0); p < parts; p++ {
			pp.waitCopiedUnurged(t, tp, p, 1)
		}
	}
	return pp
}

// newClusters starts a one-broker source cluster (seed: its topics) and an
// empty one-broker target, both closed when the test ends.
func newClusters(t *testing.T, seed ...kfake.Opt) (src, tgt *kfake.Cluster) {
	t.Helper()
	src, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, seed...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	tgt, err = kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tgt.Close)
	return src, tgt
}

// newClient is a client of the cluster at addrs, closed when the test ends.
func newClient(t *testing.T, addrs []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// startReplicator makes a replicator of o and starts it; the caller stops
// it (when its run ends, which may be before the test's).
func startReplicator(t *testing.T, ctx context.Context, o Options) *Replicator {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func (pp *kfakePair) produce(t *testing.T, topic string, partition int32, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte(fmt.Sprintf("v%d", i))}
		if err := pp.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func (pp *kfakePair) waitCopied(t *testing.T, topic string, partition int32, end int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pp.r.WaitCopied(ctx, topic, partition, end); err != nil {
		t.Fatalf("%s/%d: copy did not reach %d: %v (status %+v)", topic, partition, end, err, pp.r.Status())
	}
}

// waitFetches waits until the source saw n more replicator fetches after
// mark.
func (pp *kfakePair) waitFetches(t *testing.T, mark, n int) []fetchSeen {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for pp.log.len() < mark+n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d fetches after %d", pp.log.len()-mark, mark)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return pp.log.since(mark)
}

// waitParked waits until the source fetcher's session holds n partitions,
// all of them parked at the offset the session has: the copy is idle.
func (pp *kfakePair) waitParked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pp.r.mu.Lock()
		fs := make([]*leaderFetcher, 0, len(pp.r.fetchers))
		for _, f := range pp.r.fetchers {
			fs = append(fs, f)
		}
		pp.r.mu.Unlock()
		parked := 0
		for _, f := range fs {
			f.mu.Lock()
			parked += len(f.parked)
			f.mu.Unlock()
		}
		if parked == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d partitions parked", parked, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkNoPartitionErrors(t *testing.T, r *Replicator) {
	t.Helper()
	for _, s := range r.Status() {
		if s.Err != "" {
			t.Errorf("%s/%d: %s", s.Topic, s.Partition, s.Err)
		}
	}
}

// An idle copy asks the source with incremental fetch session requests that
// name no partition at all, however many partitions it copies; new records
// still arrive through the session.
func TestIdleFetchesNameNoPartitions(t *testing.T) {
	topics := []string{"a", "b", "c", "d", "e"}
	pp := startPair(t, topics, 4, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: 20 * time.Millisecond})
	pp.waitParked(t, len(topics)*4)
	seen := pp.waitFetches(t, pp.log.len(), 8)
	// Fetches already in flight when the last partition parked still name
	// what changed (the fetch connection keeps one in flight while the
	// previous answer is handled); from the first empty one on, every idle
	// fetch must be empty.
	first := len(seen)
	for i, s := range seen {
		if s.partitions == 0 && s.forgotten == 0 {
			first = i
			break
		}
	}
	if first > 2 || len(seen)-first < 3 {
		t.Fatalf("the idle copy did not settle into empty incremental fetches: %+v", seen)
	}
	for _, s := range seen[first:] {
		if s.sessionID == 0 || s.epoch <= 0 {
			t.Fatalf("idle fetch without a session: %+v (all: %+v)", s, seen)
		}
		if s.partitions != 0 || s.forgotten != 0 {
			t.Fatalf("idle fetch names %d partitions and forgets %d, want none: %+v", s.partitions, s.forgotten, seen)
		}
	}
	// New records on one partition are copied; the others stay quiet.
	pp.produce(t, "c", 2, 3)
	pp.waitCopiedUnurged(t, "c", 2, 4)
	for _, tp := range topics {
		for p := int32(0); p < 4; p++ {
			if tp == "c" && p == 2 {
				continue
			}
			if got := pp.r.CopiedThrough(tp, p); got != 1 {
				t.Errorf("%s/%d copied through %d, want 1", tp, p, got)
			}
		}
	}
	checkNoPartitionErrors(t, pp.r)
}

// A broker that lost the session (a restart) answers with a session error;
// the fetcher starts over with a full fetch naming every partition, and no
// partition sees an error.
func TestFetchSessionLostStartsOver(t *testing.T) {
	for _, code := range []int16{kerr.FetchSessionIDNotFound.Code, kerr.InvalidFetchSessionEpoch.Code} {
		t.Run(kerr.ErrorForCode(code).Error(), func(t *testing.T) {
			topics := []string{"x", "y"}
			pp := startPair(t, topics, 3, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: 20 * time.Millisecond})
			pp.waitParked(t, len(topics)*3)
			pp.waitFetches(t, pp.log.len(), 2)
			var once sync.Once
			failed := make(chan int) // the index of the next fetch

			pp.src.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
				fr := req.(*kmsg.FetchRequest)
				if fr.SessionID == 0 {
					return nil, nil, false
				}
				handled := false
				once.Do(func() {
					handled = true
					failed <- pp.log.len() // the logger saw this one
				})
				if !handled {
					return nil, nil, false
				}
				resp := fr.ResponseKind().(*kmsg.FetchResponse)
				resp.ErrorCode = code
				return resp, nil, true
			})
			mark := <-failed
			pp.produce(t, "y", 1, 2)
			pp.waitCopiedUnurged(t, "y", 1, 3)
			seen := pp.waitFetches(t, mark, 2)
			if s := seen[0]; s.sessionID != 0 || s.epoch != 0 || s.partitions != len(topics)*3 {
				t.Fatalf("first fetch after the session error = %+v, want a full fetch of all %d partitions opening a session", s, len(topics)*3)
			}
			if s := seen[1]; s.sessionID == 0 || s.epoch != 1 {
				t.Fatalf("second fetch after the session error = %+v, want the new session at epoch 1", s)
			}
			checkNoPartitionErrors(t, pp.r)
		})
	}
}

// Partitions leaving (StopTopic) and joining (AddTopic) an idle session are
// forgotten and added; the copy of every topic goes on.
func TestIdleSessionPartitionsLeaveAndJoin(t *testing.T) {
	topics := []string{"p", "q"}
	pp := startPair(t, topics, 3, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: 50 * time.Millisecond})
	pp.waitParked(t, 6)
	pp.r.StopTopic("p")
	pp.waitParked(t, 3)
	pp.produce(t, "q", 0, 2)
	pp.waitCopiedUnurged(t, "q", 0, 3)
	pp.produce(t, "p", 1, 2) // p is not copied now
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pp.r.AddTopic(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	pp.waitCopiedUnurged(t, "p", 1, 3)
	pp.produce(t, "p", 2, 1)
	pp.produce(t, "q", 2, 1)
	pp.waitCopiedUnurged(t, "p", 2, 2)
	pp.waitCopiedUnurged(t, "q", 2, 2)
	checkNoPartitionErrors(t, pp.r)
}

// A long idle poll is not waited out by anything that needs the fetcher
// sooner. A partition that starts copying while the session's long poll
// is pending (a topic added, a copy session started again) is fetched
// beside it with sessionless fetches, and records on a partition the poll
// carries end it at once (the cutover's drain waits for such records).
// The poll here is an hour: without the side fetches the new topic's
// records would wait for it.
func TestPartitionJoiningALongPollIsFetchedBesideIt(t *testing.T) {
	pp := startPair(t, []string{"a", "b"}, 2, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(pp.prod).CreateTopic(ctx, 1, 1, nil, "n"); err != nil {
		t.Fatal(err)
	}
	pp.produce(t, "n", 0, 2)
	pp.waitLongPoll(t, 4)
	mark := pp.log.len()
	if err := pp.r.AddTopic(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	pp.waitCopiedUnurged(t, "n", 0, 2)
	pp.produce(t, "n", 0, 1)
	pp.waitCopiedUnurged(t, "n", 0, 3)
	seen := pp.log.since(mark)
	if len(seen) == 0 {
		t.Fatal("the new topic was copied without a fetch the source saw")
	}
	longPolls := 0
	for _, s := range seen {
		if s.sessionID != 0 && s.partitions == 0 && s.forgotten == 0 && longPolls == 0 {
			// The long poll itself: waitLongPoll sees it set just
			// before it is written, so the source may log it after mark.
			longPolls++
			continue
		}
		if s.sessionID != 0 || s.epoch != -1 || s.partitions != 1 {
			t.Fatalf("fetch during the long poll = %+v, want sessionless fetches of the new partition only (all: %+v)", s, seen)
		}
	}
	pp.produce(t, "b", 1, 2)
	pp.waitCopiedUnurged(t, "b", 1, 3)
	checkNoPartitionErrors(t, pp.r)
}

// waitLongPoll waits until the fetcher's session request is a long poll
// carrying n partitions.
func (pp *kfakePair) waitLongPoll(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pp.r.mu.Lock()
		carried := 0
		for _, f := range pp.r.fetchers {
			f.mu.Lock()
			carried += len(f.longPoll)
			f.mu.Unlock()
		}
		pp.r.mu.Unlock()
		if carried == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no long poll carrying %d partitions (%d)", n, carried)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFetch waits until a fetch after mark satisfies ok and returns the
// log's length once it has.
func (pp *kfakePair) waitFetch(t *testing.T, mark int, what string, ok func(fetchSeen) bool) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := pp.log.len()
		for _, s := range pp.log.since(mark) {
			if ok(s) {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in 20 s", what)
		}
		mark = n
		time.Sleep(2 * time.Millisecond)
	}
}

// waitCopiedUnurged waits for the copy by polling CopiedThrough, with
// nothing urging the partition (Urge gives it its own fetch lane:
// sessionless side fetches the tests of the session would see).
func (pp *kfakePair) waitCopiedUnurged(t *testing.T, topic string, partition int32, end int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for pp.r.CopiedThrough(topic, partition) < end {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%d: copy did not reach %d (status %+v)", topic, partition, end, pp.r.Status())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// An urgent partition (Urge: a cutover approaches or holds its topic) is
// copied on a lane of its own: the session request forgets it and the side
// loop fetches it sessionless, and its batches go on the urgent produce
// connection; the other topics stay in the session and on the shared
// connection. Released, it joins the session again and the sessionless
// fetches stop. Every record is copied once through both changes of lane.
func TestUrgentPartitionIsCopiedOnItsOwnLane(t *testing.T) {
	pp := startPair(t, []string{"a", "b"}, 2, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: 5 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	td, err := kadm.NewClient(pp.prod).ListTopics(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	a := td["a"].ID
	sent := func(urgent bool) int32 { // requests sent on a produce connection
		pp.r.pmu.Lock()
		defer pp.r.pmu.Unlock()
		conns := pp.r.pconns
		if urgent {
			conns = pp.r.uconns
		}
		n := int32(0)
		for _, c := range conns {
			c.qmu.Lock()
			n += c.corr
			c.qmu.Unlock()
		}
		return n
	}

	mark := pp.log.len()
	release := pp.r.Urge("a")
	// The session forgets topic a (a request already on its way may
	// still name it).
	mark = pp.waitFetch(t, mark, "a session request forgetting topic a", func(s fetchSeen) bool { return s.epoch > 0 && s.forgot[a] })
	urgentSent, sharedSent := sent(true), sent(false)
	pp.produce(t, "a", 0, 2)
	pp.produce(t, "a", 1, 1)
	pp.produce(t, "b", 0, 1)
	pp.waitCopiedUnurged(t, "a", 0, 3)
	pp.waitCopiedUnurged(t, "a", 1, 2)
	pp.waitCopiedUnurged(t, "b", 0, 2)
	sessionless := 0
	for _, s := range pp.log.since(mark) {
		switch {
		case s.epoch == -1 && (s.partitions > 2 || !s.named[a]):
			t.Fatalf("a sessionless fetch named %d partitions of %d topics; only topic a's 2 are urgent", s.partitions, len(s.named))
		case s.epoch == -1:
			sessionless++
		case s.named[a]:
			t.Fatalf("a session request named the urgent topic a: %+v", s)
		}
	}
	if sessionless == 0 {
		t.Fatal("the urgent topic's records were copied without a sessionless fetch")
	}
	// Three batches of a on the urgent connection, b's one on the shared.
	if du, ds := sent(true)-urgentSent, sent(false)-sharedSent; du != 3 || ds != 1 {
		t.Fatalf("produce requests while a was urgent: %d on the urgent connection, %d on the shared; want 3 and 1", du, ds)
	}

	release()
	release() // idempotent
	mark = pp.log.len()
	mark = pp.waitFetch(t, mark, "a session request naming topic a", func(s fetchSeen) bool { return s.epoch > 0 && s.named[a] })
	// A side fetch the side loop built before the release may still be
	// logged: let a few session polls pass first.
	for i := 0; i < 3; i++ {
		mark = pp.waitFetch(t, mark, "a session request", func(s fetchSeen) bool { return s.epoch > 0 })
	}
	urgentSent, sharedSent = sent(true), sent(false)
	pp.produce(t, "a", 0, 1)
	pp.produce(t, "a", 1, 2)
	pp.waitCopiedUnurged(t, "a", 0, 4)
	pp.waitCopiedUnurged(t, "a", 1, 4)
	for _, s := range pp.log.since(mark) {
		if s.epoch == -1 {
			t.Fatalf("a sessionless fetch with nothing urgent: %+v", s)
		}
	}
	if du, ds := sent(true)-urgentSent, sent(false)-sharedSent; du != 0 || ds != 3 {
		t.Fatalf("produce requests after the release: %d on the urgent connection, %d on the shared; want 0 and 3", du, ds)
	}
	checkNoPartitionErrors(t, pp.r)
	// Each record once on the target: its end is the source's.
	for _, s := range pp.r.Status() {
		if s.Topic == "a" && s.TargetEnd != 4 {
			t.Fatalf("a/%d: target end %d after 4 records, want 4", s.Partition, s.TargetEnd)
		}
	}
}

// Urge dials the urgent lane's produce connection to the urged topic's
// target leader at once, before any urgent batch: a cutover urges at the
// approach, and a caught-up partition's first urgent batch may come only
// in the hold, which would otherwise wait for the dial.
func TestUrgeDialsTheUrgentLaneAhead(t *testing.T) {
	pp := startPair(t, []string{"a"}, 2, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: time.Minute})
	urgentConns := func() int {
		pp.r.pmu.Lock()
		defer pp.r.pmu.Unlock()
		n := 0
		for _, c := range pp.r.uconns {
			if !c.isDead() {
				n++
			}
		}
		return n
	}
	if n := urgentConns(); n != 0 {
		t.Fatalf("%d urgent produce connections before any Urge", n)
	}
	release := pp.r.Urge("a")
	defer release()
	// No record is produced: only the dial can open the connection.
	deadline := time.Now().Add(10 * time.Second)
	for urgentConns() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no urgent produce connection after Urge, with nothing to copy")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
