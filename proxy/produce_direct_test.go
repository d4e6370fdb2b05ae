package proxy

// A small Produce answered by the goroutine that reads its upstream answer
// (conn.go, directProduce): responses stay in request order, and a broker
// connection that drops still answers the client.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawClient is a client connection that sends prepared frames under a
// correlation id and reads answer frames.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, srv *Server) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawClient) send(frame []byte, corr int32) {
	c.t.Helper()
	f := append([]byte(nil), frame...)
	binary.BigEndian.PutUint32(f[8:], uint32(corr))
	if _, err := c.nc.Write(f); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one answer frame (after its size) within d.
func (c *rawClient) recv(d time.Duration) ([]byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	return readFrameInto(c.br, 1<<20, nil)
}

func corrOf(frame []byte) int32 { return int32(binary.BigEndian.Uint32(frame)) }

func TestDirectProduceKeepsResponseOrder(t *testing.T) {
	mb := newMemBroker(t, 1, nil)
	mb.holdProduce = make(chan struct{})
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	c := dialRaw(t, srv)
	produce := requestFrame(produceRequest(11, 1, benchBatch(1, 100)))
	before := producedDirect.Load()
	// The first request, with nothing else outstanding: answered
	// directly (checked below). Behind it, pipelined: an ApiVersions the
	// proxy answers at once by itself, and another Produce. The broker
	// holds both Produce answers.
	c.send(produce, 1)
	c.send(requestFrame(kmsg.NewPtrApiVersionsRequest()), 2) // v0
	c.send(produce, 3)
	if f, err := c.recv(300 * time.Millisecond); err == nil {
		t.Fatalf("answer with correlation id %d while the broker holds the first Produce's: it overtook that answer", corrOf(f))
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case mb.holdProduce <- struct{}{}:
		case <-time.After(30 * time.Second):
			t.Fatal("a Produce never reached the broker")
		}
	}
	for i, w := range []int32{1, 2, 3} {
		f, err := c.recv(30 * time.Second)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if got := corrOf(f); got != w {
			t.Fatalf("answer %d has correlation id %d, want %d (answers out of request order)", i, got, w)
		}
	}
	if producedDirect.Load() == before {
		t.Fatal("the first Produce was not answered directly: this test checks nothing")
	}
}

