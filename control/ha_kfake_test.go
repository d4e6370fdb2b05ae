package control

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/test/hatest"
)

// haRig is several kproxy instances of one virtual cluster in this process,
// each with its own listener and state_dir, against one kfake cluster that
// is both the target and the control cluster.
type haRig struct {
	t      *testing.T
	tgt    *kfake.Cluster
	insts  []*Instance
	cfgs   []*config.Config
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
		r.insts, r.cfgs, r.addrs, r.closed = append(r.insts, nil), append(r.cfgs, cfg), append(r.addrs, listen), append(r.closed, true)
		r.start(i)
	}
	t.Cleanup(func() {
		for i := range r.insts {
			r.close(i)
		}
	})
	return r
}

// start starts instance i (again, after close: same id, address and
// state_dir, as a restarted pod).
func (r *haRig) start(i int) {
	r.t.Helper()
	inst, err := Start(context.Background(), r.cfgs[i], hclog.NewNullLogger())
	if err != nil {
		r.t.Fatal(err)
	}
	r.insts[i], r.closed[i] = inst, false
}

func (r *haRig) close(i int) {
	if !r.closed[i] {
		r.closed[i] = true
		r.insts[i].Close()
	}
}

// open is the addresses of the instances not closed.
func (r *haRig) open() []string {
	var out []string
	for i, a := range r.addrs {
		if !r.closed[i] {
			out = append(out, a)
		}
	}
	return out
}

// Three instances list the same three brokers and spread partition
// leadership and the group's coordinator over them; an idempotent producer
// and a consumer group, bootstrapped from all three, move everything
// exactly once and in order while the instance that coordinates the group
// and leads some partitions is closed mid-stream, and again when it comes
// back and takes its partitions and the group back.
func TestThreeInstancesServeOneVirtualClusterAndSurviveOneClosing(t *testing.T) {
	const partitions = 12
	r := newHARig(t, 3, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	v, err := hatest.Agreed(ctx, r.open(), 3, "orders", "g")
	if err != nil {
		t.Fatal(err)
	}
	perLeader := map[int32]int{}
	for _, l := range v.Leaders {
		perLeader[l]++
		if v.Instance(r.addrs, l) < 0 {
			t.Fatalf("leader %d is not an instance: %v", l, v.Brokers)
		}
	}
	if len(v.Leaders) != partitions || len(perLeader) != 3 {
		t.Fatalf("leadership of %d partitions over 3 instances: %v", len(v.Leaders), perLeader)
	}
	t.Logf("brokers %v, partitions per leader %v, group coordinator %d", v.Brokers, perLeader, v.Coord)
	for i, inst := range r.insts {
		st := inst.Status().Instances
		if st == nil || !st.Formed || st.Self != fmt.Sprintf("kp-%d", i) || len(st.Members) != 3 || st.Group != "_kproxy-kproxy-virtual-cluster" {
			t.Fatalf("instance %d /status instances: %+v", i, st)
		}
	}
	// The instance to close: the group's coordinator (it also leads
	// partitions, checked above), the hardest one to lose.
	victim := v.Instance(r.addrs, v.Coord)
	if victim < 0 {
		t.Fatalf("coordinator %d is not an instance", v.Coord)
	}

	tr, err := hatest.NewTraffic(r.addrs, "orders", partitions, "g")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Produce(ctx, 50)
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}

	// Close the coordinator instance while records are in flight.
	tr.Produce(ctx, 50)
	start := time.Now()
	r.close(victim)
	after, err := hatest.Agreed(ctx, r.open(), 2, "orders", "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("instance %d closed; the others list %v after %s", victim, after.Brokers, time.Since(start))
	for _, l := range after.Leaders {
		if l == v.Coord {
			t.Fatalf("closed instance %d still leads a partition: %v", v.Coord, after.Leaders)
		}
	}
	tr.Produce(ctx, 50)
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}

	// The closed instance comes back (a restarted pod: same id, address
	// and state_dir) while records are in flight: it takes back the same
	// partitions, whose producer sessions there are from before it left.
	tr.Produce(ctx, 50)
	r.start(victim)
	if err := hatest.AgreedAsBefore(ctx, r.open(), v, "orders", "g"); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	tr.Produce(ctx, 50)
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	verdict, err := tr.Check()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(verdict)
}

