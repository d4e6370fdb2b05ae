package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/config"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Tests for hostile and broken clients (issue 10): each asserts that what
// kproxy buffers stays within its budget and that another client keeps
// being served. None asserts a latency; waits are bounded by generous test
// timeouts only.

// newHostileProxy starts a proxy in front of a one-broker kfake cluster with
// topic "t".
func newHostileProxy(t *testing.T, maxFrame int32, lim Limits, prep ...func(*Server)) (*Server, *kfake.Cluster) {
	t.Helper()
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	srv := startProxy(t, Options{
		Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source),
		MaxFrameBytes: maxFrame, Limits: lim, Registerer: prometheus.NewRegistry(),
	}, prep...)
	return srv, c
}

// assertServed runs a Metadata request through the proxy as a well-behaved
// client, from localIP ("" for any), and fails unless it is answered.
func assertServed(t *testing.T, srv *Server, localIP string) {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(srv.Addr().String()), kgo.RequestRetries(0)}
	if localIP != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 10 * time.Second}
		opts = append(opts, kgo.Dialer(d.DialContext))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("t")
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("a well-behaved client was not served: %v", err)
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("a well-behaved client got a bad answer: %+v", resp.Topics)
	}
}

func dialProxy(t *testing.T, srv *Server) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", srv.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// waitUntil polls cond until it holds or the test timeout passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The 4-byte frame: `06 40 00 00` declares 100 MiB, then nothing.
// kproxy used to allocate the declared size before the first body byte:
// eight such sockets held 800 MiB.
func TestStalledHugeFramesHoldOnlyWhatArrived(t *testing.T) {
	srv, _ := newHostileProxy(t, 100<<20, Limits{})
	const conns = 8
	before := heapInUse()
	for range conns {
		nc := dialProxy(t, srv)
		if _, err := nc.Write([]byte{0x06, 0x40, 0x00, 0x00}); err != nil {
			t.Fatal(err)
		}
	}
	// Each connection has taken its first chunk of the budget and is
	// waiting for body bytes.
	waitUntil(t, "every stalled frame to be read", func() bool { return srv.budget.inUse() == conns*frameChunk })
	grew := int64(heapInUse()) - int64(before)
	t.Logf("%d stalled 100 MiB frames: budget %d KiB, heap +%d KiB", conns, srv.budget.inUse()>>10, grew>>10)
	if grew > 32<<20 {
		t.Errorf("heap grew by %d MiB for %d stalled 4-byte frames; want at most 32 MiB", grew>>20, conns)
	}
	assertServed(t, srv, "")
}

// A frame that trickles in is cut off by the read timeout; what it held of
// the budget is given back.
func TestSlowlorisFrameIsClosed(t *testing.T) {
	srv, _ := newHostileProxy(t, 1<<20, Limits{ReadTimeout: 300 * time.Millisecond})
	nc := dialProxy(t, srv)
	frame := binary.BigEndian.AppendUint32(nil, 1<<20-1)
	if _, err := nc.Write(append(frame, 0, 3, 0, 1)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte now and then, never the whole frame
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := nc.Write([]byte{0}); err != nil {
					return
				}
			}
		}
	}()
	assertServed(t, srv, "")
	expectClosed(t, nc)
	waitUntil(t, "the budget to be given back", func() bool { return srv.budget.inUse() == 0 })
	if n := counterValue(srv.metrics.closed.WithLabelValues("read_timeout")); n != 1 {
		t.Errorf("read_timeout closes = %v, want 1", n)
	}
}

// A connection that sends nothing and waits for nothing is closed.
func TestIdleConnectionIsClosed(t *testing.T) {
	srv, _ := newHostileProxy(t, 1<<20, Limits{IdleTimeout: 200 * time.Millisecond})
	nc := dialProxy(t, srv)
	expectClosed(t, nc)
	if n := counterValue(srv.metrics.closed.WithLabelValues("idle")); n != 1 {
		t.Errorf("idle closes = %v, want 1", n)
	}
	assertServed(t, srv, "")
}

// countOpen reports how many of conns are still open (a read times out
// instead of ending).
func countOpen(t *testing.T, conns []net.Conn) int {
	t.Helper()
	open := 0
	for _, nc := range conns {
		_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := nc.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open++
		}
	}
	return open
}

// flood opens n connections to srv and waits until each is accepted or
// refused under limit (the kproxy_client_connections_refused_total label).
func flood(t *testing.T, srv *Server, n int, limit string) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for range n {
		conns = append(conns, dialProxy(t, srv))
	}
	waitUntil(t, "every flood connection to be accepted or refused", func() bool {
		return counterValue(srv.metrics.refused.WithLabelValues(limit))+float64(srv.Status().Connections) >= float64(n)
	})
	return conns
}

