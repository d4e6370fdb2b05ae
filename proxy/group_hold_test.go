package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// homeRouter overrides the home of some groups.
type homeRouter struct {
	Router
	homes map[string]string
}

func (r homeRouter) GroupCluster(group string) string {
	if c, ok := r.homes[group]; ok {
		return c
	}
	return r.Router.GroupCluster(group)
}

// joinRaw makes cl the only member of group (generation and member id back)
// with plain JoinGroup/SyncGroup requests, so the test controls every
// coordinator request the member sends.
func joinRaw(t *testing.T, ctx context.Context, cl *kgo.Client, group string) (int32, string) {
	t.Helper()
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.SessionTimeoutMillis, join.RebalanceTimeoutMillis, join.ProtocolType = group, 30000, 30000, "consumer"
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", []byte{0, 0, 0, 0, 0, 0, 0, 0}
	join.Protocols = append(join.Protocols, p)
	jr, err := join.RequestWith(ctx, cl)
	if err == nil && jr.ErrorCode == kerr.MemberIDRequired.Code {
		join.MemberID = jr.MemberID
		jr, err = join.RequestWith(ctx, cl)
	}
	if err != nil || jr.ErrorCode != 0 {
		t.Fatalf("join %s: %v %v", group, err, kerr.ErrorForCode(jr.ErrorCode))
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.Generation, sync.MemberID = group, jr.Generation, jr.MemberID
	sync.ProtocolType, sync.Protocol = kmsg.StringPtr("consumer"), jr.Protocol
	a := kmsg.NewSyncGroupRequestGroupAssignment()
	a.MemberID = jr.MemberID
	sync.GroupAssignment = append(sync.GroupAssignment, a)
	sr, err := sync.RequestWith(ctx, cl)
	if err != nil || sr.ErrorCode != 0 {
		t.Fatalf("sync %s: %v %v", group, err, kerr.ErrorForCode(sr.ErrorCode))
	}
	return jr.Generation, jr.MemberID
}

func commitReq(group string, gen int32, member string, partition int32, offset int64) *kmsg.OffsetCommitRequest {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation, req.MemberID = group, gen, member
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = "orders"
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func commitCode(t *testing.T, resp kmsg.Response, err error) int16 {
	t.Helper()
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	r := resp.(*kmsg.OffsetCommitResponse)
	if len(r.Topics) != 1 || len(r.Topics[0].Partitions) != 1 {
		t.Fatalf("commit answer has %d topics", len(r.Topics))
	}
	return r.Topics[0].Partitions[0].ErrorCode
}

// committedOn reads group's committed offset of orders/partition directly
// on a cluster (-1: none).
func committedOn(t *testing.T, ctx context.Context, c *kfake.Cluster, group string, partition int32) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	os, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return -1
	}
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	if o, ok := os.Lookup("orders", partition); ok {
		return o.At
	}
	return -1
}

