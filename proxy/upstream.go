package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/pipes"
)

// trafficClass separates upstream connections so that a long-poll Fetch or a
// JoinGroup waiting for a rebalance never delays a Produce (brokers serve one
// request per connection at a time, in order). Same split as kgo's
// cxnProduce/cxnFetch/cxnGroup/cxnNormal.
type trafficClass int8

const (
	classNormal trafficClass = iota
	classProduce
	classFetch
	classGroup
)

// framePool is where a class's upstream connections read answers into
// (nil: fresh buffers): Fetch answers into large buffers of their own,
// Produce answers into small ones. The handlers of both give them back
// once the client's answer is written (heldFrames).
func (c trafficClass) framePool() *sync.Pool {
	switch c {
	case classFetch:
		return &fetchFramePool
	case classProduce:
		return &answerFramePool
	}
	return nil
}

func classFor(key int16) trafficClass {
	switch kmsg.Key(key) {
	case kmsg.Produce:
		return classProduce
	case kmsg.Fetch:
		return classFetch
	case kmsg.JoinGroup, kmsg.SyncGroup:
		return classGroup
	}
	return classNormal
}

// errUpstreamClosed is the error every pending call gets when its upstream
// connection dies; handlers turn it into a retriable Kafka error code.
var errUpstreamClosed = errors.New("upstream connection closed")

// upstreamCall is one request sent to a broker, waiting for its response.
//
// done carries one token, sent by end: the call's owner (the handler that
// sent it) takes it once, in wait or taken, and notes that in ended, so a
// later wait returns at once. A call whose token was taken gets no other:
// its owner may reuse it for its next request (newCall), which saves the
// call and its channel on every forwarded request.
type upstreamCall struct {
	corr  int32
	key   int16
	ver   int16
	done  chan struct{} // capacity 1: end's token
	ended bool          // the owner took the token (owner only)
	flex  bool          // the answer's header has a tag section
	body  []byte        // response body after the response header
	err   error

	// frame is the pooled buffer body lives in (fetch and produce
	// connections), from framePool; see releaseFrame.
	frame     *[]byte
	framePool *sync.Pool

	// watch, when set, hears the moment the call is answered or fails,
	// from the connection's reader, before anyone waits on done: a
	// cutover's in-flight count drops when the broker answered, not when
	// the client's response is built (cutover_hold.go, flightRelease).
	watch answerWatcher
	// stream, set before the call is queued, asks readLoop to hand the
	// response body over unread (sr) instead of reading it into body:
	// the streaming Fetch relay (fetch_stream.go) reads it itself.
	stream bool
	sr     *upstreamStream
	// then, set before the call is queued, may take over the rest of the
	// request it is part of when the call ends (callHook): a small
	// Produce is then answered by the goroutine that read its answer.
	then callHook
}

// callHook is told that a call is ending, on the goroutine that ends it
// (the upstream reader, or whoever fails the connection): ending runs
// before the call's token is given, while the request is surely still the
// one the call was sent for, and says whether ended is to run after the
// token (the hook's owner handed the rest of its request over to whoever
// ends the call: conn.go, directProduce). Neither may block on the upstream
// connection (ended may write to the client).
type callHook interface {
	ending() (runEnded bool)
	ended()
}

// answerWatcher is told once that a call ended: err nil when the broker
// answered, the call's error when it failed (errNotSent: never written).
// It runs on the upstream connection's reader: it must not block.
type answerWatcher interface{ answered(err error) }

// end marks the call answered (or failed): the watcher hears it first,
// then done gets its token (the owner may reuse the call as soon as it has
// the token, so nothing of the call is read after). The watcher before the
// token: what it records (a batch settled, produce_unanswered.go; the
// cutover's in-flight count) is in place before the client can have the
// answer and send its next request. Called exactly once, by readLoop or
// fail.
func (c *upstreamCall) end() {
	if w := c.watch; w != nil {
		w.answered(c.err)
	}
	h := c.then
	run := h != nil && h.ending()
	c.done <- struct{}{}
	if run {
		h.ended() // c may be reused already: h is all that is used
	}
}

