package control

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
)

// haRig is several kproxy instances of one virtual cluster in this process,
// each with its own listener and state_dir, against one kfake cluster that
// is both the target and the control cluster.
type haRig struct {
	t      *testing.T
	tgt    *kfake.Cluster
	insts  []*Instance
	addrs  []string
	closed []bool
}

func newHARig(t *testing.T, n, partitions int) *haRig {
	t.Helper()
	r := &haRig{t: t, tgt: newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), "orders"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))}
	for i := range n {
		listen, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(fmt.Appendf(nil, "listen: %s\nstate_dir: %s\ninstance:\n  id: kp-%d\ncontrol:\n  session_timeout: 2s\nclusters:\n  target: { bootstrap: [%s] }\nroutes:\n  default: target\n",
			listen, t.TempDir(), i, r.tgt.ListenAddrs()[0]))
		if err != nil {
			t.Fatal(err)
		}
		inst, err := Start(context.Background(), cfg, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		r.insts, r.addrs, r.closed = append(r.insts, inst), append(r.addrs, listen), append(r.closed, false)
	}
	t.Cleanup(func() {
		for i := range r.insts {
			r.close(i)
		}
	})
	return r
}

func (r *haRig) close(i int) {
	if !r.closed[i] {
		r.closed[i] = true
		r.insts[i].Close()
	}
}

// view is what one instance tells a client about the virtual cluster.
type view struct {
	brokers []string        // "id@host:port", sorted
	leaders map[int32]int32 // orders' partition -> leader node id
	addr    map[int32]string
	coord   int32 // FindCoordinator for group "g"
}

// ask asks instance i directly (its seed connection, never a broker the
// client learned from it).
func (r *haRig) ask(ctx context.Context, i int) (view, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.addrs[i]))
	if err != nil {
		return view{}, err
	}
	defer cl.Close()
	b := cl.SeedBrokers()[0]
	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("orders")}}
	mresp, err := b.Request(ctx, mreq)
	if err != nil {
		return view{}, err
	}
	m := mresp.(*kmsg.MetadataResponse)
	v := view{leaders: map[int32]int32{}, addr: map[int32]string{}}
	for _, br := range m.Brokers {
		a := fmt.Sprintf("%s:%d", br.Host, br.Port)
		v.brokers = append(v.brokers, fmt.Sprintf("%d@%s", br.NodeID, a))
		v.addr[br.NodeID] = a
	}
	slices.Sort(v.brokers)
	for _, t := range m.Topics {
		for _, p := range t.Partitions {
			v.leaders[p.Partition] = p.Leader
		}
	}
	creq := kmsg.NewPtrFindCoordinatorRequest()
	creq.CoordinatorKey, creq.CoordinatorKeys = "g", []string{"g"}
	cresp, err := b.Request(ctx, creq)
	if err != nil {
		return view{}, err
	}
	c := cresp.(*kmsg.FindCoordinatorResponse)
	code, node := c.ErrorCode, c.NodeID
	if len(c.Coordinators) > 0 { // v4+
		code, node = c.Coordinators[0].ErrorCode, c.Coordinators[0].NodeID
	}
	if err := kerr.ErrorForCode(code); err != nil {
		return view{}, err
	}
	v.coord = node
	return v, nil
}