// While a group is held its coordinator requests never reach a cluster:
// heartbeats, lookups and offset fetches are told to retry, and commits wait.
// At release onto a new home, a held commit of a live member is validated by
// the old home and lands on both; a held commit of an unknown member is
// refused by the old home and lands nowhere; the member's next heartbeat
// reaches the new home, which does not know it (so it rejoins once). A hold
// released onto the same home just forwards the commit.
func TestGroupHoldQueuesCommitsAndReplaysThemOnTheNewHome(t *testing.T) {
	srv, src, tgt := twoClusterProxy(t, StaticRouter(Source), "orders")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	direct := cl.SeedBrokers()[0] // no coordinator retries: the test sees every answer

	gen, member := joinRaw(t, ctx, cl, "g")
	resp, err := direct.Request(ctx, commitReq("g", gen, member, 0, 10))
	if code := commitCode(t, resp, err); code != 0 {
		t.Fatalf("commit before the hold: %v", kerr.ErrorForCode(code))
	}

	srv.HoldGroup("g")
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.Generation, hb.MemberID = "g", gen, member
	if r, err := direct.Request(ctx, hb); err != nil || r.(*kmsg.HeartbeatResponse).ErrorCode != kerr.NotCoordinator.Code {
		t.Fatalf("held heartbeat: %v %+v, want NOT_COORDINATOR", err, r)
	}
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorKey, fc.CoordinatorKeys = "g", []string{"g"}
	if r, err := direct.Request(ctx, fc); err != nil {
		t.Fatal(err)
	} else if fr := r.(*kmsg.FindCoordinatorResponse); fr.ErrorCode != kerr.CoordinatorNotAvailable.Code && (len(fr.Coordinators) != 1 || fr.Coordinators[0].ErrorCode != kerr.CoordinatorNotAvailable.Code) {
		t.Fatalf("held FindCoordinator: %+v, want COORDINATOR_NOT_AVAILABLE", fr)
	}
	of := kmsg.NewPtrOffsetFetchRequest()
	of.Group = "g"
	ofg := kmsg.NewOffsetFetchRequestGroup()
	ofg.Group = "g"
	of.Groups = append(of.Groups, ofg)
	if r, err := direct.Request(ctx, of); err != nil {
		t.Fatal(err)
	} else if fr := r.(*kmsg.OffsetFetchResponse); fr.ErrorCode != kerr.NotCoordinator.Code && (len(fr.Groups) != 1 || fr.Groups[0].ErrorCode != kerr.NotCoordinator.Code) {
		t.Fatalf("held OffsetFetch: %+v, want NOT_COORDINATOR", fr)
	}

	// Two commits wait in the hold: the member's, and one from a member the
	// group does not have.
	type answer struct {
		resp kmsg.Response
		err  error
	}
	live, zombie := make(chan answer, 1), make(chan answer, 1)
	go func() { r, err := direct.Request(ctx, commitReq("g", gen, member, 0, 42)); live <- answer{r, err} }()
	waitFor(t, ctx, func() bool { return srv.GroupHeldCount("g") == 1 })
	go func() { r, err := direct.Request(ctx, commitReq("g", gen, "zombie", 1, 99)); zombie <- answer{r, err} }()
	waitFor(t, ctx, func() bool { return srv.GroupHeldCount("g") == 2 })
	if err := srv.WaitGroupIdle(ctx, "g"); err != nil {
		t.Fatal(err)
	}

	// What the controller does: copy, then route the group to the target.
	tcl, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	var copied kadm.Offsets
	copied.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 10, LeaderEpoch: -1})
	if r, err := kadm.NewClient(tcl).CommitOffsets(ctx, "g", copied); err != nil || r.Error() != nil {
		t.Fatalf("copy: %v %v", err, r.Error())
	}
	srv.SetRouter(homeRouter{StaticRouter(Source), map[string]string{"g": Target}})
	srv.ReleaseGroup("g")

	a := <-live
	if code := commitCode(t, a.resp, a.err); code != 0 {
		t.Fatalf("held commit of the member: %v, want success", kerr.ErrorForCode(code))
	}
	a = <-zombie
	if code := commitCode(t, a.resp, a.err); code != kerr.UnknownMemberID.Code {
		t.Fatalf("held commit of an unknown member: %v, want UNKNOWN_MEMBER_ID", kerr.ErrorForCode(code))
	}
	for _, c := range []struct {
		name      string
		cluster   *kfake.Cluster
		partition int32
		want      int64
	}{
		{"source p0", src, 0, 42}, {"target p0", tgt, 0, 42}, {"source p1", src, 1, -1}, {"target p1", tgt, 1, -1},
	} {
		if got := committedOn(t, ctx, c.cluster, "g", c.partition); got != c.want {
			t.Errorf("%s: committed %d, want %d", c.name, got, c.want)
		}
	}

	// Until it rejoins, the member's commits still land on the new home
	// (validated by the old one), and its heartbeat tells it to rejoin.
	resp, err = direct.Request(ctx, commitReq("g", gen, member, 0, 50))
	if code := commitCode(t, resp, err); code != 0 {
		t.Fatalf("commit after the move, before the rejoin: %v, want success", kerr.ErrorForCode(code))
	}
	if got := committedOn(t, ctx, tgt, "g", 0); got != 50 {
		t.Fatalf("target committed %d after the member's commit, want 50", got)
	}
	if r, err := direct.Request(ctx, hb); err != nil || r.(*kmsg.HeartbeatResponse).ErrorCode != kerr.RebalanceInProgress.Code {
		t.Fatalf("heartbeat after the move: %v %+v, want REBALANCE_IN_PROGRESS (rejoin)", err, r)
	}
	if g2, m2 := joinRaw(t, ctx, cl, "g"); g2 < 1 || m2 == member {
		t.Fatalf("rejoin on the new home: generation %d member %q", g2, m2)
	}
	resp, err = direct.Request(ctx, commitReq("g", gen, member, 0, 60))
	if code := commitCode(t, resp, err); code == 0 {
		t.Fatal("a commit with the old member id was accepted after the group had members on the new home")
	}

	// A hold released onto the same home (an aborted move) forwards.
	srv.HoldGroup("h")
	go func() { r, err := direct.Request(ctx, commitReq("h", -1, "", 2, 7)); live <- answer{r, err} }()
	waitFor(t, ctx, func() bool { return srv.GroupHeldCount("h") == 1 })
	srv.ReleaseGroup("h")
	a = <-live
	if code := commitCode(t, a.resp, a.err); code != 0 {
		t.Fatalf("commit released to the same home: %v", kerr.ErrorForCode(code))
	}
	if got, want := [2]int64{committedOn(t, ctx, src, "h", 2), committedOn(t, ctx, tgt, "h", 2)}, [2]int64{7, -1}; got != want {
		t.Fatalf("after an aborted move, (source, target) committed %v, want %v", got, want)
	}
}