// newCall is a call ready to be sent: prev (the owner's previous call, may
// be nil) when it is over and holds no buffer, else a new one.
func newCall(prev *upstreamCall) *upstreamCall {
	if prev != nil && prev.ended && prev.frame == nil {
		done := prev.done
		*prev = upstreamCall{done: done}
		return prev
	}
	return &upstreamCall{done: make(chan struct{}, 1)}
}

// taken reports whether the call has ended, taking its token if it is
// there (owner only).
func (c *upstreamCall) taken() bool {
	if c.ended {
		return true
	}
	select {
	case <-c.done:
		c.ended = true
		return true
	default:
		return false
	}
}

// upstreamStream is a response body left in the upstream socket for its
// call to read: left bytes of it remain in r. The reader owns r until it
// calls end, once; readLoop reads nothing meanwhile (responses on a
// connection are consecutive).
type upstreamStream struct {
	uc   *upstreamConn
	r    *bufio.Reader
	left int
	done chan error // end's result, for readLoop (buffered: end never blocks)
}

// end gives the socket back to readLoop: err nil means exactly the frame
// was read, anything else fails the connection (its position in the byte
// stream is lost).
func (st *upstreamStream) end(err error) {
	if err == nil && st.left != 0 {
		err = fmt.Errorf("streamed response ended with %d bytes unread", st.left)
	}
	st.done <- err
}

// releaseFrame returns a call's pooled response buffer. Lifetime rule: only
// after every slice decoded from body has been written to the client or
// copied, and never twice (the caller owns the call).
func (c *upstreamCall) releaseFrame() {
	if c != nil && c.frame != nil {
		putFrame(c.framePool, c.frame)
		c.frame = nil
	}
}

// wait blocks until the response arrives, the connection dies, or timeout
// passes (which kills the connection: a broker that does not answer within
// the request's own timeout plus slack is not going to).
func (c *upstreamCall) wait(uc *upstreamConn, timeout time.Duration) ([]byte, error) {
	if c.ended {
		return c.body, c.err
	}
	select {
	case <-c.done: // answered already: no timer to arm
		c.ended = true
		return c.body, c.err
	default:
	}
	t := getTimer(timeout)
	defer putTimer(t)
	select {
	case <-c.done:
	case <-t.C:
		uc.fail(fmt.Errorf("no response to %s v%d within %s", kmsg.NameForKey(c.key), c.ver, timeout))
		<-c.done
	}
	c.ended = true
	return c.body, c.err
}

// upstreamConn is a pipelined connection to one real broker. Writes happen in
// the caller's order under wmu and the matching call is queued in the same
// critical section, so responses (which a broker returns in request order)
// pair with calls FIFO. One reader goroutine per connection, owned by the
// connection, ends when the socket closes.
type upstreamConn struct {
	cluster string
	broker  int32
	addr    string
	maxResp int32
	nc      net.Conn
	pool    *sync.Pool // read responses into its buffers (nil: fresh ones)

	// writeTimeout bounds each request write: a broker that stops
	// reading (or a network that blackholes) fails the connection, and
	// its calls, instead of blocking the writer and every caller behind
	// wmu.
	writeTimeout time.Duration

	wmu     sync.Mutex // guards the fields below, and ordering of writes with pending
	corr    int32
	wbuf    []byte
	hbuf    []byte
	iov     net.Buffers // the writev of one request (a field: a local escapes)
	pending chan *upstreamCall
	// pieces and ss are writeSpliced's: the bodies an encoding left out,
	// and the splicer into this socket (nil: not plain TCP).
	pieces []splicePiece
	ss     *pipes.Splicer
	ssInit bool

	// renewAt, when set, is when the connection should be replaced
	// before the broker's SASL session ends (dialer.go); set before the
	// connection is shared, read-only after.
	renewAt time.Time

	// stream is the one upstreamStream readLoop hands out at a time
	// (responses on a connection are consecutive); readLoop's.
	stream upstreamStream
	// retired (under wmu) closes the connection once no call is pending:
	// a replaced connection finishes what was sent on it (retire).
	retired bool
	// answering: an answer is arriving and readLoop is reading it (its
	// call may be off pending already), so the connection is not idle.
	// Atomic, not under wmu: a writer blocked on the socket holds wmu, and
	// readLoop must not wait for it.
	answering atomic.Bool

	deadOnce sync.Once
	dead     chan struct{}
	deadErr  error
}