// A connection flood from one address gets max_connections_per_ip
// connections; a client from elsewhere is still served.
func TestConnectionFloodIsCappedPerIP(t *testing.T) {
	srv, _ := newHostileProxy(t, 1<<20, Limits{MaxConnectionsPerIP: 4})
	conns := flood(t, srv, 30, "per_ip")
	if open := countOpen(t, conns); open != 4 {
		t.Errorf("%d flood connections stayed open, want 4", open)
	}
	assertServed(t, srv, "127.0.0.2")
	if n := counterValue(srv.metrics.refused.WithLabelValues("per_ip")); n != 26 {
		t.Errorf("per_ip refusals = %v, want 26", n)
	}
}

// The total cap holds across addresses.
func TestConnectionFloodIsCappedInTotal(t *testing.T) {
	srv, _ := newHostileProxy(t, 1<<20, Limits{MaxConnections: 6, MaxConnectionsPerIP: 6})
	conns := flood(t, srv, 10, "total")
	if open := countOpen(t, conns); open != 6 {
		t.Errorf("%d flood connections stayed open, want 6", open)
	}
	for _, nc := range conns {
		nc.Close()
	}
	waitUntil(t, "the flood to be closed", func() bool { return srv.Status().Connections == 0 })
	assertServed(t, srv, "")
}

// The 18-byte Metadata v12 frame of the issue with a tag count of 2^32-1:
// kmsg used to count it down after the input ended (decision 002), about
// 20 s of CPU per frame. It is now refused as soon as the input runs out.
func TestTagFloodIsRefusedAtOnce(t *testing.T) {
	srv, _ := newHostileProxy(t, 1<<20, Limits{})
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(kmsg.Metadata))
	b = binary.BigEndian.AppendUint16(b, 12)
	b = binary.BigEndian.AppendUint32(b, 7)
	b = binary.BigEndian.AppendUint16(b, 0xffff) // null client id
	b = append(b, 0)                             // header tags
	b = append(b, 0, 1, 0)                       // null topics, auto create, no authorized ops
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0x0f)  // 2^32-1 tagged fields, and no more input
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	nc := dialProxy(t, srv)
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, nc)
	assertServed(t, srv, "")
}