// agreed waits until every open instance lists n brokers and all give the
// same answers, and returns that view.
func (r *haRig) agreed(ctx context.Context, n int) view {
	r.t.Helper()
	var last []view
	for ctx.Err() == nil {
		last = last[:0]
		ok := true
		for i := range r.insts {
			if r.closed[i] {
				continue
			}
			v, err := r.ask(ctx, i)
			if err != nil || len(v.brokers) != n {
				ok = false
				break
			}
			last = append(last, v)
		}
		if ok && len(last) > 0 && allSame(last) {
			return last[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("the instances never agreed on %d brokers; last answers: %+v", n, last)
	return view{}
}

func allSame(vs []view) bool {
	for _, v := range vs[1:] {
		if !slices.Equal(v.brokers, vs[0].brokers) || v.coord != vs[0].coord || len(v.leaders) != len(vs[0].leaders) {
			return false
		}
		for p, l := range v.leaders {
			if vs[0].leaders[p] != l {
				return false
			}
		}
	}
	return true
}

// Three instances list the same three brokers and spread partition
// leadership and the group's coordinator over them; an idempotent producer
// and a consumer group, bootstrapped from all three, move everything
// exactly once and in order while the instance that coordinates the group
// and leads some partitions is closed mid-stream.
func TestThreeInstancesServeOneVirtualClusterAndSurviveOneClosing(t *testing.T) {
	const partitions = 12
	r := newHARig(t, 3, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	v := r.agreed(ctx, 3)
	perLeader := map[int32]int{}
	for _, l := range v.leaders {
		perLeader[l]++
	}
	if len(v.leaders) != partitions || len(perLeader) != 3 {
		t.Fatalf("leadership of %d partitions over 3 instances: %v", len(v.leaders), perLeader)
	}
	for i, a := range r.addrs {
		found := false
		for _, b := range v.brokers {
			found = found || b[len(b)-len(a):] == a
		}
		if !found {
			t.Fatalf("instance %d (%s) is not among the brokers %v", i, a, v.brokers)
		}
	}
	t.Logf("brokers %v, partitions per leader %v, group coordinator %d", v.brokers, perLeader, v.coord)

	// The instance to close: the group's coordinator (it also leads
	// partitions, checked above), the hardest one to lose.
	victim := -1
	for i, a := range r.addrs {
		if v.addr[v.coord] == a {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("coordinator %d is not an instance", v.coord)
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(r.addrs...), kgo.DefaultProduceTopic("orders"),
		kgo.MetadataMinAge(100*time.Millisecond), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	cons, err := kgo.NewClient(kgo.SeedBrokers(r.addrs...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100*time.Millisecond),
		kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	// Records carry their partition's sequence number, so order and
	// exactly-once are checked per partition.
	var mu sync.Mutex
	acked := map[int32][]int{} // partition -> sequences acknowledged, in ack order
	var ackErr error
	next := make([]int, partitions)
	produce := func(n int) {
		for range n {
			for p := range int32(partitions) {
				seq := next[p]
				next[p]++
				prod.Produce(ctx, &kgo.Record{Partition: p, Value: strconv.AppendInt(nil, int64(seq), 10)}, func(rec *kgo.Record, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						ackErr = err
						return
					}
					acked[rec.Partition] = append(acked[rec.Partition], seq)
				})
			}
		}
	}

	seen := map[int32][]int{}
	consumed := 0
	consume := func(want int) {
		for consumed < want && ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
			fs.EachRecord(func(rec *kgo.Record) {
				n, _ := strconv.Atoi(string(rec.Value))
				seen[rec.Partition] = append(seen[rec.Partition], n)
				consumed++
			})
		}
	}

	produce(50)
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	consume(50 * partitions)

	// Close the coordinator instance while records are in flight.
	produce(50)
	start := time.Now()
	r.close(victim)
	after := r.agreed(ctx, 2)
	t.Logf("instance %d closed; the others list %v after %s", victim, after.brokers, time.Since(start))
	for _, l := range after.leaders {
		if l == v.coord {
			t.Fatalf("closed instance %d still leads a partition: %v", v.coord, after.leaders)
		}
	}
	produce(50)
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if ackErr != nil {
		t.Fatalf("a produce failed: %v", ackErr)
	}
	mu.Unlock()
	consume(150 * partitions)

	mu.Lock()
	defer mu.Unlock()
	for p := range int32(partitions) {
		want := make([]int, 150)
		for i := range want {
			want[i] = i
		}
		got := slices.Clone(acked[p])
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("partition %d: acknowledged %v, want 0..149 once each", p, got)
		}
		if !slices.Equal(seen[p], want) {
			t.Fatalf("partition %d: consumed %v, want 0..149 once each, in order", p, seen[p])
		}
	}
	if consumed != 150*partitions {
		t.Fatalf("consumed %d records, want %d", consumed, 150*partitions)
	}
}