// stale reports whether new requests should go to a fresh connection: the
// broker's session is near its end.
func (uc *upstreamConn) stale(now time.Time) bool {
	return !uc.renewAt.IsZero() && now.After(uc.renewAt)
}

// errRetired ends a replaced connection once its calls are answered.
var errRetired = errors.New("upstream connection replaced (new credentials or session renewal)")

// retire closes the connection once every pending call is answered,
// instead of failing them: it was replaced by a connection with a fresh
// session (a client's re-authentication under identity passthrough, or
// the broker's session lifetime), and the requests already sent on it are
// answered normally. A request still written to it meanwhile is answered
// too; the check repeats after each response (readLoop).
func (uc *upstreamConn) retire() {
	uc.wmu.Lock()
	uc.retired = true
	idle := len(uc.pending) == 0 && !uc.answering.Load()
	uc.wmu.Unlock()
	if idle {
		uc.fail(errRetired)
	}
}

// retiredIdle reports whether a retired connection has nothing pending.
func (uc *upstreamConn) retiredIdle() bool {
	uc.wmu.Lock()
	defer uc.wmu.Unlock()
	return uc.retired && len(uc.pending) == 0 && !uc.answering.Load()
}

// newUpstreamConn starts serving a dialed broker connection.
func newUpstreamConn(nc net.Conn, cluster string, broker int32, addr string, maxResp int32, pool *sync.Pool, writeTimeout time.Duration) *upstreamConn {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	uc := &upstreamConn{
		cluster:      cluster,
		broker:       broker,
		addr:         addr,
		maxResp:      maxResp,
		writeTimeout: writeTimeout,
		nc:           nc,
		pool:         pool,
		pending:      make(chan *upstreamCall, 1024),
		dead:         make(chan struct{}),
	}
	uc.stream.done = make(chan error, 1)
	go uc.readLoop()
	return uc
}

func (uc *upstreamConn) isDead() bool {
	select {
	case <-uc.dead:
		return true
	default:
		return false
	}
}

// fail closes the connection and fails every pending call.
func (uc *upstreamConn) fail(err error) {
	uc.deadOnce.Do(func() {
		uc.deadErr = err
		close(uc.dead)
		uc.nc.Close()
		// Fail queued calls. New sends see dead and fail fast; the ones in
		// the channel are drained here and by readLoop (whichever is first).
		uc.wmu.Lock()
		close(uc.pending)
		uc.wmu.Unlock()
		for c := range uc.pending {
			c.err = fmt.Errorf("%w: %v", errUpstreamClosed, err)
			c.end()
		}
	})
}

// send writes req and returns the call to wait on, or nil when the request
// expects no response (acks=0 Produce).
func (uc *upstreamConn) send(req kmsg.Request, clientID *string, expectResponse bool) (*upstreamCall, error) {
	return uc.write(req, clientID, nil, false, expectResponse, nil, nil, false, nil)
}

// sendBody is send for a request whose encoded body the caller already has
// (the client's own bytes): the header and the body go out in one writev.
func (uc *upstreamConn) sendBody(req kmsg.Request, clientID *string, body []byte, expectResponse bool) (*upstreamCall, error) {
	return uc.write(req, clientID, body, true, expectResponse, nil, nil, false, nil)
}

