package control

// The drain's frozen ends in one round trip (issue 15, item 3).
//
// A drain freezes the home's ends once every produce request of the topic
// is answered (cutover.go, drainInFlight), and it needs three things that
// must agree with each other: the log ends (every acknowledged record lies
// below them), the last stable offsets (equal to the ends: no transaction
// marker still to be written) and the producer state at those ends
// (decision 008), which is exact only if the ends did not move around it.
// Asked one after the other through the admin client, that was a
// ListOffsets pair, then a Metadata (unless the client's cache answered
// it), a DescribeProducers and a ListOffsets: three or four round trips in
// the hold, up to 61 ms on a quiet machine.
//
// Here the requests go to each partition leader at once, on connections
// of the controller's own, without waiting for an answer in between: on
// one connection ListOffsets (log ends), DescribeProducers and ListOffsets
// (log ends again), written together; beside them, on a second
// connection, ListOffsets with read_committed (stable ends). A Kafka
// broker reads the next request of a connection only after it answered
// the one before (its socket server mutes a connection while one of its
// requests is handled), so the broker handles the three in that order,
// and the producer state lies between two listings of the ends: when
// those agree, the state is that of the records below them, exactly as
// when the drain asked one after the other. The stable ends are listed
// beside the first ends, as the separate lookups did. Only the round
// trips in between are gone; the drain checks the same conditions
// (cutover.go). A loaded broker still queues each of the three behind
// the produce requests it is handling, so they cost that wait three
// times in a row (the second connection saves a fourth). Any failure here
// (no leaders learnt, a leader moved, a broker without DescribeProducers,
// a dead connection) sends the drain to the separate lookups, as before.
//
// The connections are dialed when the controller learns the leaders
// ahead of a cutover (adminOffsets.Warm), not in the hold, and dialed
// again there when they were idle long enough for a broker to close them.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
)

// frozenHome is what one freeze read from a topic's home, per partition.
type frozenHome struct {
	ends, stable map[int32]int64
	producers    map[int32][]proxy.ProducerState
	// after is the ends listed again after the producers were described.
	after map[int32]int64
}

// endsFreezer is an endOffsets that reads a frozenHome in one round trip
// (adminOffsets); an error sends the drain to the separate lookups.
type endsFreezer interface {
	Freeze(ctx context.Context, cluster, topic string) (*frozenHome, error)
}

// freezeIdle is how long a freeze connection may sit unused before Warm
// dials it again: a broker closes idle connections after
// connections.max.idle.ms, 10 minutes by default.
const freezeIdle = time.Minute

// freezeConns are the controller's own connections for freezes, one per
// cluster and broker.
type freezeConns struct {
	mu sync.Mutex
	m  map[freezeKey]*freezeConn
}

type freezeKey struct {
	cluster string
	broker  int32
	lane    int // freezeMain or freezeStable
}

// A freeze uses two connections to each leader: the ends, the producers
// and the ends again in a row on the main one, and beside them the stable
// ends (as the separate lookups listed the ends and the stable ends at
// once). A loaded broker queues each request behind the produce requests
// it is handling, so each request in a row costs that wait again; three
// in a row instead of four.
const (
	freezeMain = iota
	freezeStable
	freezeLanes
)

// freezeConn is one broker connection: one freeze at a time on it.
type freezeConn struct {
	mu   sync.Mutex
	nc   net.Conn
	br   *bufio.Reader
	fmtr *kmsg.RequestFormatter
	corr int32
	lo   int16 // ListOffsets version
	dp   int16 // DescribeProducers version, -1 if the broker has none
	dead bool
	used time.Time
}

// prepare makes sure cluster has a live, recently used connection to each
// of brokers (the leaders of a topic about to be cut over, by address).
func (f *freezeConns) prepare(ctx context.Context, cluster string, cl *kgo.Client, brokers map[int32]string) {
	if f == nil || cl == nil {
		return
	}
	for b, addr := range brokers {
		for lane := range freezeLanes {
			f.prepareOne(ctx, freezeKey{cluster, b, lane}, cl, addr)
		}
	}
}

