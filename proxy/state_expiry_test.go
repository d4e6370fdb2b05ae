package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// expiryProxy is a proxy over kfake source and target with idle limits of an
// hour and the fake clock.
func expiryProxy(t *testing.T, clk *fakeClock, dir string) *Server {
	t.Helper()
	src := newKfake(t, kfake.SeedTopics(1, "orders", "t"))
	tgt := newKfake(t, kfake.SeedTopics(1, "orders", "t"))
	srv := startProxy(t, Options{StateDir: dir, Registerer: prometheus.NewRegistry(), Router: StaticRouter(Source),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()},
		Limits:   Limits{ProducerIdle: time.Hour, TransactionalIdle: time.Hour, GroupMembershipGrace: time.Minute}},
		func(s *Server) { s.pids.now = clk.now; s.members.now = clk.now })
	return srv
}

func sessionLines(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, pidStoreFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), `"p":`)
}

// An idempotent producer's upstream session is forgotten after
// producer_idle without a batch (in memory and in the sessions file), not
// while it keeps producing; a producer that comes back after the expiry goes
// on producing without an error, on a new upstream session.
func TestIdleProducerSessionsExpire(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	srv := expiryProxy(t, clk, dir)
	prod, ctx := proxyClient(t, srv, 30*time.Second, kgo.DefaultProduceTopic("orders"))
	produce := func(v string) {
		t.Helper()
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", v, err)
		}
	}
	produce("first")
	if n, _ := srv.pids.counts(); n != 1 || sessionLines(t, dir) != 1 {
		t.Fatalf("after one batch: %d sessions, %d in the file; want 1 and 1", n, sessionLines(t, dir))
	}
	first := onlySession(t, srv)

	// Used 40 minutes ago: kept.
	clk.advance(30 * time.Minute)
	produce("second")
	clk.advance(40 * time.Minute)
	srv.expireState()
	if n, _ := srv.pids.counts(); n != 1 {
		t.Fatalf("a session used 40 minutes ago was dropped (idle 1h)")
	}

	// Idle for an hour: forgotten, and the file rewritten without it.
	clk.advance(21 * time.Minute)
	srv.expireState()
	if n, _ := srv.pids.counts(); n != 0 || sessionLines(t, dir) != 0 {
		t.Fatalf("after an idle hour: %d sessions, %d in the file; want none", n, sessionLines(t, dir))
	}
	if got := counterValue(srv.metrics.stateExpired.WithLabelValues(stateProducerSessions)); got != 1 {
		t.Errorf("kproxy_state_expired_total{kind=producer_sessions} = %v, want 1", got)
	}
	if got := gaugeValue(srv.metrics.stateEntries.WithLabelValues(stateProducerSessions)); got != 0 {
		t.Errorf("kproxy_state_entries{kind=producer_sessions} = %v, want 0", got)
	}

	// The producer comes back with its virtual PID: served, on a new
	// upstream session, and the file records it again.
	produce("third")
	if n, _ := srv.pids.counts(); n != 1 || sessionLines(t, dir) != 1 {
		t.Fatalf("after the producer came back: %d sessions, %d in the file; want 1 and 1", n, sessionLines(t, dir))
	}
	if again := onlySession(t, srv); again.pid == first.pid {
		t.Errorf("the returning producer got the expired upstream session %d again", first.pid)
	}
}

func onlySession(t *testing.T, srv *Server) upstreamPID {
	t.Helper()
	srv.pids.mu.Lock()
	defer srv.pids.mu.Unlock()
	for _, u := range srv.pids.m {
		return u
	}
	t.Fatal("no session")
	return upstreamPID{}
}

