package replicator

// The copy's own produce connection to each target broker. kgo's
// Broker.Request waits for each answer and does not keep the order of
// requests sent from different goroutines, so a partition could have only
// one batch in flight: a round trip per batch, with the broker idle while
// the answer travels back and the next request is built. A produceConn is
// pipelined like the proxy's upstream connections: requests are written
// back to back in the order send is called, and answers (which a broker
// returns in request order on one connection) are paired with them FIFO by
// one reader goroutine. A partition keeps up to maxInFlight batches on it
// (partition.go), so the broker always has the next batch waiting.
//
// Sends of different partitions share requests (a group commit without a
// timer): a send that finds another sender writing queues its batch and
// returns, and the writer, once its write is done, takes everything
// queued into its next request, one batch per partition (Kafka takes one
// batch per partition per request, many partitions), so a lone send
// leaves at once and a busy connection carries few, large requests.
// The answer is split to each call by topic and partition. A partition's
// second queued batch waits for the next request; its batches leave in
// the order of send, and each request's answer still comes in order.
//
// The connection is dialed like the kgo target client's (its dial TLS
// config and SASL mechanism, read back with OptValue), so a secured target
// needs no extra settings.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/kproxy/kproxy/internal/pipes"
	"github.com/kproxy/kproxy/secure"
)

// maxInFlight is the number of batches a partition keeps unanswered on its
// produce connection: the most an idempotent producer may have (the broker
// keeps the last five batches of a producer for duplicate detection, and
// max.in.flight.requests.per.connection <= 5 is what enable.idempotence
// requires).
const maxInFlight = 5

// defaultProduceTimeout (Options.ProduceTimeout) bounds the wait for one produce answer (the request's own
// timeout is 30 s): a broker that does not answer by then is not going to,
// and the connection is closed, failing every call on it.
const defaultProduceTimeout = 60 * time.Second

// maxPendingPerConn bounds the requests waiting for an answer on one
// connection: every partition the broker leads may have maxInFlight, and
// a send that finds the queue full fails the connection (blocking there
// would hold the write lock the failing reader needs). 2^16 covers 13,000
// busy partitions on one broker; the queue costs 512 KiB per connection.
const maxPendingPerConn = 1 << 16

// maxMergedCalls and maxMergedBytes bound one merged request: its
// partitions and its records' bytes (the broker takes requests up to
// socket.request.max.bytes, 100 MiB by default; a batch is at most the
// topic's max.message.bytes, 1 MiB by default).
const (
	maxMergedCalls = 256
	maxMergedBytes = 8 << 20
)

// errConnClosed is what the calls of a closed connection get.
var errConnClosed = errors.New("produce connection closed")

// produceCall is one batch waiting for its answer. Calls are owned by
// their partition's pipeline and reused (zero allocations per batch);
// done is buffered 1 and receives exactly one value per send.
type produceCall struct {
	done chan struct{}
	// Set by send: the partition's request (its one topic and partition;
	// its records are not used), the batch, and a spliced batch's body.
	req     *kmsg.ProduceRequest
	records []byte
	body    []*pipes.Pipe
	bodyLen int
	// Set by the writer (under qmu): the request's correlation id, the
	// next call of the same request (the first one is in pending), and
	// wrote once the request's write is over (a spliced send waits for
	// it: the caller takes the pipes back when send returns).
	corr  int32
	next  *produceCall
	wrote bool
	// Filled by the reader before done: the partition's answer.
	errCode    int16
	baseOffset int64
	err        error
}

// alone says whether the call needs a request of its own: a spliced
// batch is written from its pipes (writeSpliced), and a transactional
// request carries its transactional id, which is one partition's
// (txncopy.go).
func (call *produceCall) alone() bool {
	return call.bodyLen > 0 || call.req.TransactionID != nil
}

// topic is the call's topic entry (its name, and its id for v13+).
func (call *produceCall) topic() *kmsg.ProduceRequestTopic { return &call.req.Topics[0] }

// sameTopic says whether two calls' partitions go in one topic entry.
func sameTopic(a, b *produceCall) bool {
	ta, tb := a.topic(), b.topic()
	return ta.Topic == tb.Topic && ta.TopicID == tb.TopicID
}