// A client that pipelines large Fetches and never reads: kproxy reads one
// Fetch at a time past an unwritten Fetch response, and the write timeout
// disconnects the client, giving back everything buffered for it.
func TestNeverReadingClientIsDisconnected(t *testing.T) {
	srv, c := newHostileProxy(t, 64<<20, Limits{WriteTimeout: 300 * time.Millisecond})
	produce4MiB(t, c)

	nc, err := net.DialTCP("tcp", nil, srv.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadBuffer(4 << 10) // a small receive window, never drained
	before := heapInUse()
	var out []byte
	for i := range 128 {
		out = appendRequest(out, int32(i), kmsg.StringPtr("never-reads"), fetchAll())
	}
	go func() { _, _ = nc.Write(out) }() // blocks once kproxy stops reading

	waitUntil(t, "the write timeout to disconnect the client", func() bool {
		return counterValue(srv.metrics.closed.WithLabelValues("write_timeout")) == 1
	})
	waitUntil(t, "the budget to be given back", func() bool { return srv.budget.inUse() == 0 })
	// One or two Fetch answers of ~4 MiB were buffered at a time, not 128.
	peak, grew := srv.budget.peakUse(), int64(heapInUse())-int64(before)
	t.Logf("never-reading client: budget peak %d KiB, heap +%d KiB after disconnect", peak>>10, grew>>10)
	if peak > 24<<20 {
		t.Errorf("buffer budget peaked at %d MiB; want at most 24 MiB", peak>>20)
	}
	if grew > 64<<20 {
		t.Errorf("heap grew by %d MiB; want at most 64 MiB", grew>>20)
	}
	assertServed(t, srv, "")
}

// produce4MiB writes 4 MiB of uncompressed records to t.
func produce4MiB(t *testing.T, c *kfake.Cluster) {
	t.Helper()
	pcl := kfakeClient(t, c, kgo.ProducerBatchMaxBytes(512<<10), kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	val := make([]byte, 64<<10)
	var rs []*kgo.Record
	for range 64 {
		rs = append(rs, &kgo.Record{Topic: "t", Value: val})
	}
	if err := pcl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// fetchAll is a Fetch v11 of all of t from offset 0.
func fetchAll() *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(11)
	req.ReplicaID = -1
	req.MaxWaitMillis = 10
	req.MaxBytes = 16 << 20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 16 << 20
	fp.LogStartOffset = -1
	ft.Partitions = append(ft.Partitions, fp)
	req.Topics = append(req.Topics, ft)
	return req
}

// A write loop that failed used to leave the read loop waiting forever for
// a free response slot (max_inflight_per_conn full): the connection, and
// everything it held, never went away.
func TestWriteTimeoutEndsAConnectionWithFullSlots(t *testing.T) {
	srv, c := newHostileProxy(t, 64<<20, Limits{WriteTimeout: 300 * time.Millisecond}, func(s *Server) { s.opts.MaxInflight = 2 })
	produce4MiB(t, c)
	nc, err := net.DialTCP("tcp", nil, srv.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadBuffer(4 << 10)
	out := appendRequest(nil, 0, nil, fetchAll())
	for i := range 10 {
		out = appendRequest(out, int32(i+1), nil, kmsg.NewPtrMetadataRequest())
	}
	go func() { _, _ = nc.Write(out) }()
	waitUntil(t, "the write timeout", func() bool {
		return counterValue(srv.metrics.closed.WithLabelValues("write_timeout")) == 1
	})
	waitUntil(t, "the connection to end", func() bool { return srv.Status().Connections == 0 })
	waitUntil(t, "the budget to be given back", func() bool { return srv.budget.inUse() == 0 })
}

// failingListener fails Accept with EMFILE until release is closed.
type failingListener struct {
	net.Listener
	release chan struct{}
	fails   atomic.Int64
}

func (l *failingListener) Accept() (net.Conn, error) {
	select {
	case <-l.release:
		return l.Listener.Accept()
	default:
		l.fails.Add(1)
		time.Sleep(time.Millisecond)
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
}

// Running out of file descriptors used to end the accept loop for good
// while /readyz stayed green.
func TestAcceptErrorsAreRetriedAndShownInReady(t *testing.T) {
	fl := &failingListener{release: make(chan struct{})}
	srv, _ := newHostileProxy(t, 1<<20, Limits{}, func(s *Server) {
		s.listen = func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			fl.Listener = ln
			return fl, err
		}
	})
	waitUntil(t, "accept errors", func() bool { return fl.fails.Load() >= 3 })
	if srv.Ready() {
		t.Error("Ready() = true while accepts fail")
	}
	if st := srv.Status(); !strings.Contains(st.AcceptError, "too many open files") {
		t.Errorf("status accept_error = %q", st.AcceptError)
	}
	close(fl.release)
	assertServed(t, srv, "")
	waitUntil(t, "Ready() after accepts recover", srv.Ready)
}

// Background refreshes after stale-leader errors are coalesced: a burst of
// them costs one or two Metadata requests, not one each.
func TestRefreshSoonIsCoalesced(t *testing.T) {
	srv, c := newHostileProxy(t, 1<<20, Limits{})
	var metadata atomic.Int64
	var gate sync.Once
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		metadata.Add(1)
		gate.Do(func() { <-release }) // hold the first refresh while the burst arrives
		return nil, nil, false
	})
	for i := range 50 {
		srv.refreshSoon(Source, []string{"t", "u" + string(rune('a'+i%26))})
	}
	close(release)
	waitUntil(t, "the refreshes to finish", func() bool {
		r := srv.refreshers[Source]
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.running
	})
	if n := metadata.Load(); n < 1 || n > 2 {
		t.Errorf("%d Metadata requests for 50 refreshSoon calls, want 1 or 2", n)
	}
}

// A dial that hangs (a dead broker, DNS) no longer holds the client
// connection's lock: the same client's requests to another broker go on.
func TestHangingDialDoesNotBlockOtherBrokers(t *testing.T) {
	srv, c := newHostileProxy(t, 1<<20, Limits{})
	hang := make(chan struct{})
	defer close(hang)
	real := srv.dialer.netDial
	srv.dialer.netDial = func(addr string, timeout time.Duration) (net.Conn, error) {
		if addr == "dead:9092" {
			<-hang
			return nil, errors.New("dead broker")
		}
		return real(addr, timeout)
	}
	cc := newClientConn(srv, nopConn{}, 1)
	go func() { _, _ = cc.upstream(Source, 7, "dead:9092", classNormal) }()
	time.Sleep(50 * time.Millisecond) // let the dead dial start (not needed for correctness)
	done := make(chan error, 1)
	go func() {
		u, err := cc.upstream(Source, 0, c.ListenAddrs()[0], classNormal)
		if u != nil {
			u.close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a dial to a healthy broker waited for a hanging dial to another")
	}
	close(cc.done)
}

// After a failed dial, requests for that broker fail fast until the
// backoff passes: a dead broker costs one dial per backoff, not one per
// request.
func TestFailedDialBacksOff(t *testing.T) {
	d := newDialer(Limits{}.withDefaults(), 1<<20, nil)
	var dials atomic.Int64
	d.netDial = func(string, time.Duration) (net.Conn, error) {
		dials.Add(1)
		return nil, syscall.ECONNREFUSED
	}
	for range 20 {
		if _, err := d.dial(Source, 1, "down:9092", nil, nil); err == nil {
			t.Fatal("dial succeeded")
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials for 20 requests within the backoff, want 1", n)
	}
	_, err := d.dial(Source, 1, "down:9092", nil, nil)
	if !errors.Is(err, errDialBackoff) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not say backoff and why", err)
	}
	if b := d.backoff(50); b > config.DefaultDialBackoffMax || b < config.DefaultDialBackoffMax/2 {
		t.Errorf("backoff after 50 failures = %s, want within [max/2, max]", b)
	}
}

// A broker that stops reading fails the upstream connection at the write
// deadline instead of blocking the writer (and everyone behind its lock).
func TestUpstreamWriteHasADeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			defer nc.Close()
			time.Sleep(30 * time.Second) // accept, never read
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	u := newUpstreamConn(nc, Source, 1, ln.Addr().String(), 1<<20, nil, 200*time.Millisecond)
	defer u.close()
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(7)
	req.Acks = -1
	body := make([]byte, 64<<20) // more than the socket buffers hold
	done := make(chan error, 1)
	go func() {
		call, err := u.sendBody(req, nil, body, true)
		if err == nil {
			<-call.done
			err = call.err
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errUpstreamClosed) {
			t.Errorf("call error %v, want errUpstreamClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("an upstream write to a broker that does not read never ended")
	}
}

// keyedLock: holders of different keys do not wait for each other.
func TestKeyedLockIsPerKey(t *testing.T) {
	var l keyedLock[string]
	unlockA := l.lock("a")
	got := make(chan struct{})
	go func() { l.lock("b")(); close(got) }()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("lock(b) waited for lock(a)")
	}
	second := make(chan struct{})
	go func() { l.lock("a")(); close(second) }()
	select {
	case <-second:
		t.Fatal("lock(a) taken twice")
	case <-time.After(20 * time.Millisecond):
	}
	unlockA()
	<-second
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) != 0 {
		t.Errorf("%d entries left after every unlock", len(l.m))
	}
}

// nopConn is a net.Conn for a clientConn whose socket a test never uses.
type nopConn struct{ net.Conn }

func (nopConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (nopConn) Close() error         { return nil }
func (nopConn) Read([]byte) (int, error) {
	return 0, io.EOF
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// acks=0 produce requests held by a cutover used to be read and queued
// without limit (they have no response slot); they now count against
// MaxInflight until the hold releases them.
func TestHeldAcksZeroProduceStaysInFlightBound(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("src"), kfake.SeedTopics(1, "t"))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("tgt"), kfake.SeedTopics(1, "t"))
	srv := startProxy(t, Options{StateDir: t.TempDir(), MaxInflight: 4,
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()},
		Router:   txnRoutes(t, Source)})

	srv.HoldProduce("t")
	var out []byte
	for i := range 20 {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(7)
		req.Acks = 0
		req.TimeoutMillis = 1000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "t"
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = []byte("not a batch, never parsed while held")
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		out = appendRequest(out, int32(i), kmsg.StringPtr("acks0"), req)
	}
	nc := dialProxy(t, srv)
	go func() { _, _ = nc.Write(out) }()
	waitUntil(t, "four held requests", func() bool { return srv.HeldCount("t") >= 4 })
	time.Sleep(200 * time.Millisecond) // room for more to be (wrongly) read
	if n := srv.HeldCount("t"); n != 4 {
		t.Errorf("%d acks=0 requests held with max_inflight_per_conn 4", n)
	}
	srv.ReleaseProduce("t")
	assertServed(t, srv, "")
}