// A restart reads each session's last use from the file, so sessions idle
// before the restart are not kept for another full producer_idle; but a
// session is never taken as idle for longer than a quarter of producer_idle
// before the restart (its use since the last rewrite is not on disk).
func TestProducerSessionsLastUseSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	var first producerIDs
	first.idle, first.now = time.Hour, clk.now
	st, err := openPIDStore(dir, &first, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	old := pidKey{vpid: newVirtualPID() | 1, cluster: Source}
	recent := pidKey{vpid: newVirtualPID() &^ 1, cluster: Source}
	for _, r := range []struct {
		k    pidKey
		used time.Time
	}{{old, clk.now().Add(-50 * time.Minute)}, {recent, clk.now().Add(-5 * time.Minute)}} {
		if err := st.appendLocked(pidRecord{VPID: r.k.vpid, Cluster: Source, PID: 7, Used: r.used.Unix()}); err != nil {
			t.Fatal(err)
		}
	}
	st.close()

	var second producerIDs
	second.idle, second.now = time.Hour, clk.now
	st2, err := openPIDStore(dir, &second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st2.close()
	second.store = st2
	if got, want := second.used[old], clk.now().Add(-15*time.Minute); !got.Equal(want) {
		t.Errorf("a session last used 50 minutes ago loads as used at %v, want %v (a quarter of producer_idle before the restart)", got, want)
	}
	if got, want := second.used[recent], clk.now().Add(-5*time.Minute).Truncate(time.Second); !got.Equal(want) {
		t.Errorf("a session last used 5 minutes ago loads as used at %v, want %v", got, want)
	}
	clk.advance(46 * time.Minute)
	if n, err := second.expireSessions(); n != 1 || err != nil {
		t.Fatalf("expireSessions 46 minutes after the restart = %d, %v; want the old session only", n, err)
	}
	if _, ok := second.m[recent]; !ok {
		t.Error("the recent session was dropped")
	}
}

// A transactional id nobody used for transactional_idle is forgotten; a
// request with its old producer id then gets INVALID_PRODUCER_ID_MAPPING
// (what a coordinator answers for an id it expired), and a producer that
// initializes the id again works.
func TestIdleTransactionalIDsExpire(t *testing.T) {
	clk := newFakeClock()
	srv := expiryProxy(t, clk, t.TempDir())
	cl, ctx := proxyClient(t, srv, 30*time.Second)
	commitOne := func(id string) {
		t.Helper()
		prod, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.TransactionalID(id), kgo.DefaultProduceTopic("t"))
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatalf("transactional produce: %v", err)
		}
		if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	commitOne("flink-job-1")
	ireq := kmsg.NewPtrInitProducerIDRequest()
	ireq.TransactionalID = kmsg.StringPtr("flink-job-2")
	ireq.TransactionTimeoutMillis = 60000
	iresp, err := ireq.RequestWith(ctx, cl)
	if err != nil || iresp.ErrorCode != 0 {
		t.Fatalf("init: %v %v", err, iresp)
	}
	if _, n := srv.pids.counts(); n != 2 {
		t.Fatalf("%d transactional ids, want 2", n)
	}

	clk.advance(59 * time.Minute)
	commitOne("flink-job-1") // used again: not idle
	clk.advance(2 * time.Minute)
	srv.expireState()
	if _, n := srv.pids.counts(); n != 1 || srv.pids.txnLookup("flink-job-1") == nil {
		t.Fatalf("after flink-job-2 was idle an hour: %d ids, flink-job-1 kept %v; want only flink-job-1", n, srv.pids.txnLookup("flink-job-1") != nil)
	}
	if got := counterValue(srv.metrics.stateExpired.WithLabelValues(stateTxnIDs)); got != 1 {
		t.Errorf("kproxy_state_expired_total{kind=transactional_ids} = %v, want 1", got)
	}

	areq := kmsg.NewPtrAddPartitionsToTxnRequest()
	areq.TransactionalID, areq.ProducerID, areq.ProducerEpoch = "flink-job-2", iresp.ProducerID, iresp.ProducerEpoch
	at := kmsg.NewAddPartitionsToTxnRequestTopic()
	at.Topic, at.Partitions = "t", []int32{0}
	areq.Topics = append(areq.Topics, at)
	aresp, err := areq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if code := aresp.Topics[0].Partitions[0].ErrorCode; code != kerr.InvalidProducerIDMapping.Code {
		t.Errorf("AddPartitionsToTxn of an expired id: %v, want INVALID_PRODUCER_ID_MAPPING", kerr.ErrorForCode(code))
	}
	commitOne("flink-job-2")
}

// gaugeValue reads a gauge.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}