func (f *freezeConns) prepareOne(ctx context.Context, k freezeKey, cl *kgo.Client, addr string) {
	f.mu.Lock()
	old := f.m[k]
	f.mu.Unlock()
	if old != nil && old.fresh() {
		return
	}
	c, err := dialFreezeConn(ctx, cl, k.broker, addr)
	if err != nil {
		return // the drain falls back to the separate lookups
	}
	f.mu.Lock()
	if f.m == nil {
		f.m = map[freezeKey]*freezeConn{}
	}
	f.m[k] = c
	f.mu.Unlock()
	if old != nil {
		old.close()
	}
}

func (f *freezeConns) get(cluster string, broker int32, lane int) *freezeConn {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[freezeKey{cluster, broker, lane}]
}

// close closes every connection (the controller's shutdown).
func (f *freezeConns) close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.m {
		c.close()
		delete(f.m, k)
	}
}

func dialFreezeConn(ctx context.Context, cl *kgo.Client, broker int32, addr string) (*freezeConn, error) {
	nc, av, err := replicator.DialBroker(ctx, cl, broker, addr)
	if err != nil {
		return nil, err
	}
	c := &freezeConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10),
		fmtr: kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-cutover")), used: time.Now(),
		lo: replicator.Version(av, kmsg.ListOffsets, kmsg.NewPtrListOffsetsRequest().MaxVersion()),
		dp: replicator.Version(av, kmsg.DescribeProducers, kmsg.NewPtrDescribeProducersRequest().MaxVersion())}
	if c.lo < 2 { // v2 is the first with an isolation level
		nc.Close()
		return nil, fmt.Errorf("broker %d at %s: no ListOffsets with read_committed", broker, addr)
	}
	return c, nil
}

func (c *freezeConn) fresh() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.dead && time.Since(c.used) < freezeIdle
}

func (c *freezeConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true
	c.nc.Close()
}

// errNoFreeze: the one-round-trip freeze cannot run for this topic.
var errNoFreeze = errors.New("no freeze connection")

// freezeAnswer is one broker's part of a frozenHome.
type freezeAnswer struct {
	ends, stable, after map[int32]int64
	producers           map[int32][]proxy.ProducerState
}

// exchange writes reqs together and reads their answers, in order.
func (c *freezeConn) exchange(ctx context.Context, reqs []kmsg.Request) ([]kmsg.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return nil, errNoFreeze
	}
	var buf, one []byte
	first := c.corr + 1
	for _, req := range reqs {
		c.corr++
		// AppendRequest sizes everything in its dst as one request.
		one = c.fmtr.AppendRequest(one[:0], req, c.corr)
		buf = append(buf, one...)
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > 10*time.Second {
		deadline = time.Now().Add(10 * time.Second)
	}
	_ = c.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) ([]kmsg.Response, error) {
		// The connection's answers are out of step now: never reuse it.
		c.dead = true
		c.nc.Close()
		return nil, err
	}
	if _, err := c.nc.Write(buf); err != nil {
		return fail(err)
	}
	resps := make([]kmsg.Response, len(reqs))
	for i, req := range reqs {
		resps[i] = req.ResponseKind()
		if err := replicator.ReadAnswer(c.br, first+int32(i), req, resps[i]); err != nil {
			return fail(fmt.Errorf("answer %d (key %d v%d): %w", i, req.Key(), req.GetVersion(), err))
		}
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.used = time.Now()
	return resps, nil
}

