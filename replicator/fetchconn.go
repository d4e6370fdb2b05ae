package replicator

// A fetcher's own connection to its source broker, and the buffers its
// answers are read into. kgo's Broker.Request allocates a new buffer for
// every answer (megabytes of record batches, zeroed by the runtime, then
// collected), and the copy read them through kgo's connection goroutines.
// Here each answer is read straight into a pooled frame (bufio only for
// the small ones) and decoded in place: the record batches the copy
// produces alias the frame, which goes back to the pool once every
// partition answered from it has applied its batches (release).

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchFrame is one fetch answer: its bytes and the response decoded from
// them (its record batches alias buf). refs counts the holders: the
// fetcher while it hands out partitions, and each partition's copy loop
// until it released its answer.
type fetchFrame struct {
	buf  []byte
	resp kmsg.FetchResponse
	refs atomic.Int32
}

var framePool = sync.Pool{New: func() any { return new(fetchFrame) }}

func (f *fetchFrame) hold() { f.refs.Add(1) }

// release drops one hold; the last returns the frame to the pool. A holder
// that never releases (an error path) only costs the pool that frame.
func (f *fetchFrame) release() {
	if f != nil && f.refs.Add(-1) == 0 {
		framePool.Put(f)
	}
}

// fetchSockBuf is the fetch connection's kernel receive buffer: answers are
// up to FetchMaxBytes, and the larger the buffer the fewer reads a frame
// takes.
const fetchSockBuf = 8 << 20

// fetchConn is a synchronous connection to one source broker: the
// fetcher's loop sends one Fetch at a time and waits for it.
type fetchConn struct {
	broker int32
	nc     net.Conn
	br     *bufio.Reader
	ver    int16
	fmtr   *kmsg.RequestFormatter
	corr   int32
	wbuf   []byte
	maxLen int
}

func (r *Replicator) dialFetchConn(ctx context.Context, broker int32) (*fetchConn, error) {
	bm, err := r.srcAdm.BrokerMetadata(ctx)
	if err != nil {
		return nil, fmt.Errorf("source metadata: %w", err)
	}
	addr := ""
	for _, b := range bm.Brokers {
		if b.NodeID == broker {
			addr = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
	}
	if addr == "" {
		return nil, fmt.Errorf("source broker %d is not in the source's metadata", broker)
	}
	nc, av, err := dialBroker(ctx, r.src, broker, addr, fetchSockBuf)
	if err != nil {
		return nil, fmt.Errorf("source %w", err)
	}
	c := &fetchConn{broker: broker, nc: nc, br: bufio.NewReaderSize(nc, 64<<10),
		fmtr:   kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-replicator")),
		maxLen: int(r.opts.FetchMaxBytes) + 1<<20} // the broker may exceed MaxBytes by one batch (KIP-74); headroom
	// v4 is the first with record batches and read_committed.
	if c.ver = version(av, kmsg.Fetch, kmsg.NewPtrFetchRequest().MaxVersion()); c.ver < 4 {
		nc.Close()
		return nil, fmt.Errorf("source broker %d at %s supports no Fetch version with record batches", broker, addr)
	}
	return c, nil
}

// fetch sends req and reads its answer into a pooled frame held once for
// the caller. ctx ending closes the connection (the caller drops it).
func (c *fetchConn) fetch(ctx context.Context, req *kmsg.FetchRequest) (*fetchFrame, error) {
	req.Version = c.ver
	c.corr++
	c.wbuf = c.fmtr.AppendRequest(c.wbuf[:0], req, c.corr)
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// The broker answers within MaxWait; the slack covers a loaded one.
	_ = c.nc.SetDeadline(time.Now().Add(time.Duration(req.MaxWaitMillis)*time.Millisecond + 30*time.Second))
	if _, err := c.nc.Write(c.wbuf); err != nil {
		return nil, fmt.Errorf("broker %d: fetch: %w", c.broker, err)
	}
	f := framePool.Get().(*fetchFrame)
	f.refs.Store(1)
	var err error
	if f.buf, err = readFrame(c.br, f.buf, c.maxLen); err != nil {
		return nil, fmt.Errorf("broker %d: fetch: %w", c.broker, err)
	}
	f.resp.Version = c.ver
	if err := decodeAnswer(f.buf, c.corr, req, &f.resp, true); err != nil {
		return nil, fmt.Errorf("broker %d: fetch answer: %w", c.broker, err)
	}
	return f, nil
}

func (c *fetchConn) close() { c.nc.Close() }
