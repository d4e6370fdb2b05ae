package control

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

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
	back, err := hatest.Agreed(ctx, r.open(), 3, "orders", "g")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(back.Leaders, v.Leaders) || back.Coord != v.Coord {
		t.Fatalf("after the restart: leaders %v coordinator %d; before: %v %d", back.Leaders, back.Coord, v.Leaders, v.Coord)
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