// waitFor polls cond until it holds or ctx ends (a bound, not a timing
// assertion).
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached before the test deadline")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// An instance that stops during a coordinated group move refuses the
// commits it holds (control/coordgroups.go): each is answered
// NOT_COORDINATOR, written to neither cluster, and the group stays held.
// RelayedMembers lists the member the join handed out, for the driver's
// copy.
func TestRefuseHeldGroupAnswersNotCoordinatorAndWritesNothing(t *testing.T) {
	srv, src, tgt := twoClusterProxy(t, StaticRouter(Source), "orders")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	direct := cl.SeedBrokers()[0]
	gen, member := joinRaw(t, ctx, cl, "g")
	if got := srv.RelayedMembers("g"); len(got) != 1 || got[0] != member {
		t.Fatalf("RelayedMembers = %v, want [%s]", got, member)
	}
	srv.HoldGroup("g")
	type answer struct {
		resp kmsg.Response
		err  error
	}
	held := make(chan answer, 1)
	go func() { r, err := direct.Request(ctx, commitReq("g", gen, member, 0, 42)); held <- answer{r, err} }()
	waitFor(t, ctx, func() bool { return srv.GroupHeldCount("g") == 1 })
	srv.RefuseHeldGroup("g")
	a := <-held
	if code := commitCode(t, a.resp, a.err); code != kerr.NotCoordinator.Code {
		t.Fatalf("refused held commit: %v, want NOT_COORDINATOR", kerr.ErrorForCode(code))
	}
	if !srv.groupHeld("g") {
		t.Fatal("the group is no longer held after the refusal")
	}
	for name, c := range map[string]*kfake.Cluster{"source": src, "target": tgt} {
		if got := committedOn(t, ctx, c, "g", 0); got != -1 {
			t.Fatalf("%s: committed %d, want nothing", name, got)
		}
	}
}
