package membership

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func newCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

type instance struct {
	g      *Group
	cancel context.CancelFunc
}

func join(t *testing.T, c *kfake.Cluster, id string) instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g, err := Join(ctx, newClient(t, c), Config{
		Group: "_kproxy-test",
		Self:  Member{ID: id, Advertise: id + ".kproxy-headless:9092", NodeID: NodeID(id)},
		// Short, so that a member that stops heartbeating is dropped
		// within the test; the default is 10s.
		SessionTimeout:   time.Second,
		RebalanceTimeout: 2 * time.Second,
		Heartbeat:        100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return instance{g, cancel}
}

func ids(v View) []string {
	var out []string
	for _, m := range v.Members {
		out = append(out, m.ID)
	}
	return out
}

// waitViews waits until every instance's view lists exactly want, in one
// generation, and returns that view.
func waitViews(t *testing.T, want []string, insts ...instance) View {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var views []View
		agree := true
		for _, in := range insts {
			v, ok := in.g.View()
			if !ok || !slices.Equal(ids(v), want) {
				agree = false
				break
			}
			views = append(views, v)
		}
		if agree {
			for _, v := range views[1:] {
				if v.Generation != views[0].Generation || v.LeaderID != views[0].LeaderID {
					agree = false
				}
			}
		}
		if agree {
			return views[0]
		}
		if time.Now().After(deadline) {
			var got []string
			for _, in := range insts {
				v, ok := in.g.View()
				got = append(got, fmt.Sprintf("%v (gen %d, formed %v)", ids(v), v.Generation, ok))
			}
			t.Fatalf("views never agreed on %v: %v", want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three instances agree on one view; one leaving (SIGTERM: Close) and one
// crashing (no LeaveGroup, dropped by the session timeout) each give the
// survivors a new generation without it.
func TestMembersAgreeAndDropLeaversAndCrashes(t *testing.T) {
	c := newCluster(t)
	a, b, d := join(t, c, "kproxy-0"), join(t, c, "kproxy-1"), join(t, c, "kproxy-2")
	v1 := waitViews(t, []string{"kproxy-0", "kproxy-1", "kproxy-2"}, a, b, d)
	if !slices.Contains(ids(v1), v1.LeaderID) {
		t.Errorf("leader %q is not a member of %v", v1.LeaderID, ids(v1))
	}
	if v1.Members[1].Advertise != "kproxy-1.kproxy-headless:9092" {
		t.Errorf("member metadata lost: %+v", v1.Members[1])
	}

	changed := a.g.Changed()
	if err := b.g.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	v2 := waitViews(t, []string{"kproxy-0", "kproxy-2"}, a, d)
	if v2.Generation <= v1.Generation {
		t.Errorf("generation went from %d to %d; want it to grow", v1.Generation, v2.Generation)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed() was not closed by the new view")
	}

	// A crash: the member stops heartbeating and never leaves.
	d.cancel()
	waitViews(t, []string{"kproxy-0"}, a)
}

// Two instances with one instance id would derive one virtual broker; the
// leader refuses such a generation instead of forming it.
func TestDuplicateInstanceIDIsRefused(t *testing.T) {
	resp := kmsg.NewJoinGroupResponse()
	resp.Generation, resp.LeaderID = 3, "m1"
	for i, id := range []string{"kproxy-0", "kproxy-0"} {
		m := kmsg.NewJoinGroupResponseMember()
		m.MemberID = fmt.Sprintf("m%d", i+1)
		m.ProtocolMetadata = []byte(fmt.Sprintf(`{"id":%q}`, id))
		resp.Members = append(resp.Members, m)
	}
	if _, err := leaderAssign(&resp); err == nil {
		t.Fatal("leaderAssign accepted two members with instance id kproxy-0")
	}
}

// Two instance ids whose derived virtual broker ids collide would show
// clients one broker for two instances; the leader refuses that too.
func TestDuplicateNodeIDIsRefused(t *testing.T) {
	resp := kmsg.NewJoinGroupResponse()
	resp.Generation, resp.LeaderID = 3, "m1"
	for i, id := range []string{"kproxy-0", "kproxy-1"} {
		m := kmsg.NewJoinGroupResponseMember()
		m.MemberID = fmt.Sprintf("m%d", i+1)
		m.ProtocolMetadata = []byte(fmt.Sprintf(`{"id":%q,"node_id":5}`, id))
		resp.Members = append(resp.Members, m)
	}
	if _, err := leaderAssign(&resp); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "virtual broker id 5") {
		t.Fatalf("leaderAssign with two members on node id 5: %v", err)
	}
}