// Pipelined Produce requests on one broker connection are answered
// directly one after the other, in order, and a request behind them waits
// for all of them.
func TestDirectProduceChain(t *testing.T) {
	mb := newMemBroker(t, 1, nil)
	mb.holdProduce = make(chan struct{})
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	c := dialRaw(t, srv)
	produce := requestFrame(produceRequest(11, 1, benchBatch(1, 100)))
	before := producedDirect.Load()
	for corr := int32(1); corr <= 3; corr++ {
		c.send(produce, corr)
	}
	c.send(requestFrame(kmsg.NewPtrApiVersionsRequest()), 4)
	if f, err := c.recv(300 * time.Millisecond); err == nil {
		t.Fatalf("answer with correlation id %d while the broker holds the Produce answers", corrOf(f))
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	releaseInOrder(t, mb, c, 3)
	if got := producedDirect.Load() - before; got != 3 {
		t.Fatalf("%d of the 3 pipelined Produce requests answered directly, want all", got)
	}
}

// releaseInOrder lets the broker answer the connection's produces held
// Produce requests (correlation ids 1..produces) one at a time and checks
// that every answer, and that of the one request behind them, comes back
// in request order.
func releaseInOrder(t *testing.T, mb *memBroker, c *rawClient, produces int32) {
	t.Helper()
	for corr := int32(1); corr <= produces+1; corr++ {
		if corr <= produces {
			select { // one more Produce answer may go
			case mb.holdProduce <- struct{}{}:
			case <-time.After(30 * time.Second):
				t.Fatal("a Produce never reached the broker")
			}
		}
		f, err := c.recv(30 * time.Second)
		if err != nil {
			t.Fatalf("answer %d: %v", corr, err)
		}
		if got := corrOf(f); got != corr {
			t.Fatalf("answer with correlation id %d, want %d (answers out of request order)", got, corr)
		}
	}
}

// recvProduceAnswer reads the answer to the v11 Produce sent with
// correlation id corr and decodes it (none within 30 s fails the test).
func recvProduceAnswer(t *testing.T, c *rawClient, corr int32) *kmsg.ProduceResponse {
	t.Helper()
	f, err := c.recv(30 * time.Second)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("no answer to a Produce whose broker connection dropped")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := corrOf(f); got != corr {
		t.Fatalf("answer with correlation id %d, want %d", got, corr)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(11)
	if err := resp.ReadFrom(f[5:]); err != nil { // after the id and the header's tags
		t.Fatal(err)
	}
	return resp
}

func TestDirectProduceAnsweredWhenItsBrokerConnectionDrops(t *testing.T) {
	mb := newMemBroker(t, 1, nil)
	mb.dropProduce = true
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	c := dialRaw(t, srv)
	req := produceRequest(11, 1, benchBatch(1, 100))
	before := producedDirect.Load()
	c.send(requestFrame(req), 7)
	resp := recvProduceAnswer(t, c, 7)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("answer names %d topics, want 1 with 1 partition", len(resp.Topics))
	}
	if code := resp.Topics[0].Partitions[0].ErrorCode; code == 0 {
		t.Fatal("a Produce whose broker connection dropped was answered without error")
	}
	if producedDirect.Load() == before {
		t.Fatal("the Produce was not answered directly: this test checks nothing")
	}
}

// The connection's one timer for direct answers (directExpired): a firing
// of the timer an earlier chain armed, as the next chain begins, leaves
// the upstream connection alone (the chain is younger than a period); a
// chain a whole period old with no answer fails it, which answers its
// clients.
func TestDirectTimerSparesAChainThatJustBegan(t *testing.T) {
	up, broker := net.Pipe()
	defer broker.Close()
	uc := newUpstreamConn(up, Source, 1, "broker", 1<<20, nil, time.Second)
	defer uc.fail(errors.New("test over"))
	cc := &clientConn{}
	cc.directUp.Store(uc)
	cc.directWait.Store(int64(time.Minute))
	cc.directTimer = time.AfterFunc(time.Hour, func() {})
	defer cc.directTimer.Stop()
	// One request in flight, none answered, the chain begun just now.
	cc.directStart.Store(time.Now().UnixNano())
	cc.directIssued.Store(1)
	cc.directExpired()
	if uc.isDead() {
		t.Fatalf("a chain that just began was taken for stalled: %v", uc.deadErr)
	}
	// The same chain a whole period later, still unanswered.
	cc.directStart.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	cc.directExpired()
	if !uc.isDead() {
		t.Fatal("a chain with no answer for a whole period left its upstream connection open")
	}
}

// Large Produce requests, whose batch bodies the read loop splices into
// pipes (produce_splice.go), are answered directly as small ones are:
// pipelined, one after the other in order, with a request behind them
// last.
func TestDirectProduceChainSpliced(t *testing.T) {
	mb := newMemBroker(t, 1, nil)
	mb.holdProduce = make(chan struct{})
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	c := dialRaw(t, srv)
	produce := requestFrame(produceRequest(11, 1, benchBatch(300, 1024))) // 300 KiB: spliced
	direct, spliced := producedDirect.Load(), produceSpliced.Load()
	for corr := int32(1); corr <= 3; corr++ {
		c.send(produce, corr)
	}
	c.send(requestFrame(kmsg.NewPtrApiVersionsRequest()), 4)
	releaseInOrder(t, mb, c, 3)
	waitUntil(t, "the 3 Produce requests counted as spliced", func() bool { return produceSpliced.Load()-spliced == 3 })
	if got := producedDirect.Load() - direct; got != 3 {
		t.Fatalf("%d of the 3 pipelined spliced Produce requests answered directly, want all", got)
	}
}

// A spliced Produce answered directly whose broker connection drops is
// answered with an error, as a small one is, and its pipes go back.
func TestDirectProduceSplicedAnsweredWhenItsBrokerConnectionDrops(t *testing.T) {
	mb := newMemBroker(t, 1, nil)
	mb.dropProduce = true
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	c := dialRaw(t, srv)
	direct, spliced := producedDirect.Load(), produceSpliced.Load()
	c.send(requestFrame(produceRequest(11, 1, benchBatch(300, 1024))), 7) // 300 KiB: spliced
	resp := recvProduceAnswer(t, c, 7)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode == 0 {
		t.Fatalf("a spliced Produce whose broker connection dropped was answered %+v, want one partition with an error", resp.Topics)
	}
	waitUntil(t, "the request counted as spliced", func() bool { return produceSpliced.Load() > spliced })
	if producedDirect.Load() == direct {
		t.Fatal("the spliced Produce was not answered directly (the write loop answered it)")
	}
	waitUntil(t, "every pipe back in the pool", func() bool { return splicePipes.InUse() == 0 })
}
