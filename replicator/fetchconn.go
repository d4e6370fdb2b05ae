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
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/lowat"
	"github.com/kproxy/kproxy/internal/pipes"
)

// fetchFrame is one fetch answer: its bytes and the response decoded from
// them (its record batches alias buf). refs counts the holders: the
// fetcher while it hands out partitions, and each partition's copy loop
// until it released its answer.
type fetchFrame struct {
	buf  []byte
	resp kmsg.FetchResponse
	refs atomic.Int32
	// A streamed answer's spliced batches (fetchsplice.go), in answer
	// order, and the pipes holding their bodies: chain[i] is set to nil
	// once its pipe is given back (sent, or dropped).
	splices []splicedBatch
	chain   []*pipes.Pipe
	pool    *pipes.Pool
}

// freeFrames keeps released frames for the next answers, up to
// freeFrameBytes of buffers in all. It replaces a sync.Pool, which drops
// its frames at every GC: a dropped frame's megabytes came back as fresh
// pages, and the page faults and the kernel zeroing those pages were a
// quarter of the copy's CPU (perf, uncompressed 1 MiB batches).
var freeFrames struct {
	sync.Mutex
	frames []*fetchFrame
	bytes  int
}

// freeFrameBytes bounds the buffers kept for reuse: several answers'
// worth at the default 1 MiB per partition, and what an idle replicator
// holds on to after a burst.
const freeFrameBytes = 32 << 20

func getFrame() *fetchFrame {
	freeFrames.Lock()
	defer freeFrames.Unlock()
	n := len(freeFrames.frames)
	if n == 0 {
		return new(fetchFrame)
	}
	f := freeFrames.frames[n-1]
	freeFrames.frames[n-1] = nil
	freeFrames.frames = freeFrames.frames[:n-1]
	freeFrames.bytes -= cap(f.buf)
	return f
}

func putFrame(f *fetchFrame) {
	freeFrames.Lock()
	defer freeFrames.Unlock()
	if freeFrames.bytes+cap(f.buf) > freeFrameBytes {
		return // the garbage collector takes it
	}
	freeFrames.frames = append(freeFrames.frames, f)
	freeFrames.bytes += cap(f.buf)
}

// frameBufSize rounds an answer's size up to a whole MiB: answers vary in
// size, and a buffer a little larger than the last serves the next
// instead of being replaced.
func frameBufSize(n int) int { return (n + 1<<20 - 1) &^ (1<<20 - 1) }

func (f *fetchFrame) hold() { f.refs.Add(1) }

// release drops one hold; the last returns the frame to the pool. A holder
// that never releases (an error path) only costs the pool that frame.
func (f *fetchFrame) release() {
	if f != nil && f.refs.Add(-1) == 0 {
		putFrame(f)
	}
}

// fetchSockBuf is the fetch connection's kernel receive buffer: answers are
// up to FetchMaxBytes, and the larger the buffer the fewer reads a frame
// takes.
const fetchSockBuf = 8 << 20

// fetchReadChunk is the least a plaintext fetch connection wakes up for
// while an answer is being read (SO_RCVLOWAT; less only for an answer's
// last bytes). Without it the copy woke and read whatever had arrived,
// 76 KB on average on loopback, each read followed by an EAGAIN: about
// 20,000 syscalls and goroutine wake-ups per GB, and a window-update ACK
// per read, whose transmission (and the broker's next segments) the
// kernel runs in the reader's context. The kernel caps the mark at half
// the receive buffer.
const fetchReadChunk = 1 << 20

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
	// lw reads the plain TCP socket with a low-water mark (nil over TLS,
	// whose reads go through the TLS layer: a mark below what it buffered
	// could stall them).
	lw *lowat.Reader
	// stream reads answers splicing large batch bodies into pipes (nil:
	// TLS on either side, or Options.NoSplice).
	stream *answerStream
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
	if raw := lowat.RawConn(nc); raw != nil {
		c.lw = lowat.New(raw, fetchReadChunk)
	}
	if sp := pipes.NewSplicer(nc); sp != nil && c.lw != nil && r.spliceOn() {
		sp.LW = c.lw
		c.stream = &answerStream{c: c, sp: sp, pool: &r.pipes}
	}
	// v4 is the first with record batches and read_committed.
	if c.ver = version(av, kmsg.Fetch, kmsg.NewPtrFetchRequest().MaxVersion()); c.ver < 4 {
		nc.Close()
		return nil, fmt.Errorf("source broker %d at %s supports no Fetch version with record batches", broker, addr)
	}
	return c, nil
}

// fetch sends req and reads its answer into a pooled frame held once for
// the caller. ctx ending closes the connection (the caller drops it).
// spliceOK, when the connection streams answers, says which partitions'
// batches may be spliced (nil: all). The caller gives back the pipes of
// the answer's spliced batches it does not hand on (closeSplices).
func (c *fetchConn) fetch(ctx context.Context, req *kmsg.FetchRequest, spliceOK func(topic string, id [16]byte, partition int32) bool) (*fetchFrame, error) {
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
	f := getFrame()
	f.refs.Store(1)
	f.splices, f.chain = f.splices[:0], f.chain[:0]
	var err error
	if c.stream != nil && c.ver <= maxStreamedFetchVersion {
		f.pool = c.stream.pool
		c.stream.spliceOK = spliceOK
		err = c.readStreamed(f)
		c.stream.spliceOK = nil
	} else if c.lw != nil {
		f.buf, err = c.readFrameRaw(f.buf)
	} else {
		f.buf, err = readFrame(c.br, f.buf, c.maxLen)
	}
	if err != nil {
		return nil, fmt.Errorf("broker %d: fetch: %w", c.broker, err)
	}
	f.resp.Version = c.ver
	if err := decodeAnswer(f.buf, c.corr, req, &f.resp, true); err != nil {
		f.closeSplices()
		return nil, fmt.Errorf("broker %d: fetch answer: %w", c.broker, err)
	}
	return f, nil
}

func (c *fetchConn) close() { c.nc.Close() }

// readStreamed reads an answer's size, then the answer as a stream
// (answerStream).
func (c *fetchConn) readStreamed(f *fetchFrame) error {
	if cap(f.buf) < 4 {
		f.buf = make([]byte, 4, 4096)
	}
	if err := c.readFull(f.buf[:4]); err != nil {
		return err
	}
	n := int(int32(binary.BigEndian.Uint32(f.buf[:4])))
	if n < 4 || n > c.maxLen {
		return fmt.Errorf("answer of %d bytes", n)
	}
	return c.stream.read(f, n, c.ver)
}

// readFrameRaw is readFrame on the plain socket, woken only once
// fetchReadChunk bytes (or the rest of the answer) are there.
func (c *fetchConn) readFrameRaw(buf []byte) ([]byte, error) {
	if cap(buf) < 4 {
		buf = make([]byte, 4, 4096)
	}
	buf = buf[:4]
	if err := c.readFull(buf); err != nil {
		return buf, err
	}
	n := int(int32(binary.BigEndian.Uint32(buf[:4])))
	if n < 4 || n > c.maxLen {
		return buf, fmt.Errorf("answer of %d bytes", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n, frameBufSize(n))
	}
	buf = buf[:n]
	return buf, c.readFull(buf)
}

// readFull fills b from the socket, woken only once fetchReadChunk bytes
// (or the rest of b) are there. The deadline set by fetch applies.
func (c *fetchConn) readFull(b []byte) error {
	_, err := c.lw.ReadFull(b)
	return err
}