// write frames and writes one request: req encoded, or, when raw, a header
// for req followed by body as it is. The call is queued for readLoop in the
// same critical section as the write, so responses pair with calls FIFO.
// nextCallLocked numbers the next call on the connection and readies it
// for req (newCall), unless the connection is dead; uc.wmu is held.
func (uc *upstreamConn) nextCallLocked(req kmsg.Request, watch answerWatcher, then callHook, stream bool, prev *upstreamCall) (*upstreamCall, error) {
	if uc.isDead() {
		return nil, fmt.Errorf("%w: %v", errUpstreamClosed, uc.deadErr)
	}
	uc.corr++
	c := newCall(prev)
	c.corr, c.key, c.ver, c.watch, c.then, c.stream = uc.corr, req.Key(), req.GetVersion(), watch, then, stream
	c.flex = flexibleHeader(req)
	return c, nil
}

// watch (may be nil) hears the call end; it is not told of a request that
// was never queued (an error return, or no response expected); nor is
// then (upstreamCall.then, may be nil). stream asks for the response body
// unread (upstreamCall.stream). prev, when not nil, is the caller's
// previous call, reused when it is over (newCall).
func (uc *upstreamConn) write(req kmsg.Request, clientID *string, body []byte, raw, expectResponse bool, watch answerWatcher, then callHook, stream bool, prev *upstreamCall) (*upstreamCall, error) {
	uc.wmu.Lock()
	defer uc.wmu.Unlock()
	c, err := uc.nextCallLocked(req, watch, then, stream, prev)
	if err != nil {
		return nil, err
	}
	var one []byte // the whole frame, when it is one buffer
	if raw {
		hdr := appendRequestHeader(uc.hbuf[:0], req.Key(), req.GetVersion(), req.IsFlexible(), c.corr, clientID)
		setFrameSize(hdr, len(body))
		uc.hbuf = hdr
		uc.iov = append(uc.iov[:0], hdr, body)
	} else {
		uc.wbuf = appendRequest(uc.wbuf[:0], c.corr, clientID, req)
		one = uc.wbuf
	}
	if expectResponse {
		select {
		case uc.pending <- c:
		case <-uc.dead: // readLoop died while the queue was full
			return nil, fmt.Errorf("%w: %v", errUpstreamClosed, uc.deadErr)
		}
	}
	if uc.writeTimeout > 0 {
		_ = uc.nc.SetWriteDeadline(time.Now().Add(uc.writeTimeout))
	}
	if one != nil {
		_, err = uc.nc.Write(one)
	} else {
		iov := uc.iov
		_, err = uc.iov.WriteTo(uc.nc) // consumes uc.iov; iov keeps the array
		clear(iov)                     // the body is the client's frame buffer
		uc.iov = iov[:0]
	}
	if cap(uc.wbuf) > 8<<20 { // don't pin a huge buffer per connection
		uc.wbuf = nil
	}
	if err != nil {
		err = fmt.Errorf("writing %s to upstream %s broker %d: %w", kmsg.NameForKey(req.Key()), uc.cluster, uc.broker, err)
		go uc.fail(err) // fail takes wmu
		if !expectResponse {
			return nil, err
		}
		return c, nil // the call fails through fail()
	}
	if !expectResponse {
		return nil, nil
	}
	return c, nil
}