// produceConn is a pipelined connection to one target broker.
type produceConn struct {
	broker  int32
	nc      net.Conn
	ver     int16         // the Produce version both sides support
	timeout time.Duration // for one produce answer (Options.ProduceTimeout)

	// qmu guards the queue, writing, waiters, the calls' corr, next and
	// wrote, dead's closing and deadErr, and the order of pending.
	qmu     sync.Mutex
	wrote   sync.Cond // a request's write is over (for waiting spliced sends)
	queue   []*produceCall
	writing bool // a sender is writing the queue out (writeQueue)
	waiters int  // spliced sends waiting on wrote
	pending chan *produceCall

	// The writer's own (the sender in writeQueue).
	corr  int32
	wbuf  []byte
	iov   [][]byte    // a request's pieces: encoding, records, encoding, ...
	bufs  net.Buffers // iov for one writev (a field: a local would escape)
	fmtr  *kmsg.RequestFormatter
	hdr   *kmsg.ProduceRequest // a request's fields before its topics
	batch []*produceCall       // the calls of the request being written
	seen  map[*kmsg.ProduceRequest]struct{}
	cuts  []int
	tail  [3]byte // a spliced request's trailer (writeSpliced)
	// reqs and batches count the requests written and their batches
	// (nil: not counted).
	reqs, batches prometheus.Counter
	// sp splices spliced batch bodies into the socket (nil over TLS).
	sp *pipes.Splicer
	// yieldFirst: a lone send yields before it writes (send). The shared
	// connections do; the urgent lane's, whose sends a flip's hold waits
	// for, write at once.
	yieldFirst bool

	dead    chan struct{}
	deadErr error
}

// newProduceConn starts the reader of a connection that speaks Produce
// version ver (sp: nil where the connection cannot splice).
func newProduceConn(nc net.Conn, sp *pipes.Splicer, broker int32, ver int16, timeout time.Duration, pending int) *produceConn {
	c := &produceConn{broker: broker, nc: nc, sp: sp, ver: ver, timeout: timeout,
		fmtr:    kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-replicator")),
		pending: make(chan *produceCall, pending), dead: make(chan struct{}),
		hdr: kmsg.NewPtrProduceRequest(), seen: map[*kmsg.ProduceRequest]struct{}{}}
	c.wrote.L = &c.qmu
	c.hdr.Version = ver
	go c.readLoop()
	return c
}

// dialBroker dials a broker the way cl does (its dial TLS config and SASL
// mechanism) and asks its ApiVersions. sockBuf sizes the socket's kernel
// buffers: a fetch connection reads answers of megabytes, and a bigger
// receive buffer turns them into fewer, larger reads.
func dialBroker(ctx context.Context, cl *kgo.Client, broker int32, addr string, sockBuf int) (net.Conn, *kmsg.ApiVersionsResponse, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("broker %d at %s: %w", broker, addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetWriteBuffer(sockBuf)
		_ = tc.SetReadBuffer(sockBuf)
	}
	if deadline, ok := dctx.Deadline(); ok {
		_ = nc.SetDeadline(deadline)
	}
	host, _, _ := net.SplitHostPort(addr)
	if tc, _ := cl.OptValue(kgo.DialTLSConfig).(*tls.Config); tc != nil {
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tlc := tls.Client(nc, cfg)
		if err := tlc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("broker %d at %s: TLS handshake: %w", broker, addr, err)
		}
		nc = tlc
	}
	h := handshake{nc: nc, fmtr: kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-replicator"))}
	if mechs, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism); len(mechs) > 0 {
		if _, err := secure.SASLHandshake(dctx, mechs[0], host, h.roundTrip); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("broker %d at %s: %w", broker, addr, err)
		}
	}
	av := kmsg.NewPtrApiVersionsRequest() // v0: every broker answers it
	avr := av.ResponseKind().(*kmsg.ApiVersionsResponse)
	if err := h.roundTrip(av, avr); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("broker %d at %s: ApiVersions: %w", broker, addr, err)
	}
	if err := kerr.ErrorForCode(avr.ErrorCode); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("broker %d at %s: ApiVersions: %w", broker, addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, avr, nil
}