// freezeLeader runs the freeze of parts of topic on one leader: on the
// main connection ListOffsets, DescribeProducers, ListOffsets, and beside
// it a read_committed ListOffsets on the other.
func freezeLeader(ctx context.Context, main, side *freezeConn, topic string, parts []int32) (*freezeAnswer, error) {
	if main.dp < 0 {
		return nil, errors.New("the broker has no DescribeProducers")
	}
	listOffsets := func(c *freezeConn, isolation int8) *kmsg.ListOffsetsRequest {
		req := kmsg.NewPtrListOffsetsRequest()
		req.Version = c.lo
		req.ReplicaID, req.IsolationLevel = -1, isolation
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		for _, p := range parts {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		return req
	}
	dp := kmsg.NewPtrDescribeProducersRequest()
	dp.Version = main.dp
	dt := kmsg.NewDescribeProducersRequestTopic()
	dt.Topic, dt.Partitions = topic, parts
	dp.Topics = append(dp.Topics, dt)

	var stable []kmsg.Response
	var serr error
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		stable, serr = side.exchange(ctx, []kmsg.Request{listOffsets(side, 1)})
	}()
	resps, err := main.exchange(ctx, []kmsg.Request{listOffsets(main, 0), dp, listOffsets(main, 0)})
	<-listed
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}

	a := &freezeAnswer{producers: map[int32][]proxy.ProducerState{}}
	if a.ends, err = listedEnds(resps[0].(*kmsg.ListOffsetsResponse), topic, parts); err != nil {
		return nil, err
	}
	if a.stable, err = listedEnds(stable[0].(*kmsg.ListOffsetsResponse), topic, parts); err != nil {
		return nil, err
	}
	if a.after, err = listedEnds(resps[2].(*kmsg.ListOffsetsResponse), topic, parts); err != nil {
		return nil, err
	}
	for _, t := range resps[1].(*kmsg.DescribeProducersResponse).Topics {
		if t.Topic != topic {
			continue
		}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("producers of %s/%d: %w", topic, p.Partition, err)
			}
			ps := make([]proxy.ProducerState, 0, len(p.ActiveProducers))
			for _, d := range p.ActiveProducers {
				ps = append(ps, proxy.ProducerState{ID: d.ProducerID, Epoch: int16(d.ProducerEpoch), LastSequence: d.LastSequence})
			}
			a.producers[p.Partition] = ps
		}
	}
	if len(a.producers) != len(parts) {
		return nil, fmt.Errorf("the broker described %d of %d partitions of %s", len(a.producers), len(parts), topic)
	}
	return a, nil
}

// listedEnds is a ListOffsets answer's offsets for parts of topic; an
// error for any partition, or one missing, fails it.
func listedEnds(resp *kmsg.ListOffsetsResponse, topic string, parts []int32) (map[int32]int64, error) {
	out := make(map[int32]int64, len(parts))
	for _, t := range resp.Topics {
		if t.Topic != topic {
			continue
		}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("end offset of %s/%d: %w", topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	if len(out) != len(parts) {
		return nil, fmt.Errorf("the broker listed %d of %d partitions of %s", len(out), len(parts), topic)
	}
	return out, nil
}

// Freeze reads topic's ends, stable ends, producers and ends again from
// its leaders on cluster (learnt by Warm), each leader's four requests
// written together on the freeze connection, all leaders at once.
func (a adminOffsets) Freeze(ctx context.Context, cluster, topic string) (*frozenHome, error) {
	leaders := a.leaders.get(cluster, topic)
	if leaders == nil || a.freeze == nil {
		return nil, errNoFreeze
	}
	byLeader := map[int32][]int32{}
	for p, l := range leaders {
		byLeader[l] = append(byLeader[l], p)
	}
	type answer struct {
		a   *freezeAnswer
		err error
	}
	answers := make(chan answer, len(byLeader))
	for l, parts := range byLeader {
		main, side := a.freeze.get(cluster, l, freezeMain), a.freeze.get(cluster, l, freezeStable)
		if main == nil || side == nil {
			answers <- answer{err: errNoFreeze}
			continue
		}
		go func() {
			fa, err := freezeLeader(ctx, main, side, topic, parts)
			answers <- answer{fa, err}
		}()
	}
	fh := &frozenHome{ends: map[int32]int64{}, stable: map[int32]int64{}, after: map[int32]int64{}, producers: map[int32][]proxy.ProducerState{}}
	var err error
	for range byLeader {
		an := <-answers
		if an.err != nil {
			if err == nil {
				err = an.err
			}
			continue
		}
		for p, e := range an.a.ends {
			fh.ends[p], fh.stable[p], fh.after[p] = e, an.a.stable[p], an.a.after[p]
		}
		for p, ps := range an.a.producers {
			fh.producers[p] = ps
		}
	}
	if err != nil {
		// A leader that moved answers NOT_LEADER: the separate lookups
		// find it (quickEnds forgets the leaders it learnt).
		return nil, fmt.Errorf("%s: %w", cluster, err)
	}
	return fh, nil
}