// A transactional producer and a read_committed consumer group, both
// bootstrapped from three instances: the transactions' records go to
// partitions led by every instance, while InitProducerId, AddPartitionsToTxn
// and EndTxn go to the one instance that coordinates the transactional id.
// Committed transactions are read exactly once and in order, aborted ones
// never, also after the coordinating instance is closed and the others take
// the transactional id over.
func TestThreeInstancesServeTransactionalProducers(t *testing.T) {
	const partitions = 12
	r := newHARig(t, 3, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := hatest.Agreed(ctx, r.open(), 3, "orders", "gtx")
	if err != nil {
		t.Fatal(err)
	}
	coord, err := hatest.Coordinator(ctx, r.addrs[0], 1, "tx-1")
	if err != nil {
		t.Fatal(err)
	}
	victim := v.Instance(r.addrs, coord)
	if victim < 0 {
		t.Fatalf("transaction coordinator %d is not an instance: %v", coord, v.Brokers)
	}

	tr, err := hatest.NewTxnTraffic(r.addrs, "orders", partitions, "gtx", "tx-1")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i, commit := range []bool{true, false, true, true} {
		if err := tr.Txn(ctx, 5, commit); err != nil {
			t.Fatalf("transaction %d (commit %v): %v", i, commit, err)
		}
	}
	if err := tr.Consume(ctx, tr.Produced()); err != nil {
		t.Fatal(err)
	}

	r.close(victim)
	if _, err := hatest.Agreed(ctx, r.open(), 2, "orders", "gtx"); err != nil {
		t.Fatal(err)
	}
	for i, commit := range []bool{true, false, true} {
		if err := tr.Txn(ctx, 5, commit); err != nil {
			t.Fatalf("after closing instance %d: transaction %d (commit %v): %v", victim, i, commit, err)
		}
	}
	if err := tr.Consume(ctx, tr.Produced()); err != nil {
		t.Fatal(err)
	}
	verdict, err := tr.Check()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(verdict)
}

// A group or transaction request sent to an instance that does not
// coordinate its group or transactional id is answered NOT_COORDINATOR, so
// the client asks FindCoordinator again; the coordinating instance serves
// the same request.
func TestInstancesAnswerNotCoordinatorOffTheOwner(t *testing.T) {
	r := newHARig(t, 3, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := hatest.Agreed(ctx, r.open(), 3, "orders", "g")
	if err != nil {
		t.Fatal(err)
	}
	owner := func(typ int8, key string) int {
		node, err := hatest.Coordinator(ctx, r.addrs[0], typ, key)
		if err != nil {
			t.Fatal(err)
		}
		return v.Instance(r.addrs, node)
	}
	gOwner, txOwner := owner(0, "g"), owner(1, "tx-1")
	ask := func(i int, req kmsg.Request) kmsg.Response {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(r.addrs[i]))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		resp, err := cl.SeedBrokers()[0].Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	join := func() kmsg.Request {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.ProtocolType, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = "g", "consumer", 10000, 10000
		req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{0, 0, 0, 0, 0, 0, 0, 0}}}
		return req
	}
	heartbeat := func() kmsg.Request {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = "g", "m", 1
		return req
	}
	commit := func() kmsg.Request {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.Generation = "g", -1
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "orders", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}}}}
		return req
	}
	fetchOffsets := func() kmsg.Request {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Version = 8
		req.Groups = []kmsg.OffsetFetchRequestGroup{{Group: "g"}}
		return req
	}
	initTxn := func() kmsg.Request {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID, req.TransactionTimeoutMillis = kmsg.StringPtr("tx-1"), 10000
		return req
	}
	endTxn := func() kmsg.Request {
		req := kmsg.NewPtrEndTxnRequest()
		req.TransactionalID, req.ProducerID, req.ProducerEpoch = "tx-1", 1, 0
		return req
	}
	addParts := func() kmsg.Request {
		req := kmsg.NewPtrAddPartitionsToTxnRequest()
		req.TransactionalID, req.ProducerID, req.ProducerEpoch = "tx-1", 1, 0
		req.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "orders", Partitions: []int32{0}}}
		return req
	}
	code := func(resp kmsg.Response) int16 {
		switch r := resp.(type) {
		case *kmsg.OffsetCommitResponse:
			return r.Topics[0].Partitions[0].ErrorCode
		case *kmsg.OffsetFetchResponse:
			return r.Groups[0].ErrorCode
		case *kmsg.AddPartitionsToTxnResponse:
			return r.Topics[0].Partitions[0].ErrorCode
		case *kmsg.JoinGroupResponse:
			return r.ErrorCode
		case *kmsg.HeartbeatResponse:
			return r.ErrorCode
		case *kmsg.InitProducerIDResponse:
			return r.ErrorCode
		case *kmsg.EndTxnResponse:
			return r.ErrorCode
		}
		t.Fatalf("unexpected response %T", resp)
		return 0
	}
	for _, c := range []struct {
		name  string
		owner int
		req   func() kmsg.Request
	}{
		{"JoinGroup", gOwner, join},
		{"Heartbeat", gOwner, heartbeat},
		{"OffsetCommit", gOwner, commit},
		{"OffsetFetch", gOwner, fetchOffsets},
		{"InitProducerId", txOwner, initTxn},
		{"AddPartitionsToTxn", txOwner, addParts},
		{"EndTxn", txOwner, endTxn},
	} {
		for i := range r.addrs {
			got := code(ask(i, c.req()))
			if i != c.owner && got != kerr.NotCoordinator.Code {
				t.Errorf("%s to instance %d (not the coordinator %d): error %v, want NOT_COORDINATOR", c.name, i, c.owner, kerr.ErrorForCode(got))
			}
			if i == c.owner && got == kerr.NotCoordinator.Code {
				t.Errorf("%s to the coordinating instance %d: NOT_COORDINATOR", c.name, i)
			}
		}
	}
}