// version is the highest version of key both kmsg and the broker speak,
// or -1.
func version(av *kmsg.ApiVersionsResponse, key kmsg.Key, ours int16) int16 {
	for _, k := range av.ApiKeys {
		if k.ApiKey == int16(key) {
			if v := min(k.MaxVersion, ours); v >= k.MinVersion {
				return v
			}
		}
	}
	return -1
}

// dialProduceConn dials a target broker for the copy's produce requests.
func dialProduceConn(ctx context.Context, cl *kgo.Client, broker int32, addr string, timeout time.Duration) (*produceConn, error) {
	nc, av, err := dialBroker(ctx, cl, broker, addr, 4<<20)
	if err != nil {
		return nil, fmt.Errorf("target %w", err)
	}
	// v3 is the first with record batches (magic 2).
	ver := version(av, kmsg.Produce, kmsg.NewPtrProduceRequest().MaxVersion())
	if ver < 3 {
		nc.Close()
		return nil, fmt.Errorf("target broker %d at %s supports no Produce version with record batches", broker, addr)
	}
	return newProduceConn(nc, pipes.NewSplicer(nc), broker, ver, timeout, maxPendingPerConn), nil
}

// handshake runs one request at a time on a connection before it is
// handed to its user (SASL, ApiVersions).
type handshake struct {
	nc   net.Conn
	fmtr *kmsg.RequestFormatter
	corr int32
}

// roundTrip sends one request and reads its answer before the reader
// starts (the handshake).
func (h *handshake) roundTrip(req kmsg.Request, resp kmsg.Response) error {
	h.corr++
	if _, err := h.nc.Write(h.fmtr.AppendRequest(nil, req, h.corr)); err != nil {
		return err
	}
	frame, err := readFrame(h.nc, nil, 1<<20)
	if err != nil {
		return err
	}
	return decodeAnswer(frame, h.corr, req, resp, false)
}