// writeSpliced is write for a Produce read by the spliced path
// (produce_splice.go): req is encoded with its large sections' batch
// headers in memory, and their bodies follow from sp's pipes, spliced into
// the socket in their places. On a socket that cannot take a splice (TLS)
// the bodies are read out of the pipes and written.
func (uc *upstreamConn) writeSpliced(req *kmsg.ProduceRequest, clientID *string, sp *spliceReq, expectResponse bool, watch answerWatcher, then callHook, prev *upstreamCall) (*upstreamCall, error) {
	uc.wmu.Lock()
	defer uc.wmu.Unlock()
	c, err := uc.nextCallLocked(req, watch, then, false, prev)
	if err != nil {
		return nil, err
	}
	buf := appendRequestHeader(uc.wbuf[:0], req.Key(), req.GetVersion(), req.IsFlexible(), c.corr, clientID)
	buf, uc.pieces = appendProduceBodyPieces(buf, req, sp, uc.pieces[:0])
	spliced := 0
	for _, pc := range uc.pieces {
		spliced += pc.n
	}
	setFrameSize(buf, spliced)
	uc.wbuf = buf
	if expectResponse {
		select {
		case uc.pending <- c:
		case <-uc.dead:
			return nil, fmt.Errorf("%w: %v", errUpstreamClosed, uc.deadErr)
		}
	}
	if uc.writeTimeout > 0 {
		_ = uc.nc.SetWriteDeadline(time.Now().Add(uc.writeTimeout))
	}
	err = uc.writePieces(buf)
	for _, pc := range uc.pieces {
		pc.sec.sent = true
	}
	clear(uc.pieces)
	if cap(uc.wbuf) > 8<<20 {
		uc.wbuf = nil
	}
	if err != nil {
		err = fmt.Errorf("writing %s to upstream %s broker %d: %w", kmsg.NameForKey(req.Key()), uc.cluster, uc.broker, err)
		go uc.fail(err)
		if !expectResponse {
			return nil, err
		}
		return c, nil
	}
	if !expectResponse {
		return nil, nil
	}
	return c, nil
}

// writePieces writes buf with uc.pieces' bodies in their places (wmu held).
func (uc *upstreamConn) writePieces(buf []byte) error {
	if !uc.ssInit {
		uc.ss, uc.ssInit = pipes.NewSplicer(uc.nc), true
	}
	w := 0
	for i, pc := range uc.pieces {
		if pc.at > w {
			var err error
			if uc.ss != nil {
				err = uc.ss.SendMore(buf[w:pc.at]) // the body follows
			} else {
				_, err = uc.nc.Write(buf[w:pc.at])
			}
			if err != nil {
				return err
			}
			w = pc.at
		}
		more := i < len(uc.pieces)-1 || w < len(buf)
		if err := uc.spliceOut(pc.sec, pc.n, more); err != nil {
			return err
		}
	}
	if w < len(buf) {
		_, err := uc.nc.Write(buf[w:])
		return err
	}
	return nil
}

// spliceOut sends n bytes of s's bodies from its pipes.
func (uc *upstreamConn) spliceOut(s *spliceSection, n int, more bool) error {
	for n > 0 {
		if s.ci >= len(s.chain) {
			return errors.New("spliced section: pipes hold fewer bytes than its batches")
		}
		p := s.chain[s.ci]
		if p.N == 0 {
			s.ci++
			continue
		}
		k := min(n, p.N)
		if uc.ss != nil {
			if err := uc.ss.Out(p, k, more || k < n); err != nil {
				return err
			}
		} else {
			// Not a plain TCP socket (TLS): through memory.
			bp := getBuf()
			b := (*bp)[:0]
			for k > 0 {
				m := min(k, 64<<10)
				if cap(b) < m {
					b = make([]byte, m)
				}
				b = b[:m]
				if err := p.ReadOut(b); err != nil {
					putBuf(bp)
					return err
				}
				if _, err := uc.nc.Write(b); err != nil {
					putBuf(bp)
					return err
				}
				n -= m
				k -= m
			}
			*bp = b
			putBuf(bp)
			continue
		}
		n -= k
	}
	return nil
}