// One failed metadata refresh used to leave the cluster unreachable, and
// /readyz red, until a client request happened to refresh it; kproxy now
// probes an unreachable cluster until it answers.
func TestFailedRefreshRecoversReadiness(t *testing.T) {
	srv, c := newHostileProxy(t, 1<<20, Limits{})
	var failing atomic.Bool
	failing.Store(true)
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if failing.Load() {
			return nil, errors.New("injected metadata failure"), true
		}
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := srv.clusters[Source].refresh(ctx, []string{"t"}); err == nil {
		t.Fatal("the injected failure did not fail the refresh")
	}
	if srv.Ready() {
		t.Fatal("Ready() after a failed refresh")
	}
	failing.Store(false)
	waitUntil(t, "Ready() once the cluster answers again", srv.Ready)
}

// hugeArrayFetch is a 1 MiB Fetch v4 frame body whose topics array declares
// one element per byte left, far more than the bytes can hold (a topic
// takes at least 6).
func hugeArrayFetch() []byte {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, uint16(kmsg.Fetch))
	b = binary.BigEndian.AppendUint16(b, 4)
	b = binary.BigEndian.AppendUint32(b, 7)
	b = binary.BigEndian.AppendUint16(b, 0xffff) // null client id
	b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	b = binary.BigEndian.AppendUint32(b, 500) // max wait
	b = binary.BigEndian.AppendUint32(b, 1)   // min bytes
	b = binary.BigEndian.AppendUint32(b, 1<<20)
	b = append(b, 0) // isolation
	left := 1<<20 - len(b) - 4
	b = binary.BigEndian.AppendUint32(b, uint32(left))
	return append(b, make([]byte, left)...)
}