// readFrame reads one size-prefixed answer into buf (grown as needed; its
// first 4 bytes of capacity also take the size, read into the heap buffer
// rather than a local array, which would escape: an allocation per frame).
func readFrame(rd io.Reader, buf []byte, maxSize int) ([]byte, error) {
	if cap(buf) < 4 {
		buf = make([]byte, 4, 4096)
	}
	if _, err := io.ReadFull(rd, buf[:4]); err != nil {
		return buf, err
	}
	n := int(int32(binary.BigEndian.Uint32(buf[:4])))
	if n < 4 || n > maxSize {
		return buf, fmt.Errorf("answer of %d bytes", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(rd, buf)
	return buf, err
}

// decodeAnswer checks frame's correlation id and decodes its body into
// resp; unsafe aliases resp's strings and bytes into frame.
func decodeAnswer(frame []byte, corr int32, req kmsg.Request, resp kmsg.Response, unsafe bool) error {
	if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
		return fmt.Errorf("answer %d for request %d", got, corr)
	}
	body := frame[4:]
	resp.SetVersion(req.GetVersion())
	if resp.IsFlexible() && req.Key() != int16(kmsg.ApiVersions) {
		r := kbin.Reader{Src: body}
		kmsg.SkipTags(&r)
		body = r.Src
	}
	if u, ok := resp.(interface{ UnsafeReadFrom([]byte) error }); ok && unsafe {
		return u.UnsafeReadFrom(body)
	}
	return resp.ReadFrom(body)
}

func (c *produceConn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// fail closes the connection once; every call on it gets err.
func (c *produceConn) fail(err error) {
	c.qmu.Lock()
	first := c.markDead(err)
	c.qmu.Unlock()
	if first {
		c.nc.Close()
	}
}

// markDead records the connection's death (qmu held); it says whether
// this was the first, whose caller closes the socket.
func (c *produceConn) markDead(err error) bool {
	if c.isDead() {
		return false
	}
	c.deadErr = err
	close(c.dead)
	return true
}

// send queues req's single partition with records as the connection's
// next batch of that partition; call gets its answer. A partition's
// batches are written, and answered, in the order of send. With nobody
// writing, the sender writes the queue itself (writeQueue) before it
// returns; otherwise the writer takes the batch into its next request
// and send returns at once: records must stay untouched until call is
// answered (they do: they lie in the fetch answer, released after).
//
// The records are not copied into the request's encoding: they follow
// it from where they lie (one writev), so the batch's bytes are touched
// only by the kernel's copy. With body (a spliced batch: records is its
// head), the body follows records from its pipes with splice(2) in a
// request of its own, and send returns once it is written: the caller
// gives the pipes back after.
func (c *produceConn) send(req *kmsg.ProduceRequest, records []byte, body []*pipes.Pipe, call *produceCall) error {
	bodyLen := 0
	for _, p := range body {
		bodyLen += p.N
	}
	if bodyLen > 0 && c.sp == nil {
		return errors.New("spliced batch for a connection that cannot splice") // the pipeline reads such a batch first
	}
	call.req, call.records, call.body, call.bodyLen = req, records, body, bodyLen
	call.next, call.err, call.errCode, call.baseOffset = nil, nil, 0, -1
	c.qmu.Lock()
	if c.isDead() {
		err := c.deadErr
		c.qmu.Unlock()
		return err
	}
	call.wrote = false
	c.queue = append(c.queue, call)
	if bodyLen > 0 {
		for !call.wrote && c.writing {
			c.waiters++
			c.wrote.Wait()
			c.waiters--
		}
	}
	if call.wrote || c.writing {
		c.qmu.Unlock()
		return nil
	}
	c.writing = true
	if c.yieldFirst && len(c.queue) == 1 && bodyLen == 0 {
		// Alone in the queue: let the goroutines that are ready to run
		// (other partitions' copies woken by the same fetch answer)
		// queue their batches first, so they share this request instead
		// of each sending its own. A yield, not a timer: with nothing
		// else ready it returns at once.
		c.qmu.Unlock()
		runtime.Gosched()
		c.qmu.Lock()
	}
	c.writeQueue()
	c.writing = false
	c.qmu.Unlock()
	return nil
}

// writeQueue writes requests until the queue is empty (qmu held, and
// released while each request is written). Every queued call ends up in
// a request whose first call is in pending, or, on a dead connection,
// answered here.
func (c *produceConn) writeQueue() {
	for len(c.queue) > 0 {
		if c.isDead() {
			for i, call := range c.queue {
				call.wrote, call.err = true, c.deadErr
				call.done <- struct{}{}
				c.queue[i] = nil
			}
			c.queue = c.queue[:0]
			break
		}
		c.take()
		c.corr++
		for i, call := range c.batch {
			call.corr = c.corr
			if i+1 < len(c.batch) {
				call.next = c.batch[i+1]
			}
		}
		select {
		case c.pending <- c.batch[0]:
		default:
			// Blocking here would hold qmu, which the failing reader needs.
			err := errors.New("too many produce requests in flight on one connection")
			if c.markDead(err) {
				go c.nc.Close()
			}
			for _, call := range c.batch {
				call.wrote, call.err = true, err
				call.done <- struct{}{}
			}
			clear(c.batch)
			continue
		}
		if c.reqs != nil {
			c.reqs.Inc()
			c.batches.Add(float64(len(c.batch)))
		}
		c.qmu.Unlock()
		err := c.writeBatch()
		c.qmu.Lock()
		for _, call := range c.batch {
			call.wrote = true
		}
		clear(c.batch)
		if err != nil && c.markDead(fmt.Errorf("target broker %d: writing produce: %w", c.broker, err)) {
			// The calls are in pending: the reader answers them with the
			// error. A request cut short leaves the connection unusable.
			go c.nc.Close()
		}
		if c.waiters > 0 {
			c.wrote.Broadcast()
		}
	}
	if c.waiters > 0 {
		c.wrote.Broadcast()
	}
}

// take moves the queue's next request into c.batch (qmu held): the
// first call of each partition, in queue order, while they fit in one
// request; the rest stay queued in their order. A call that needs a
// request alone gets one. The calls of one topic end up side by side
// (one topic entry each).
func (c *produceConn) take() {
	clear(c.seen)
	c.batch = c.batch[:0]
	kept, size := c.queue[:0], 0
	for _, call := range c.queue {
		_, dup := c.seen[call.req]
		c.seen[call.req] = struct{}{}
		switch {
		case len(c.batch) == 0 && !dup:
			c.batch = append(c.batch, call)
			size = len(call.records)
		case dup || len(c.batch) == maxMergedCalls || size+len(call.records) > maxMergedBytes ||
			c.batch[0].alone() || call.alone() ||
			call.req.Acks != c.batch[0].req.Acks || call.req.TimeoutMillis != c.batch[0].req.TimeoutMillis:
			kept = append(kept, call)
		default:
			c.batch = append(c.batch, call)
			size += len(call.records)
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	// Group by topic: the order across partitions is free.
	for i := 0; i < len(c.batch); i++ {
		for k := i + 1; k < len(c.batch); k++ {
			if sameTopic(c.batch[k], c.batch[i]) {
				i++
				c.batch[i], c.batch[k] = c.batch[k], c.batch[i]
			}
		}
	}
}

// writeBatch encodes and writes the request of c.batch (the writer, qmu
// not held).
func (c *produceConn) writeBatch() error {
	first := c.batch[0].req
	c.hdr.TransactionID, c.hdr.Acks, c.hdr.TimeoutMillis = first.TransactionID, first.Acks, first.TimeoutMillis
	c.wbuf, c.iov, c.cuts = appendProduce(c.wbuf[:0], c.iov[:0], c.cuts[:0], c.fmtr, c.hdr, c.corr, c.batch)
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if call := c.batch[0]; call.bodyLen > 0 {
		return c.writeSpliced(call.body)
	}
	c.bufs = c.iov
	_, err := c.bufs.WriteTo(c.nc)
	clear(c.iov) // the records are the callers'
	return err
}

// writeSpliced writes the request in c.iov (one call) whose records' body
// is in pipes: the encoding and the batch's head (copied together: a few
// hundred bytes) with MSG_MORE, so they leave with the body's first
// segments, then the body from its pipes, then the trailer.
func (c *produceConn) writeSpliced(body []*pipes.Pipe) error {
	// The trailer lies in wbuf after the encoding, where the head goes.
	trailer := c.tail[:copy(c.tail[:], c.iov[2])]
	c.wbuf = append(c.iov[0], c.iov[1]...) // iov[0] is wbuf's start
	clear(c.iov)
	if err := c.sp.SendMore(c.wbuf); err != nil {
		return err
	}
	for i, p := range body {
		if err := c.sp.Out(p, p.N, i < len(body)-1 || len(trailer) > 0); err != nil {
			return err
		}
	}
	if len(trailer) > 0 {
		_, err := c.nc.Write(trailer)
		return err
	}
	return nil
}

// appendProduce encodes a Produce request (hdr's version, transactional
// id, acks and timeout) as request corr into dst, with one partition per
// call (calls of one topic side by side; each call's records, then its
// bodyLen more bytes written apart, as that partition's record set), and
// appends to iov the request's pieces in order: the encoding up to the
// first record set's length, the first records, the encoding up to the
// next record set's length, ..., and what follows the last records.
// cuts is scratch. kmsg encodes the request's fields before its topics
// (TestAppendProduceMatchesKmsg checks the whole against kmsg for every
// version).
func appendProduce(dst []byte, iov [][]byte, cuts []int, fmtr *kmsg.RequestFormatter, hdr *kmsg.ProduceRequest, corr int32, calls []*produceCall) ([]byte, [][]byte, []int) {
	hdr.Topics = nil
	dst = fmtr.AppendRequest(dst, hdr, corr)
	flexible := hdr.IsFlexible()
	if flexible {
		dst = dst[:len(dst)-2] // the empty topics (uvarint 1) and the request's tags
	} else {
		dst = dst[:len(dst)-4]
	}
	topics := 0
	for i, call := range calls {
		if i == 0 || !sameTopic(call, calls[i-1]) {
			topics++
		}
	}
	dst = appendArrayLen(dst, topics, flexible)
	n := 0
	for i, call := range calls {
		if i == 0 || !sameTopic(call, calls[i-1]) {
			if i > 0 && flexible {
				dst = append(dst, 0) // the last topic's tags
			}
			t := call.topic()
			if hdr.Version >= 13 {
				dst = append(dst, t.TopicID[:]...)
			} else if flexible {
				dst = kbin.AppendCompactString(dst, t.Topic)
			} else {
				dst = kbin.AppendString(dst, t.Topic)
			}
			parts := 1
			for k := i + 1; k < len(calls) && sameTopic(calls[k], call); k++ {
				parts++
			}
			dst = appendArrayLen(dst, parts, flexible)
		}
		dst = kbin.AppendInt32(dst, call.req.Topics[0].Partitions[0].Partition)
		size := len(call.records) + call.bodyLen
		if flexible {
			dst = kbin.AppendUvarint(dst, uint32(size+1))
		} else {
			dst = kbin.AppendInt32(dst, int32(size))
		}
		cuts = append(cuts, len(dst))
		n += size
		if flexible {
			dst = append(dst, 0) // the partition's tags
		}
	}
	if flexible {
		dst = append(dst, 0, 0) // the last topic's and the request's tags
	}
	binary.BigEndian.PutUint32(dst, uint32(len(dst)+n-4))
	from := 0
	for i, cut := range cuts {
		iov = append(iov, dst[from:cut], calls[i].records)
		from = cut
	}
	iov = append(iov, dst[from:])
	return dst, iov, cuts
}

// appendArrayLen appends an array's length, compact in a flexible version.
func appendArrayLen(dst []byte, n int, flexible bool) []byte {
	if flexible {
		return kbin.AppendUvarint(dst, uint32(n+1))
	}
	return kbin.AppendInt32(dst, int32(n))
}

// wait blocks for call's answer (every call sent is answered exactly once).
// t is the caller's timer, reused from call to call (a new one per batch
// would be three allocations).
func (c *produceConn) wait(call *produceCall, t *time.Timer) {
	select {
	case <-call.done:
		return
	default:
	}
	t.Reset(c.timeout)
	select {
	case <-call.done:
		t.Stop()
	case <-t.C:
		c.fail(fmt.Errorf("target broker %d: no produce answer within %s", c.broker, c.timeout))
		<-call.done
	}
}

// readLoop reads answers in order into their requests' calls, reusing
// one frame buffer and one decoded response.
func (c *produceConn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var frame []byte
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = c.ver
	flexible := resp.IsFlexible()
	// One reader for every answer's header tags: SkipTags takes an
	// interface, so a reader per answer would be an allocation.
	var tr kbin.Reader
	var err error
	for err == nil {
		if frame, err = readFrame(br, frame, 16<<20); err != nil {
			break
		}
		var head *produceCall
		select {
		case head = <-c.pending:
		default:
			err = errors.New("produce answer without a request")
		}
		if err != nil {
			break
		}
		if corr := int32(binary.BigEndian.Uint32(frame)); corr != head.corr {
			err = fmt.Errorf("produce answer %d for request %d", corr, head.corr)
			answerAll(head, err)
			break
		}
		body := frame[4:]
		if flexible {
			tr = kbin.Reader{Src: body}
			kmsg.SkipTags(&tr)
			body = tr.Src
		}
		// The decoded slices are reused from answer to answer.
		if derr := resp.UnsafeReadFrom(body); derr != nil {
			answerAll(head, fmt.Errorf("target broker %d: decoding produce answer: %w", c.broker, derr))
			continue
		}
		k := 0
		for call := head; call != nil; call = call.next {
			if pr := answerOf(resp, call, k); pr != nil {
				call.errCode, call.baseOffset = pr.ErrorCode, pr.BaseOffset
			} else {
				call.err = fmt.Errorf("target broker %d: produce answer has no partition %d of %s", c.broker, call.req.Topics[0].Partitions[0].Partition, call.topic().Topic)
			}
			k++
		}
		answerAll(head, nil)
	}
	c.fail(fmt.Errorf("target broker %d: %w: %w", c.broker, errConnClosed, err))
	// Answer every request still in pending (none can be added: dead is
	// closed under qmu, and the writer adds under qmu while alive).
	for {
		select {
		case head := <-c.pending:
			answerAll(head, c.deadErr)
		default:
			return
		}
	}
}

// answerAll answers a request's calls (with err, unless nil). Each call's
// next is read before its done: once answered, a call is its owner's to
// send again.
func answerAll(head *produceCall, err error) {
	for call := head; call != nil; {
		next := call.next
		if err != nil {
			call.err = err
		}
		call.done <- struct{}{}
		call = next
	}
}

// answerOf finds call's partition in resp (the k-th call of its
// request): the k-th partition of the answer if it is that one (the answer's order is the request's, a
// single partition's for sure), otherwise wherever it is (a broker may
// answer a request's topics and partitions in another order).
func answerOf(resp *kmsg.ProduceResponse, call *produceCall, k int) *kmsg.ProduceResponseTopicPartition {
	t, part := call.topic(), call.req.Topics[0].Partitions[0].Partition
	byID := resp.Version >= 13
	matches := func(rt *kmsg.ProduceResponseTopic) bool {
		if byID {
			return rt.TopicID == t.TopicID
		}
		return rt.Topic == t.Topic
	}
	if call.next == nil && k == 0 && len(resp.Topics) == 1 && len(resp.Topics[0].Partitions) == 1 {
		// A request of one partition: its answer's one partition is
		// its, named or not.
		return &resp.Topics[0].Partitions[0]
	}
	i := 0
	for ti := range resp.Topics {
		rt := &resp.Topics[ti]
		if k < i+len(rt.Partitions) {
			if pr := &rt.Partitions[k-i]; pr.Partition == part && matches(rt) {
				return pr
			}
			break
		}
		i += len(rt.Partitions)
	}
	for ti := range resp.Topics {
		rt := &resp.Topics[ti]
		if !matches(rt) {
			continue
		}
		for pi := range rt.Partitions {
			if rt.Partitions[pi].Partition == part {
				return &rt.Partitions[pi]
			}
		}
	}
	return nil
}

// produceConnFor returns a live produce connection to a target broker,
// dialing one if there is none or the last one died: the shared one, or
// with urgent the one of the urgent partitions (Urge).
func (r *Replicator) produceConnFor(ctx context.Context, broker int32, urgent bool) (*produceConn, error) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if err := ctx.Err(); err != nil {
		// Stopped (Stop cancels the run's context before it closes the
		// connections): a dial now would outlive closeProduceConns.
		return nil, err
	}
	conns := &r.pconns
	if urgent {
		conns = &r.uconns
	}
	if c := (*conns)[broker]; c != nil && !c.isDead() {
		return c, nil
	}
	// Dials are rare (one per broker, again after a failure): ask the
	// cluster for the address rather than keep a copy of the metadata.
	bm, err := r.tgtAdm.BrokerMetadata(ctx)
	if err != nil {
		return nil, fmt.Errorf("target metadata: %w", err)
	}
	addr := ""
	for _, b := range bm.Brokers {
		if b.NodeID == broker {
			addr = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
	}
	if addr == "" {
		return nil, fmt.Errorf("target broker %d is not in the target's metadata", broker)
	}
	timeout := r.opts.ProduceTimeout
	if timeout <= 0 {
		timeout = defaultProduceTimeout
	}
	c, err := dialProduceConn(ctx, r.tgt, broker, addr, timeout)
	if err != nil {
		return nil, err
	}
	c.reqs, c.batches = r.metrics.produceRequests, r.metrics.produceBatches // before its first send
	c.yieldFirst = !urgent
	if *conns == nil {
		*conns = map[int32]*produceConn{}
	}
	(*conns)[broker] = c
	return c, nil
}

// closeProduceConns closes every produce connection (Stop).
func (r *Replicator) closeProduceConns() {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	for _, conns := range []map[int32]*produceConn{r.pconns, r.uconns} {
		for b, c := range conns {
			c.fail(errConnClosed)
			delete(conns, b)
		}
	}
}

// produceErr turns a call's answer into an error, nil when it was appended.
func (c *produceConn) produceErr(call *produceCall) error {
	if call.err != nil {
		return call.err
	}
	return kerr.ErrorForCode(call.errCode)
}