func (uc *upstreamConn) readLoop() {
	br := bufio.NewReaderSize(uc.nc, 32<<10)
	for {
		n, err := readFrameSize(br, uc.maxResp)
		if err != nil {
			uc.fail(fmt.Errorf("reading from upstream %s broker %d: %w", uc.cluster, uc.broker, err))
			return
		}
		uc.answering.Store(true) // an answer is arriving: not idle (retire)
		c, ok := <-uc.pending
		if !ok {
			return
		}
		if c.stream {
			// The caller reads this body from the socket itself; the
			// next frame starts where it stops.
			st := &uc.stream
			st.uc, st.r, st.left = uc, br, n
			c.sr = st
			c.end()
			select {
			case err := <-st.done:
				if err != nil {
					uc.fail(fmt.Errorf("streaming from upstream %s broker %d: %w", uc.cluster, uc.broker, err))
					return
				}
			case <-uc.dead:
				return
			}
			uc.answering.Store(false)
			if uc.retiredIdle() {
				uc.fail(errRetired)
				return
			}
			continue
		}
		var pooled *[]byte
		var reuse []byte
		if uc.pool != nil {
			pooled = uc.pool.Get().(*[]byte)
			reuse = *pooled
		}
		frame, err := readFrameBody(br, n, reuse, nil)
		if pooled != nil && err == nil {
			*pooled = frame
		}
		if err != nil {
			c.err = fmt.Errorf("upstream %s broker %d: %w", uc.cluster, uc.broker, err)
			c.end()
			uc.fail(fmt.Errorf("reading from upstream %s broker %d: %w", uc.cluster, uc.broker, err))
			return
		}
		body, err := responseBodyFlex(frame, c.corr, c.flex)
		if err != nil {
			c.err = fmt.Errorf("upstream %s broker %d: %w", uc.cluster, uc.broker, err)
			c.end()
			uc.fail(c.err)
			return
		}
		c.body = body
		c.frame, c.framePool = pooled, uc.pool
		c.end()
		uc.answering.Store(false)
		if uc.retiredIdle() {
			uc.fail(errRetired)
			return
		}
	}
}

// responseBody checks a response frame against the call it answers (the
// correlation id; responses arrive in request order) and returns the body
// after the response header. Nothing here panics on any input
// (FuzzUpstreamResponse).
func responseBody(frame []byte, corr int32, key, ver int16) ([]byte, error) {
	resp := kmsg.ResponseForKey(key)
	flex := false
	if resp != nil {
		resp.SetVersion(ver)
		flex = flexibleHeader(resp)
	}
	body, err := responseBodyFlex(frame, corr, flex)
	if err == nil && resp == nil {
		return nil, fmt.Errorf("response for unknown api key %d", key)
	}
	return body, err
}

// flexibleHeader reports whether m's response header has a tag section:
// flexible versions have one, except ApiVersions' (KIP-511).
func flexibleHeader(m interface {
	IsFlexible() bool
	Key() int16
}) bool {
	return m.IsFlexible() && m.Key() != kmsg.ApiVersions.Int16()
}

// responseBodyFlex is responseBody for a call that knows whether its
// answer's header is flexible (upstreamCall.flex): no response value is
// made to ask.
func responseBodyFlex(frame []byte, corr int32, flex bool) ([]byte, error) {
	if len(frame) < 4 {
		return nil, fmt.Errorf("response frame of %d bytes has no correlation id", len(frame))
	}
	if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
		return nil, fmt.Errorf("answered correlation id %d, expected %d", got, corr)
	}
	body := frame[4:]
	if flex {
		if len(body) < 1 {
			return nil, errors.New("truncated response header")
		}
		body = skipTagSection(body)
	}
	return body, nil
}

// skipTagSection skips a response-header tagged-field section (almost always
// the single byte 0).
func skipTagSection(b []byte) []byte {
	if b[0] == 0 {
		return b[1:]
	}
	r := kbinReader(b)
	kmsg.SkipTags(r)
	return r.Src
}

// timerPool holds stopped timers for upstreamCall.wait, one per call
// otherwise (two allocations per forwarded request). Since Go 1.23 a
// stopped timer's channel holds no stale tick, so a pooled one is as good
// as new after Reset.
var timerPool sync.Pool

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timerPool.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

func putTimer(t *time.Timer) {
	t.Stop()
	timerPool.Put(t)
}

func (uc *upstreamConn) close() { uc.fail(errors.New("downstream connection closed")) }