// A 1 MiB Fetch frame declaring a topic per byte used to make kmsg
// allocate the whole array first (64 MiB); kmsg >= v1.15.1 checks the
// declared length against the minimum encoded size of an element and the
// bytes left, so it is refused before anything is allocated.
func TestHugeDeclaredArrayIsRefusedCheaply(t *testing.T) {
	body := hugeArrayFetch()
	adv := map[int16]versionRange{}
	for k, s := range registry {
		adv[k] = versionRange{s.min, s.max}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, _, err := parseRequest(body, adv, nil, nil, false)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("the lying array was accepted")
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("decoding a 1 MiB Fetch declaring %d topics allocated %d KiB", len(body)-31, alloc>>10)
	if alloc > 2<<20 {
		t.Errorf("decoding allocated %d MiB; want at most 2 MiB", alloc>>20)
	}

	srv, _ := newHostileProxy(t, 4<<20, Limits{})
	nc := dialProxy(t, srv)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	if _, err := nc.Write(append(frame, body...)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, nc)
	assertServed(t, srv, "")
}

// kproxy used to wait for every cluster before listening: a source outage
// during a restart took down the topics already served by the target. It
// now listens after start_grace with the clusters that answered, serves
// their topics, and picks the missing cluster up when it appears.
func TestStartsWithOneClusterDownAndPicksItUpLater(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	// The target's address, with nothing listening on it yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	srv, err := New(Options{Listen: "127.0.0.1:0", Router: StaticRouter(Source), Registerer: prometheus.NewRegistry(),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: {ln.Addr().String()}},
		Limits:   Limits{StartGrace: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start with the target down: %v", err)
	}
	assertServed(t, srv, "") // t lives on the source
	if srv.Ready() {
		t.Error("Ready() while the target has never answered")
	}

	// A client connected now negotiated versions without the target's say.
	early := dialProxy(t, srv)
	before := srv.advertised()[int16(kmsg.Fetch)]

	// The target is older: it narrows what kproxy may advertise.
	newKfake(t, kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(1, "t"), kfake.MaxVersions(kversion.V3_0_0()))
	// Ready and the narrowed versions are set one after the other: wait for
	// both (a check of the versions right after Ready failed under load).
	narrowed := func() bool { return srv.advertised()[int16(kmsg.Fetch)].max < before.max }
	waitUntil(t, "Ready() and narrower Fetch versions once the older target answers", func() bool {
		return srv.Ready() && narrowed()
	})
	expectClosed(t, early) // told to renegotiate
	assertServed(t, srv, "")
}

// A connection waiting for an answer is not idle: a long-poll Fetch that
// outlasts idle_timeout is answered, not cut off.
func TestIdleTimeoutSparesOutstandingRequests(t *testing.T) {
	srv, _ := newHostileProxy(t, 1<<20, Limits{IdleTimeout: 100 * time.Millisecond})
	nc := dialProxy(t, srv)
	req := fetchAll()
	req.MaxWaitMillis = 1000 // t is empty: kfake waits the whole time
	req.MinBytes = 1
	if _, err := nc.Write(appendRequest(nil, 5, nil, req)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	frame, err := readFrame(nc, 1<<20)
	if err != nil {
		t.Fatalf("the long poll was not answered: %v", err)
	}
	if corr := int32(binary.BigEndian.Uint32(frame)); corr != 5 {
		t.Fatalf("answer for correlation id %d", corr)
	}
	expectClosed(t, nc) // idle once answered
}