// An instance that is closed (SIGTERM) stops listening only once the
// others have agreed on a view without it: the moment Close returns, each
// of them names another instance as the group's coordinator and as the
// leader of every partition. Before, Close returned as soon as this
// instance had left the membership group, while the others still sent
// clients to it until their rejoin finished; a consumer's heartbeats and
// commits met a refused connection, its group session ended without the
// commit, and the group read again from its previous commit (issue 14).
func TestClosedInstanceStopsListeningAfterTheOthersTookOver(t *testing.T) {
	const partitions = 12
	r := newHARig(t, 3, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := hatest.Agreed(ctx, r.open(), 3, "orders", "g")
	if err != nil {
		t.Fatal(err)
	}
	victim := v.Instance(r.addrs, v.Coord)
	if victim < 0 {
		t.Fatalf("coordinator %d is not an instance", v.Coord)
	}
	r.close(victim)
	for _, a := range r.open() {
		got, err := hatest.Ask(ctx, a, "orders", "g")
		if err != nil {
			t.Fatal(err)
		}
		if got.Coord == v.Coord {
			t.Fatalf("instance at %s still names the closed instance %d the group's coordinator once Close returned", a, v.Coord)
		}
		for p, l := range got.Leaders {
			if l == v.Coord {
				t.Fatalf("instance at %s still names the closed instance %d the leader of partition %d once Close returned", a, v.Coord, p)
			}
		}
	}
}
