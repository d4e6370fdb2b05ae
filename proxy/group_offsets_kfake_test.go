package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// replicatedRouter says topic "orders" is replicated (on both clusters).
type replicatedRouter struct{ Router }

func (replicatedRouter) Replicated(topic string) bool { return topic == "orders" }

// A group homed on the target commits a replicated topic that kproxy's
// view of the target has not loaded yet (the copy created it there after
// start-up and no client has used it on the target: a group that moves
// with the topic's first flip). The commit belongs on the group's home.
// It used to go to the source, the one cluster the view knew had the
// topic, as a simple commit: the next move copies offsets from the home
// only, and while the group's old members are still registered on the
// source the commit is refused there. Either way the consumers later read
// again from an older commit.
func TestCommitOfAReplicatedTopicTheHomeViewHasNotLoadedStaysOnTheHome(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("src"), kfake.SeedTopics(3, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("tgt"), kfake.SeedTopics(1, "other"))
	srv := startProxy(t, Options{NodeID: 9, StateDir: t.TempDir(),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()}, Router: replicatedRouter{StaticRouter(Target)}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The copy creates the topic on the target after kproxy started.
	direct, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := kadm.NewClient(direct).CreateTopic(ctx, 3, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	gen, member := joinRaw(t, ctx, cl, "g")
	resp, err := cl.Request(ctx, commitReq("g", gen, member, 1, 77))
	if code := commitCode(t, resp, err); code != 0 {
		t.Fatalf("commit: %v", kerr.ErrorForCode(code))
	}
	if got := committedOn(t, ctx, tgt, "g", 1); got != 77 {
		t.Errorf("committed on the target (the group's home): %d, want 77", got)
	}
	if got := committedOn(t, ctx, src, "g", 1); got != -1 {
		t.Errorf("committed on the source: %d, want none", got)
	}
}
