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
	"strconv"
	"sync"
	"time"

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

// errConnClosed is what the calls of a closed connection get.
var errConnClosed = errors.New("produce connection closed")

// produceCall is one produce request waiting for its answer. Calls are
// owned by their partition's pipeline and reused (zero allocations per
// batch); done is buffered 1 and receives exactly one value per send.
type produceCall struct {
	corr int32
	done chan struct{}
	// Filled by the reader before done: the single partition's answer.
	errCode    int16
	baseOffset int64
	err        error
}

// produceConn is a pipelined connection to one target broker.
type produceConn struct {
	broker  int32
	nc      net.Conn
	ver     int16         // the Produce version both sides support
	timeout time.Duration // for one produce answer (Options.ProduceTimeout)

	wmu     sync.Mutex // orders writes with pending; guards corr, wbuf and iov
	corr    int32
	wbuf    []byte
	iov     [3][]byte   // a request's pieces: encoding, records, trailer
	bufs    net.Buffers // iov for one writev (a field: a local would escape)
	fmtr    *kmsg.RequestFormatter
	pending chan *produceCall
	// sp splices spliced batch bodies into the socket (nil over TLS).
	sp *pipes.Splicer

	deadOnce sync.Once
	dead     chan struct{}
	deadErr  error
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
	c := &produceConn{broker: broker, nc: nc, timeout: timeout, fmtr: kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-replicator")),
		pending: make(chan *produceCall, maxPendingPerConn), dead: make(chan struct{})}
	// v3 is the first with record batches (magic 2).
	if c.ver = version(av, kmsg.Produce, kmsg.NewPtrProduceRequest().MaxVersion()); c.ver < 3 {
		nc.Close()
		return nil, fmt.Errorf("target broker %d at %s supports no Produce version with record batches", broker, addr)
	}
	c.sp = pipes.NewSplicer(nc)
	go c.readLoop()
	return c, nil
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
	c.deadOnce.Do(func() {
		c.wmu.Lock()
		c.deadErr = err
		close(c.dead)
		c.wmu.Unlock()
		c.nc.Close()
	})
}

// send writes req, whose single partition carries records, as the next
// request on the connection; call gets its answer. Calls are answered in
// the order of send.
//
// The records are not copied into the request's encoding: kmsg encodes
// the request around a null record set, which is swapped for the records'
// length, and the records follow from where they lie (one writev), so the
// batch's bytes are touched only by the kernel's copy. With body (a
// spliced batch: records is its head), the body follows records from its
// pipes with splice(2); the caller gives the pipes back after.
func (c *produceConn) send(req *kmsg.ProduceRequest, records []byte, body []*pipes.Pipe, call *produceCall) error {
	req.Version = c.ver
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isDead() {
		return c.deadErr
	}
	bodyLen := 0
	for _, p := range body {
		bodyLen += p.N
	}
	if bodyLen > 0 && c.sp == nil {
		return errors.New("spliced batch for a connection that cannot splice") // the pipeline reads such a batch first
	}
	c.corr++
	call.corr, call.err, call.errCode, call.baseOffset = c.corr, nil, 0, -1
	c.wbuf = appendProduceAround(c.wbuf[:0], c.fmtr, req, c.corr, &c.iov, records, bodyLen)
	select {
	case c.pending <- call:
	default:
		err := errors.New("too many produce requests in flight on one connection")
		go c.fail(err)
		return err
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	var err error
	if bodyLen > 0 {
		err = c.writeSpliced(body)
	} else {
		c.bufs = c.iov[:]
		_, err = c.bufs.WriteTo(c.nc)
	}
	if err != nil {
		// The call is queued: the reader answers it with the error. A
		// request cut short leaves the connection unusable anyway.
		go c.fail(fmt.Errorf("target broker %d: writing produce: %w", c.broker, err))
	}
	return nil
}

// writeSpliced writes the request in c.iov whose records' body is in
// pipes: the encoding and the batch's head (copied together: a few
// hundred bytes) with MSG_MORE, so they leave with the body's first
// segments, then the body from its pipes, then the trailer. wmu is held.
func (c *produceConn) writeSpliced(body []*pipes.Pipe) error {
	c.wbuf = append(c.iov[0], c.iov[1]...) // iov[0] is wbuf's start
	if err := c.sp.SendMore(c.wbuf); err != nil {
		return err
	}
	trailer := c.iov[2]
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

// flexibleTrailer is what follows a flexible Produce request's record set
// when nothing carries tagged fields: the partition's, the topic's and the
// request's empty tag sections.
var flexibleTrailer = []byte{0, 0, 0}

// appendProduceAround encodes req (version set, one topic with one
// partition) as request corr into dst, with records and then spliced
// more bytes (written apart: a spliced batch's body) as that partition's
// record set, and fills iov with the request's pieces in order: the
// encoding up to the record set's length, records, and what follows them.
// The record set is the last field of the request except the tag sections
// (TestProduceAroundMatchesKmsg checks this against kmsg for every
// version), so kmsg encodes everything but the records' bytes.
func appendProduceAround(dst []byte, fmtr *kmsg.RequestFormatter, req *kmsg.ProduceRequest, corr int32, iov *[3][]byte, records []byte, spliced int) []byte {
	rp := &req.Topics[0].Partitions[0]
	rp.Records = nil
	dst = fmtr.AppendRequest(dst, req, corr)
	var trailer []byte
	nullLen := 4 // nullable bytes: int32 -1
	if req.IsFlexible() {
		trailer, nullLen = flexibleTrailer, 1 // compact nullable bytes: uvarint 0
	}
	dst = dst[:len(dst)-len(trailer)-nullLen]
	n := len(records) + spliced
	if req.IsFlexible() {
		dst = kbin.AppendUvarint(dst, uint32(n+1))
	} else {
		dst = kbin.AppendInt32(dst, int32(n))
	}
	binary.BigEndian.PutUint32(dst, uint32(len(dst)+n+len(trailer)-4))
	iov[0], iov[1], iov[2] = dst, records, trailer
	return dst
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

// readLoop reads answers in order into their calls, reusing one frame
// buffer and one decoded response.
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
		var call *produceCall
		select {
		case call = <-c.pending:
		default:
			err = errors.New("produce answer without a request")
		}
		if err != nil {
			break
		}
		if corr := int32(binary.BigEndian.Uint32(frame)); corr != call.corr {
			err = fmt.Errorf("produce answer %d for request %d", corr, call.corr)
			call.err = err
			call.done <- struct{}{}
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
			call.err = fmt.Errorf("target broker %d: decoding produce answer: %w", c.broker, derr)
		} else if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			call.err = fmt.Errorf("target broker %d: produce answer has %d topics", c.broker, len(resp.Topics))
		} else {
			pr := &resp.Topics[0].Partitions[0]
			call.errCode, call.baseOffset = pr.ErrorCode, pr.BaseOffset
		}
		call.done <- struct{}{}
	}
	c.fail(fmt.Errorf("target broker %d: %w: %w", c.broker, errConnClosed, err))
	// Answer every call still queued (none can be added: dead is closed
	// under wmu before send checks it).
	for {
		select {
		case call := <-c.pending:
			call.err = c.deadErr
			call.done <- struct{}{}
		default:
			return
		}
	}
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
