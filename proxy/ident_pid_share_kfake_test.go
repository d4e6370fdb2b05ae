package proxy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"

	mbr "github.com/kproxy/kproxy/membership"
)

// memShare is a SessionShare in memory: the first proposal of a key wins;
// down makes proposals fail, as with the control topic unreachable.
type memShare struct {
	mu       sync.Mutex
	m        map[SharedSession]upstreamPID
	down     bool
	proposed int
}

func (sh *memShare) Session(k SharedSession) (int64, int16, bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u, ok := sh.m[k]
	return u.pid, u.epoch, ok
}

func (sh *memShare) Propose(_ context.Context, k SharedSession, pid int64, epoch int16) (int64, int16, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.down {
		return 0, 0, errors.New("control topic unreachable")
	}
	sh.proposed++
	if u, ok := sh.m[k]; ok {
		return u.pid, u.epoch, nil
	}
	if sh.m == nil {
		sh.m = map[SharedSession]upstreamPID{}
	}
	sh.m[k] = upstreamPID{pid, epoch}
	return pid, epoch, nil
}

func (sh *memShare) Forget(SharedSession) {}

// With a share, a producer's first batch on an instance is refused
// retriably while the share cannot be written (never written with a
// session of the instance's own), and goes once it can; a partition this
// instance gains keeps the shared session (no fresh one), so the broker
// refuses a sequence gap there.
func TestSharedSessionRefusedWhileTheShareIsDownAndKeptAcrossGains(t *testing.T) {
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(8, "orders"))
	srv := startProxy(t, Options{ClusterID: "v", NodeID: 7, Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)})
	sh := &memShare{down: true}
	srv.ShareProducerSessions(sh)
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.MaxVersions(kversion.V3_0_0()))
	b := cl.SeedBrokers()[0]
	vpid := virtualPIDBit | 4242
	produce := func(p, seq int32) int16 {
		t.Helper()
		return produceIdempotentBatch(t, ctx, b, "orders", p, vpid, seq)
	}
	if code := produce(0, 0); code != kerr.NotLeaderForPartition.Code {
		t.Fatalf("first batch with the share down: %v, want NOT_LEADER_OR_FOLLOWER (retriable)", kerr.ErrorForCode(code))
	}
	sh.mu.Lock()
	sh.down = false
	sh.mu.Unlock()
	me := mbr.Member{ID: "a", NodeID: 7, Advertise: srv.Addr().String()}
	other := mbr.Member{ID: "b", NodeID: 8, Advertise: "b.example:9092"}
	p := int32(-1)
	for i := range int32(8) {
		if o, _ := mbr.Owner(partitionKey("orders", i), []mbr.Member{me, other}); o.ID == "b" {
			p = i
			break
		}
	}
	alone := &Instances{Self: "a", LeaderID: "a", Members: []mbr.Member{me}}
	if err := srv.SetInstances(alone); err != nil {
		t.Fatal(err)
	}
	for seq := range int32(2) {
		if code := produce(p, seq); code != 0 {
			t.Fatalf("sequence %d: %v", seq, kerr.ErrorForCode(code))
		}
	}
	sh.mu.Lock()
	proposed := sh.proposed
	sh.mu.Unlock()
	if proposed != 1 {
		t.Fatalf("%d proposals for one session, want 1", proposed)
	}
	// b takes the partition and gives it back: this instance gains it
	// again, and the shared session still expects sequence 2.
	if err := srv.SetInstances(&Instances{Self: "a", LeaderID: "a", Members: []mbr.Member{me, other}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetInstances(alone); err != nil {
		t.Fatal(err)
	}
	if code := produce(p, 3); code != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("sequence 3 before 2 after the partition came back: %v, want OUT_OF_ORDER_SEQUENCE_NUMBER", kerr.ErrorForCode(code))
	}
	if code := produce(p, 2); code != 0 {
		t.Fatalf("sequence 2: %v", kerr.ErrorForCode(code))
	}
}
