package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/lowat"
	"github.com/kproxy/kproxy/secure"
)

// clientConn is one downstream client connection. It owns two goroutines:
// read (decode and dispatch, in request order) and write (responses, in
// request order). Each request's response is produced on a goroutine of its
// own; the write goroutine waits for the slots in the order they were queued,
// so pipelined requests may complete out of order upstream but always leave
// in order (Java's InFlightRequests rejects anything else). A Produce sent
// upstream whole, behind nothing but others like it, skips the write loop:
// the upstream connection's reader answers it (directProduce).
type clientConn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	log hclog.Logger
	lst *listener // the listener it came in on; nil in tests

	// sasl is the connection's authentication state (sasl_server.go).
	sasl saslState

	slots    chan *slot    // responses to write, in request order
	done     chan struct{} // closed (finish) when the connection is finished
	doneOnce sync.Once

	// outstanding counts requests read whose response is not written yet
	// (or, for acks=0 produce, whose handler has not finished): a
	// connection waiting on them is not idle.
	outstanding atomic.Int64

	// noResponse holds a token per acks=0 produce whose handler has not
	// finished (its parts may wait in a cutover hold): with the slots
	// channel, it keeps them within MaxInflight too.
	noResponse chan struct{}

	// fetchTurn holds a token while a Fetch's response is not written:
	// the next Fetch is not read until then. Clients keep one Fetch in
	// flight per broker; a client that pipelines many and never reads
	// would otherwise pin MaxBytes per Fetch.
	fetchTurn chan struct{}

	upMu sync.Mutex // guards the fields below
	ups  map[upKey]*upEntry
	// upPrincipal and upCred are who the connection's passthrough
	// upstream connections authenticate as (passthrough.go); upGen
	// counts their changes (a re-authentication), so connections made
	// with an older credential are replaced.
	upPrincipal string
	upCred      *secure.ClientCredential
	upGen       uint64

	rec *clientRecord // this connection in the client inventory

	// lastClientID is the client id of the previous request (read loop
	// only): the next request's is the same string when it has the same
	// bytes (parseRequestHeader).
	lastClientID *string
	// fetch is what the connection's Fetch requests reuse (01_fetch.go);
	// its owner is whoever holds fetchTurn.
	fetch *fetchScratch
	// spareFrame gives a Fetch's request frame back to the read loop once
	// the Fetch is answered (finishSlot): a Fetch keeps its frame until
	// then, so the read loop cannot reuse it at once as it does a
	// Produce's.
	spareFrame chan []byte

	// ip is the peer's IP, software what ApiVersions v3+ named (name and
	// version), and member the groups this connection carried membership
	// for: together they tie a consumer's fetches to its group
	// (group_membership.go).
	ip       string
	software atomic.Pointer[string]
	member   connGroups

	// Produce requests answered directly (directProduce), numbered from
	// 1: directIssued of them handed over (written by the read loop only),
	// directWritten answered (their bytes in the socket); directKick tells
	// the write loop that directWritten moved (slot.afterDirect). Those in
	// flight form a chain on one upstream connection, directConn (read
	// loop) and directUp (the timer's). directTimer watches the chain's
	// progress (directExpired): directMark is directWritten when it was
	// armed, directWait its period. directW is the answerer's writer:
	// answers of a chain are written one after the other, by the one
	// goroutine that reads that connection.
	directIssued  atomic.Int64
	directWritten atomic.Int64
	directKick    chan struct{}
	directConn    *upstreamConn
	directUp      atomic.Pointer[upstreamConn]
	directTimer   *time.Timer
	directMark    atomic.Int64
	directWait    atomic.Int64
	directStart   atomic.Int64 // when the current chain began (unix ns)
	directW       *respWriter
}

type upKey struct {
	cluster string
	broker  UpstreamNodeID
	class   trafficClass
}

// upEntry is a connection's upstream connection for one key, or the dial
// that is making it (dialing is closed when the dial ends).
type upEntry struct {
	conn    *upstreamConn
	dialing chan struct{}
	gen     uint64 // upGen when dialed (passthrough clusters)
}

// slot is one response position in the connection's output order.
type slot struct {
	corr    int32
	key     int16
	version int16
	start   time.Time
	ready   chan struct{}
	resp    kmsg.Response
	// run, when set, is the rest of the handler, which the write loop runs
	// at the slot's turn instead of a goroutine of its own (await clears
	// it and runs it; ready is closed then as for any slot). Set before
	// the slot is queued and never for a slot with a goroutine.
	run *handlerRun

	respBytes int64 // charged to the buffer budget until written
	fetchTurn bool  // holds clientConn.fetchTurn until written
	// afterDirect: the direct Produce answers up to this number are
	// ahead of this slot (directProduce): the write loop waits until
	// directWritten reaches it.
	afterDirect int64
	// closeAfter closes the connection once this response is written (a
	// failed SASL authentication, as a broker does).
	closeAfter bool
	// frame is the request frame a Fetch holds until it is answered
	// (given back to the read loop by finishSlot).
	frame []byte

	// rc and h are the request's context and handler rest, in the slot
	// to save two allocations per request (they live as long as it).
	rc reqCtx
	h  handlerRun
	// produce is the Produce scratch this slot is part of: finishSlot
	// gives it back to its pool, as its last use of the slot.
	produce *produceScratch
}

// closedReady is the ready channel of a slot whose handler's rest the
// write loop runs itself (slot.run): only its owner looks at it, after
// running the rest, so it can be closed from the start and shared.
var closedReady = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newClientConn(s *Server, nc net.Conn, id uint64) *clientConn {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &clientConn{
		srv:        s,
		id:         id,
		nc:         nc,
		log:        s.log.With("conn", id, "remote", nc.RemoteAddr().String()),
		slots:      make(chan *slot, s.opts.MaxInflight),
		done:       make(chan struct{}),
		fetchTurn:  make(chan struct{}, 1),
		noResponse: make(chan struct{}, s.opts.MaxInflight),
		spareFrame: make(chan []byte, 1),
		directKick: make(chan struct{}, 1),
		ups:        map[upKey]*upEntry{},
		rec:        s.inventory.add(id, nc.RemoteAddr().String()),
		ip:         remoteIP(nc),
	}
}

// errIdle ends a connection that sent nothing for Limits.IdleTimeout.
var errIdle = errors.New("client connection idle")

func (cc *clientConn) serve() {
	cc.srv.metrics.connections.Inc()
	defer cc.srv.metrics.connections.Dec()
	if tc, ok := cc.nc.(*tls.Conn); ok {
		principal, err := cc.lst.handshakeTLS(tc, cc.srv.opts.Limits.ReadTimeout)
		if err != nil {
			// A plaintext client on a TLS port ends here, before any
			// request is read and with nothing opened upstream.
			cc.srv.metrics.closed.WithLabelValues("tls_handshake").Inc()
			cc.log.Warn("closing client connection: TLS handshake failed", "listener", cc.lst.opts.Name, "error", err)
			cc.nc.Close()
			cc.srv.inventory.remove(cc.id)
			return
		}
		cc.sasl.certPrincipal = principal
	}
	if cc.saslListener() == nil {
		// No SASL: the principal is the certificate's (or ANONYMOUS)
		// for good, and a passthrough cluster needs a credential
		// mapped to it.
		p := cc.Principal()
		if err := cc.passthroughCheck(p, ""); err != nil {
			cc.srv.metrics.closed.WithLabelValues("passthrough").Inc()
			cc.log.Warn("closing client connection: identity cannot be passed through", "principal", p, "reason", err.Error())
			cc.nc.Close()
			cc.srv.inventory.remove(cc.id)
			return
		}
		cc.setUpstreamIdentity(p, nil)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cc.writeLoop()
	}()
	err := cc.readLoop()
	switch {
	case errors.Is(err, errIdle):
		cc.srv.metrics.closed.WithLabelValues("idle").Inc()
		cc.log.Debug("closing idle client connection")
	case isTimeout(err):
		cc.srv.metrics.closed.WithLabelValues("read_timeout").Inc()
		cc.log.Warn("closing client connection: a frame did not arrive within the read timeout", "error", err)
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		cc.log.Warn("closing client connection", "error", err)
	default:
		if cc.log.IsDebug() {
			cc.log.Debug("client connection closed")
		}
	}
	cc.finish()
	cc.nc.Close()
	cc.srv.inventory.remove(cc.id)
	cc.closeMemberships()
	// Upstream connections close before the write loop is waited for: it
	// may be running a handler's rest (slot.run) that waits for an
	// upstream answer, which ends only when that connection does.
	cc.upMu.Lock()
	for _, e := range cc.ups {
		if e.conn != nil {
			e.conn.close()
		}
	}
	cc.upMu.Unlock()
	wg.Wait()
	// Responses the write loop never took: wait for their handlers (the
	// upstream connections are closed, so they end quickly) and give back
	// what they hold.
	for {
		select {
		case s := <-cc.slots:
			cc.await(s)
			cc.finishSlot(s)
		default:
			return
		}
	}
}

// finish marks the connection finished: the read loop's waits (slots,
// tokens, the budget) and the write loop end. Either loop may call it first:
// a write loop that fails must not leave the read loop waiting for a slot
// it will never take.
func (cc *clientConn) finish() { cc.doneOnce.Do(func() { close(cc.done) }) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readLoop reads and dispatches requests until the connection fails or a
// frame is malformed. A malformed frame ends only this connection.
//
// Memory: a frame body is read in chunks, each charged to the server's
// buffer budget before it is read (reading waits while the budget is
// spent), so what a connection holds is what its client actually sent.
// Time: a connection with nothing outstanding may stay silent for
// IdleTimeout; once a frame has started, each chunk must arrive within
// ReadTimeout.
func (cc *clientConn) readLoop() error {
	br := bufio.NewReaderSize(cc.nc, 8<<10)
	lw := newLowatReader(cc.nc) // nil over TLS
	fill := func(b []byte) (int, error) { return fillBody(br, lw, b) }
	most := frameChunk
	if lw != nil {
		most = lowatChunk
	}
	lim := cc.srv.opts.Limits
	budget := cc.srv.budget
	var reuse []byte  // a frame buffer no request references any more
	var charged int64 // what the frame being read holds of the budget
	acquire := func(k int) error {
		if err := budget.acquire(int64(k), cc.done); err != nil {
			return err
		}
		charged += int64(k)
		// The deadline runs from when kproxy is ready for the chunk:
		// waiting for the budget is not the client's fault.
		return cc.nc.SetReadDeadline(time.Now().Add(lim.ReadTimeout))
	}
	sp := newSpliceReq(cc, br, lw, func(k int) error { return acquire(k) }) // nil over TLS
	for {
		if err := cc.awaitRequest(br); err != nil {
			return err
		}
		if reuse == nil {
			select {
			case reuse = <-cc.spareFrame: // an answered Fetch's
			default:
			}
		}
		_ = cc.nc.SetReadDeadline(time.Now().Add(lim.ReadTimeout))
		least := int32(8) // a request header
		if cc.sasl.raw {
			least = 0 // a bare SASL token may be empty
		}
		n, err := readSizeAtLeast(br, cc.srv.opts.MaxFrameBytes, least)
		if err != nil {
			if errors.Is(err, errFrameTooLarge) {
				cc.srv.metrics.badFrames.Inc()
			}
			return err
		}
		charged = 0
		var body []byte
		if !cc.sasl.raw && sp.wants(n) {
			// A large Produce: read incrementally, its large batch
			// bodies into pipes (produce_splice.go).
			var spliced bool
			body, spliced, charged, err = sp.read(n, reuse)
			reuse = nil
			if err == nil && spliced {
				cc.srv.metrics.bytesIn.Add(float64(n + 4))
				_, err = cc.dispatch(nil, charged, sp)
				sp.finish()
				reuse = sp.memory()
				if err != nil {
					if !errors.Is(err, errSASLState) {
						cc.srv.metrics.badFrames.Inc()
					}
					return err
				}
				if err = lw.Release(); err != nil {
					return err
				}
				continue
			}
		} else {
			body, err = readBodyChunks(n, reuse, acquire, fill, most)
			reuse = nil
		}
		if err == nil && lw != nil {
			err = lw.Release()
		}
		if err != nil {
			budget.release(charged)
			return err
		}
		cc.srv.metrics.bytesIn.Add(float64(len(body) + 4))
		if cc.sasl.raw {
			// After a v0 SaslHandshake the frame is a bare SASL token.
			err := cc.rawSASLStep(body)
			budget.release(charged)
			if err != nil {
				return err
			}
			continue
		}
		released, err := cc.dispatch(body, charged, nil)
		if err != nil {
			if !errors.Is(err, errSASLState) { // counted as closed{reason}
				cc.srv.metrics.badFrames.Inc()
			}
			return err
		}
		if released && cap(body) <= 8<<20 {
			reuse = body
		} else if reuse != nil {
			// reuse went into body, which the request keeps; a spare
			// may be waiting.
			reuse = nil
		}
	}
}

// fillBody fills b, a piece of a frame body: first from what br holds,
// then, for a large rest on a plain TCP socket, straight from the socket
// with a low-water mark (lw, sockread.go), else through br.
func fillBody(br *bufio.Reader, lw *lowat.Reader, b []byte) (int, error) {
	got := 0
	if m := br.Buffered(); m > 0 {
		got, _ = br.Read(b[:min(m, len(b))]) // no syscall: buffered
	}
	if got == len(b) {
		return got, nil
	}
	if lw == nil || len(b)-got < lowatMin {
		// A mark left from an earlier piece of this frame may be more
		// than is left of it: the poller would never say readable.
		if lw != nil {
			if err := lw.Release(); err != nil {
				return got, err
			}
		}
		m, err := io.ReadFull(br, b[got:])
		return got + m, err
	}
	m, err := lw.ReadFull(b[got:])
	return got + m, err
}

// awaitRequest waits for the first byte of the next frame. Silence is fine
// while requests are outstanding (a JoinGroup may wait minutes for a
// rebalance); otherwise IdleTimeout of it ends the connection.
func (cc *clientConn) awaitRequest(br *bufio.Reader) error {
	for {
		if br.Buffered() > 0 {
			return nil
		}
		_ = cc.nc.SetReadDeadline(time.Now().Add(cc.srv.opts.Limits.IdleTimeout))
		_, err := br.Peek(1)
		if err == nil {
			return nil
		}
		if !isTimeout(err) {
			return err
		}
		if cc.outstanding.Load() == 0 {
			return errIdle
		}
	}
}

// dispatch decodes and starts one request. released says the request no
// longer references body once dispatch returns (Produce: its bytes were
// written upstream during the synchronous part), so the buffer can be
// reused for the next frame. charged is what the frame holds of the buffer
// budget; dispatch gives it back once the request's handler is done.
//
// sp, when not nil, is a Produce read by the spliced path (frame is nil):
// its header and fields are parsed already, its large sections' bodies in
// pipes (produce_splice.go). The caller calls sp.finish once it returns.
func (cc *clientConn) dispatch(frame []byte, charged int64, sp *spliceReq) (released bool, err error) {
	budget := cc.srv.budget
	adv := cc.srv.advertised()
	// A Fetch takes the connection's fetch turn first: it is decoded
	// into, and answered with, the connection's Fetch scratch, which the
	// previous Fetch uses until its answer is written (01_fetch.go).
	var into kmsg.Request
	var sc *fetchScratch
	var ps *produceScratch // a Produce's, from producePool
	turn := false          // held here, not yet passed to the request's slot
	key := int16(-1)
	if len(frame) >= 2 {
		key = int16(binary.BigEndian.Uint16(frame))
	} else if sp != nil {
		key = sp.h.key
	}
	switch key {
	case kmsg.Produce.Int16():
		// Decoded without copying strings (ownProduceStrings below).
		ps = producePool.Get().(*produceScratch)
		ps.pinned = false
		ps.dstate.Store(directNone) // its last use is over (finishSlot)
		into = ps.decodeInto()
	case kmsg.Fetch.Int16():
		select {
		case cc.fetchTurn <- struct{}{}:
			turn = true
		case <-cc.done:
			budget.release(charged)
			return false, net.ErrClosed
		}
		defer func() {
			if turn {
				<-cc.fetchTurn
			}
		}()
		sc = cc.fetchScratch()
		into = sc.decodeInto()
	}
	var h requestHeader
	var req kmsg.Request
	var body []byte
	if sp != nil {
		h = sp.header(cc.lastClientID)
		sp.fill(into.(*kmsg.ProduceRequest))
		req = into
	} else {
		h, req, body, err = parseRequest(frame, adv, cc.lastClientID, into, ps != nil)
	}
	cc.lastClientID = h.clientID
	if ps != nil && err == nil {
		ownProduceStrings(req.(*kmsg.ProduceRequest))
	}
	if errors.Is(err, errApiVersionsTooNew) {
		budget.release(charged)
		// Answer v0 with UNSUPPORTED_VERSION and our range, so the client
		// retries lower (KIP-511; NetworkClient.handleApiVersionsResponse).
		cc.enqueueReady(h, apiVersionsUnsupported(adv))
		return true, nil
	}
	if err != nil {
		budget.release(charged)
		return false, err
	}
	if err := cc.admit(h.key); err != nil {
		budget.release(charged)
		return false, err
	}
	if resp := cc.policyDenial(req); resp != nil {
		budget.release(charged)
		cc.srv.metrics.requests[h.key].Inc()
		if p, ok := req.(*kmsg.ProduceRequest); ok && p.Acks == 0 {
			return false, nil // acks=0: the client reads no answer
		}
		cc.enqueueReady(h, resp)
		return false, nil
	}
	// Topic rules for the other topic APIs: refused topics are taken
	// out of the request here and answered after it (policy_topics.go).
	narrowed, full := cc.topicNarrow(req)
	if full != nil {
		budget.release(charged)
		cc.srv.metrics.requests[h.key].Inc()
		cc.enqueueReady(h, full)
		return false, nil
	}
	spec := registry[h.key]
	clientID := ""
	if h.clientID != nil {
		clientID = *h.clientID
	}
	cc.srv.metrics.requests[h.key].Inc()
	cc.rec.observe(cc.srv, clientID, req)
	if cc.log.IsTrace() {
		cc.log.Trace("request", "api", kmsg.NameForKey(h.key), "version", h.version, "corr", h.corr, "client_id", clientID)
	}

	noResponse := false
	if p, ok := req.(*kmsg.ProduceRequest); ok && p.Acks == 0 {
		noResponse = true // acks=0: the client reads no response, ever
	}
	// The policy and principal a Metadata answer is filtered with, taken
	// here: the read goroutine owns the SASL state.
	describe := cc.metadataFilter(req)
	// The data path (Produce, Fetch) runs the handler's rest on the write
	// loop (slot.run): its slot is queued once run is set, after the
	// synchronous part, so the write loop never sees it half made.
	inline := !noResponse && describe == nil && (h.key == kmsg.Produce.Int16() || h.key == kmsg.Fetch.Int16())
	cc.outstanding.Add(1)
	var s *slot
	if noResponse {
		select {
		case cc.noResponse <- struct{}{}:
		case <-cc.done:
			cc.outstanding.Add(-1)
			budget.release(charged)
			return false, net.ErrClosed
		}
	} else {
		if sc != nil {
			s = &sc.slot // the previous Fetch's slot is finished (the turn)
			*s = slot{corr: h.corr, key: h.key, version: h.version, start: time.Now()}
		} else if ps != nil {
			s = &ps.slot
			*s = slot{corr: h.corr, key: h.key, version: h.version, start: time.Now(), produce: ps}
		} else {
			s = &slot{corr: h.corr, key: h.key, version: h.version, start: time.Now()}
		}
		if inline {
			s.ready = closedReady
		} else {
			s.ready = make(chan struct{})
		}
		if turn {
			if cap(frame) <= 8<<20 {
				s.frame = frame
			}
			s.fetchTurn, turn = true, false
		}
		if !inline && !cc.push(s) {
			if s.fetchTurn {
				<-cc.fetchTurn
			}
			cc.outstanding.Add(-1)
			budget.release(charged)
			return false, net.ErrClosed
		}
	}
	var rc *reqCtx
	if s != nil {
		rc = &s.rc
	} else {
		rc = new(reqCtx)
	}
	*rc = reqCtx{cc: cc, clientID: h.clientID, client: clientID, body: body, filtered: narrowed != nil || describe != nil, metadataFiltered: describe != nil, produce: ps, splice: sp}
	wait := cc.runHandler(func() func() kmsg.Response { return spec.handle(rc, req) })
	var h2 *handlerRun
	if s != nil {
		s.closeAfter = rc.closeAfter // before the goroutine that readies s
		h2 = &s.h
	} else {
		h2 = new(handlerRun)
	}
	*h2 = handlerRun{wait: wait, charged: charged, key: h.key}
	if describe != nil {
		h2.filter = func(resp kmsg.Response) {
			if md, ok := resp.(*kmsg.MetadataResponse); ok {
				describe.filterMetadata(req.(*kmsg.MetadataRequest), md)
			}
		}
	}
	if narrowed != nil {
		// Topics the policy refused were taken out of the request
		// (topicNarrow); their answers go back in after the handler's.
		prev := h2.filter
		h2.filter = func(resp kmsg.Response) {
			if prev != nil {
				prev(resp)
			}
			narrowed.restore(resp)
		}
	}
	if inline {
		// The data path: the write loop runs the rest of the handler
		// itself when the slot's turn comes (writeLoop), one goroutine
		// start and one wake-up fewer per request. Produce has sent its
		// sub-requests already; Fetch sends in its rest, but a
		// connection has one Fetch in flight (fetchTurn), so its turn is
		// when it would have been written anyway. A Produce behind nothing
		// but direct ones skips the write loop too (directProduce), a
		// spliced one included: its rest reads nothing of the splice
		// reader the read loop goes on with, and a large request's turn
		// on the write loop cost ~12 context switches (bench/RESULTS.md).
		s.run = h2
		if ps != nil && ps.direct && h2.filter == nil && !s.closeAfter && cc.directOK(ps.pend[0].u) {
			cc.directProduce(s, ps)
			return true, nil
		}
		if !cc.push(s) {
			// Nobody will write it: finish it aside (its upstream
			// calls end when serve closes those connections).
			go func() { cc.complete(s, h2); cc.finishSlot(s) }()
			return false, net.ErrClosed
		}
		return h.key == kmsg.Produce.Int16(), nil
	}
	go cc.complete(s, h2)
	_, isProduce := req.(*kmsg.ProduceRequest)
	return isProduce, nil
}

// handlerRun is the asynchronous rest of a handler and what the request
// holds until it ends.
type handlerRun struct {
	wait    func() kmsg.Response // nil: no rest
	charged int64                // of the buffer budget, by the request frame
	key     int16
	filter  func(kmsg.Response) // the Metadata policy filter, or nil
}

// complete runs the rest of a handler and readies its slot (nil: acks=0
// produce, no response): the request's budget is given back and the
// response's charged until written. It runs on a goroutine of its own, or
// on the write loop for the data path (slot.run).
func (cc *clientConn) complete(s *slot, h *handlerRun) {
	var resp kmsg.Response
	defer func() {
		if p := recover(); p != nil {
			cc.log.Error("handler panicked; closing this connection", "api", kmsg.NameForKey(h.key), "panic", p, "stack", string(debug.Stack()))
			cc.nc.Close()
			resp = nil
		}
		cc.srv.budget.release(h.charged)
		if s == nil {
			<-cc.noResponse
			cc.outstanding.Add(-1)
			return
		}
		// The response exists now: charge it until it is written,
		// so that readers wait while clients do not read.
		s.respBytes = responseBytes(resp)
		cc.srv.budget.force(s.respBytes)
		s.resp = resp
		if s.ready != closedReady {
			close(s.ready)
		}
	}()
	if h.wait != nil {
		resp = h.wait()
	}
	if h.filter != nil && resp != nil {
		h.filter(resp)
	}
}

// await makes s's response exist: it waits for the handler's goroutine, or
// runs the handler's rest here when the write loop was to run it (slot.run).
// Only the write loop, or whoever took s from the slots queue after it, may
// call it.
func (cc *clientConn) await(s *slot) {
	if r := s.run; r != nil {
		s.run = nil // written only by whoever runs it (one owner at a time)
		cc.complete(s, r)
		return
	}
	<-s.ready
}

// responseBytes is what a response holds in upstream buffers (the large
// part: record batches); responses kproxy builds itself are small and not
// counted.
func responseBytes(resp kmsg.Response) int64 {
	var frames heldFrames
	switch r := resp.(type) {
	case *passthrough:
		frames = r.frames
		if len(frames) == 0 {
			return int64(len(r.body))
		}
	case *heldResponse:
		frames = r.frames
	}
	var n int64
	for _, c := range frames {
		n += int64(len(c.body))
	}
	return n
}

// finishSlot gives back what a slot holds once its response is written or
// dropped.
func (cc *clientConn) finishSlot(s *slot) {
	switch r := s.resp.(type) {
	case *passthrough:
		r.frames.release()
	case *heldResponse:
		r.frames.release()
	case *fetchStream:
		r.abandon() // never relayed (relay ends it otherwise)
	}
	cc.srv.budget.release(s.respBytes)
	s.respBytes = 0
	if s.frame != nil {
		select {
		case cc.spareFrame <- s.frame[:0]:
		default:
		}
		s.frame = nil
	}
	ps := s.produce
	s.produce = nil
	if s.fetchTurn {
		s.fetchTurn = false
		<-cc.fetchTurn // the next Fetch may take s now
	}
	cc.outstanding.Add(-1)
	if ps != nil {
		ps.release() // the next Produce may take s now
	}
}

// errApiVersionsTooNew marks an ApiVersions request newer than we know.
var errApiVersionsTooNew = errors.New("ApiVersions version is newer than kproxy knows")

// parseRequest decodes one request frame body against the advertised
// versions. Every failure is an error that names what was wrong; nothing
// here panics on any input (FuzzParseRequest).
//
// into, when not nil, is a reused request to decode into when the frame's
// key is its (its fields are reset first); prevClientID is passed to
// parseRequestHeader.
func parseRequest(frame []byte, adv map[int16]versionRange, prevClientID *string, into kmsg.Request, unsafe bool) (requestHeader, kmsg.Request, []byte, error) {
	h, r, err := parseRequestHeader(frame, prevClientID)
	if err != nil {
		return h, nil, nil, err
	}
	vr, advertised := adv[h.key]
	if h.key == kmsg.ApiVersions.Int16() && (h.version < 0 || h.version > vr.max) {
		return h, nil, nil, errApiVersionsTooNew
	}
	if registry[h.key] == nil || !advertised {
		return h, nil, nil, fmt.Errorf("request for api key %d (%s) v%d, which kproxy does not advertise; closing as a broker does", h.key, kmsg.NameForKey(h.key), h.version)
	}
	if h.version < vr.min || h.version > vr.max {
		return h, nil, nil, fmt.Errorf("%s v%d is outside the advertised range v%d-v%d; closing as a broker does", kmsg.NameForKey(h.key), h.version, vr.min, vr.max)
	}
	req := into
	if req == nil || req.Key() != h.key {
		req, unsafe = kmsg.RequestForKey(h.key), false
	}
	req.SetVersion(h.version)
	body, err := decodeRequest(&r, req, unsafe)
	if err != nil {
		client := "<null>"
		if h.clientID != nil {
			client = *h.clientID
		}
		return h, nil, nil, fmt.Errorf("malformed request from client %q: %w", client, err)
	}
	return h, req, body, nil
}

// runHandler runs the synchronous part of a handler, converting a panic into
// a closed connection rather than a crashed proxy.
func (cc *clientConn) runHandler(f func() func() kmsg.Response) (wait func() kmsg.Response) {
	defer func() {
		if p := recover(); p != nil {
			cc.log.Error("handler panicked; closing this connection", "panic", p, "stack", string(debug.Stack()))
			cc.nc.Close()
			wait = nil
		}
	}()
	return f()
}

// enqueueReady queues a response that is already built.
func (cc *clientConn) enqueueReady(h requestHeader, resp kmsg.Response) {
	s := &slot{corr: h.corr, key: h.key, version: h.version, start: time.Now(), ready: make(chan struct{}), resp: resp}
	close(s.ready)
	cc.outstanding.Add(1)
	if !cc.push(s) {
		cc.outstanding.Add(-1)
	}
}

// push queues s for the write loop (read loop only), behind the Produce
// requests answered directly so far; false when the connection is
// finished.
func (cc *clientConn) push(s *slot) bool {
	s.afterDirect = cc.directIssued.Load()
	select {
	case cc.slots <- s:
		return true
	case <-cc.done:
		return false
	}
}

// directOK reports whether a Produce whose one upstream call went on u may
// be answered directly (read loop only): everything outstanding on the
// connection besides it is a direct answer not yet written, on u. Then the
// write loop holds nothing, and u's reader writes the answers in the order
// the broker gives them, which is the requests' order.
func (cc *clientConn) directOK(u *upstreamConn) bool {
	// outstanding first: a direct answer written and finished between
	// the two loads makes the sides differ (not eligible), never agree
	// wrongly (finishSlot comes after directWritten).
	out := cc.outstanding.Load() - 1 // this request's own
	inflight := cc.directIssued.Load() - cc.directWritten.Load()
	return out == inflight && (inflight == 0 || cc.directConn == u)
}

// directProduce answers a Produce without the write loop (read loop only;
// directOK): the request went upstream as one call and its answer is all
// its rest needs (produceScratch.direct). The goroutine that reads that
// answer runs the rest and writes it to the client, instead of waking the
// write loop to do it: per small request, one goroutine hand-off and its
// scheduler wake-ups fewer. A slot queued meanwhile waits for it (push,
// afterDirect), so responses stay in request order. If the answer came
// before the hand-over, the read loop answers here itself.
func (cc *clientConn) directProduce(s *slot, ps *produceScratch) {
	p := ps.pend[0]
	if cc.directIssued.Load() == cc.directWritten.Load() {
		// A new chain. Its timeout, which no waiter arms now
		// (upstreamCall.wait): a broker that answers nothing within a
		// request's timeout fails its connection, which ends the calls
		// and answers the clients.
		wait := upstreamTimeout(p.req)
		cc.directConn = p.u
		cc.directUp.Store(p.u)
		cc.directWait.Store(int64(wait))
		cc.directMark.Store(cc.directWritten.Load())
		cc.directStart.Store(time.Now().UnixNano())
		if cc.directTimer == nil {
			cc.directTimer = time.AfterFunc(wait, cc.directExpired)
		} else {
			cc.directTimer.Reset(wait)
		}
	}
	cc.directIssued.Add(1)
	if ps.dstate.CompareAndSwap(directNone, directArmed) {
		return
	}
	cc.answerDirect(s) // answered already
}

// producedDirect counts Produce answers written by answerDirect (tests).
var producedDirect atomic.Int64

// directExpired watches a chain of direct Produce requests (directTimer):
// when no answer came for a whole period while some are in flight, their
// upstream connection is failed, as upstreamCall.wait does for one call.
// An answer within the period earns the rest another one (so a stalled
// broker is found within one to two request timeouts). A firing that
// races with the start of the next chain (the timer armed by an earlier
// chain, firing as this one begins) finds the chain younger than a period
// and waits out the rest of it: directStart is stored before the chain's
// request is counted issued, so a firing that sees the request sees its
// start too, and never fails a healthy connection for it.
func (cc *clientConn) directExpired() {
	w := cc.directWritten.Load()
	if w >= cc.directIssued.Load() {
		return // nothing in flight: the next chain arms the timer
	}
	wait := time.Duration(cc.directWait.Load())
	if age := time.Since(time.Unix(0, cc.directStart.Load())); age < wait {
		cc.directTimer.Reset(wait - age)
		return
	}
	if w != cc.directMark.Load() {
		cc.directMark.Store(w)
		cc.directTimer.Reset(wait)
		return
	}
	if u := cc.directUp.Load(); u != nil {
		u.fail(errors.New("no response to a Produce within its timeout"))
	}
}

// answerDirect runs a direct Produce's rest, writes its answer, counts it
// written (waking a write loop that waits for it) and finishes the slot.
// It runs on the goroutine that ended the call (produceScratch.ended), or
// on the read loop (directProduce).
func (cc *clientConn) answerDirect(s *slot) {
	producedDirect.Add(1) // before the client can have the answer (tests)
	cc.srv.metrics.produceDirect.Inc()
	cc.await(s) // the call has ended: nothing in the rest waits
	if s.resp == nil {
		cc.nc.Close() // the handler panicked (complete)
		cc.finish()
	} else {
		w := cc.directW
		if w == nil {
			// A Produce answer's header is all it encodes (the body
			// goes by reference): a small buffer of its own, not a
			// pooled 64 KiB one, since it stays with the connection and
			// the GC takes it (the last answerer may use it after the
			// connection closed).
			b := make([]byte, 0, 256)
			w = &respWriter{nc: cc.nc, bufp: &b}
			cc.directW = w
		}
		capture := cc.srv.opts.Capture
		n := w.add(s, capture != nil)
		if capture != nil {
			capture(s.key, s.version, w.last())
		}
		cc.srv.metrics.bytesOut.Add(float64(n))
		cc.srv.metrics.latency[s.key].Observe(time.Since(s.start).Seconds())
		_ = cc.nc.SetWriteDeadline(time.Now().Add(cc.srv.opts.Limits.WriteTimeout))
		if _, err := w.flush(); err != nil {
			if isTimeout(err) {
				cc.srv.metrics.closed.WithLabelValues("write_timeout").Inc()
				cc.log.Warn("closing client connection: it did not read a response within the write timeout", "timeout", cc.srv.opts.Limits.WriteTimeout)
			}
			cc.nc.Close()
			cc.finish()
		}
	}
	// Before finishSlot: see directOK.
	cc.directWritten.Add(1)
	select {
	case cc.directKick <- struct{}{}:
	default: // a kick is pending already: the write loop looks again
	}
	cc.finishSlot(s)
}

// writeLoop writes responses in request order. Every write has a deadline
// (Limits.WriteTimeout): a client that stops reading is disconnected rather
// than pinning its queued responses.
//
// Responses that are ready together leave in one writev (respWriter):
// encoded responses are appended to one buffer, upstream bytes passed
// through (Fetch record batches) are queued by reference, and a slot is
// finished (its upstream buffers released) only once its bytes are in the
// socket.
func (cc *clientConn) writeLoop() {
	w := newRespWriter(cc.nc)
	defer w.close()
	wt := cc.srv.opts.Limits.WriteTimeout
	fail := func(s *slot, err error) {
		if isTimeout(err) {
			cc.srv.metrics.closed.WithLabelValues("write_timeout").Inc()
			cc.log.Warn("closing client connection: it did not read a response within the write timeout", "timeout", wt)
		}
		cc.nc.Close()
		cc.finish()
		// The handlers of these may still be running; give back what the
		// slots hold once they are done.
		held := append(w.drop(), s)
		go func() {
			for _, s := range held {
				if s != nil {
					cc.await(s)
					cc.finishSlot(s)
				}
			}
		}()
	}
	flush := func() error {
		if w.empty() {
			return nil
		}
		_ = cc.nc.SetWriteDeadline(time.Now().Add(wt))
		written, err := w.flush()
		for _, s := range written {
			cc.finishSlot(s) // its bytes are in the socket now
		}
		return err
	}
	for {
		var s *slot
		select {
		case s = <-cc.slots:
		case <-cc.done:
			return
		}
		// Produce answers written directly may be ahead of it (push);
		// nothing else is queued here then (directOK).
		for cc.directWritten.Load() < s.afterDirect {
			select {
			case <-cc.directKick:
			case <-cc.done:
				fail(s, nil)
				return
			}
		}
		// Flush what is queued before waiting on a response that is
		// not ready: holding response N until N+1 completes would add
		// the next request's whole latency to every pipelined request.
		if s.run != nil {
			// The data path: run the handler's rest here (its upstream
			// answer may take a while: what is queued goes out first).
			if err := flush(); err != nil {
				fail(s, err) // runs it aside (await)
				return
			}
			cc.await(s)
		} else {
			select {
			case <-s.ready:
			default:
				if err := flush(); err != nil {
					fail(s, err)
					return
				}
				select {
				case <-s.ready:
				case <-cc.done:
					fail(s, nil)
					return
				}
			}
		}
		if s.resp == nil {
			fail(s, nil)
			return
		}
		capture := cc.srv.opts.Capture
		if fs, ok := s.resp.(*fetchStream); ok {
			// A streamed Fetch writes itself, after what is queued.
			if err := flush(); err != nil {
				fail(s, err)
				return
			}
			resp, n, err := cc.relayFetch(fs, s, wt)
			if err != nil {
				if !isTimeout(err) {
					cc.log.Warn("closing client connection: a streamed fetch answer could not be completed", "error", err)
				}
				fail(s, err)
				return
			}
			if resp == nil {
				cc.srv.metrics.bytesOut.Add(float64(n))
				cc.srv.metrics.latency[s.key].Observe(time.Since(s.start).Seconds())
				cc.finishSlot(s)
				continue
			}
			// Not streamed: written as any response.
			s.resp = resp
			s.respBytes = responseBytes(resp)
			cc.srv.budget.force(s.respBytes)
		}
		n := w.add(s, capture != nil)
		if capture != nil {
			capture(s.key, s.version, w.last())
		}
		cc.srv.metrics.bytesOut.Add(float64(n))
		cc.srv.metrics.latency[s.key].Observe(time.Since(s.start).Seconds())
		// Flush when nothing else is queued, so pipelined responses share
		// a syscall but a lone response is not delayed; and before a
		// batch grows past respBatchBytes.
		// s may be finished by the flush (and, a Fetch's, reused by the
		// next Fetch): what is needed of it is read first.
		closeAfter := s.closeAfter
		if len(cc.slots) == 0 || closeAfter || w.size() >= respBatchBytes {
			if err := flush(); err != nil {
				fail(nil, err)
				return
			}
		}
		if closeAfter {
			cc.nc.Close()
			cc.finish()
			return
		}
	}
}

// respBatchBytes bounds what writeLoop queues before a flush.
const respBatchBytes = 1 << 20

// respWriter gathers responses for one writev: encoded bytes in one
// buffer, passed-through bodies by reference, and the slots whose bytes
// are queued. Owned by the write loop.
type respWriter struct {
	nc    net.Conn
	bufp  *[]byte     // encoded bytes (pooled)
	seg   int         // start of the encoded bytes not yet in iov
	segs  [][]byte    // queued segments
	iov   net.Buffers // segs while a writev consumes it
	n     int         // queued bytes
	slots []*slot     // slots whose bytes are queued
	lastF []byte      // the last response's frame, for Capture (tests)
}

func newRespWriter(nc net.Conn) *respWriter {
	return &respWriter{nc: nc, bufp: getBuf()}
}

func (w *respWriter) close() {
	putBuf(w.bufp)
	w.bufp = nil
}

func (w *respWriter) empty() bool { return len(w.slots) == 0 }
func (w *respWriter) size() int   { return w.n }

// add queues s's response frame and returns its size; capture keeps a
// copy of the frame for last.
func (w *respWriter) add(s *slot, capture bool) int {
	buf := *w.bufp
	start := len(buf)
	var body []byte
	if raw, ok := s.resp.(*rawSASLToken); ok {
		buf = append(buf, 0, 0, 0, 0) // a bare token: no header
		body = raw.token
	} else {
		buf = appendResponseHeader(buf, s.corr, s.resp)
	}
	switch r := s.resp.(type) {
	case *rawSASLToken:
	case *passthrough:
		body = r.body // upstream bytes, written as they are
	case *heldResponse:
		buf = r.Response.AppendTo(buf)
	default:
		buf = s.resp.AppendTo(buf)
	}
	setFrameSize(buf[start:], len(body))
	if len(body) > 0 {
		// The encoded bytes so far, then the body by reference. A later
		// append that moves buf leaves these slices on the old array,
		// which is not written again.
		w.segs = append(w.segs, buf[w.seg:], body)
		w.seg = len(buf)
	}
	*w.bufp = buf
	if capture {
		w.lastF = append(append([]byte(nil), buf[start:]...), body...)
	}
	w.slots = append(w.slots, s)
	n := len(buf) - start + len(body)
	w.n += n
	return n
}

// last is the frame add queued last (only valid until the next flush).
func (w *respWriter) last() []byte { return w.lastF }

// flush writes everything queued in one writev and returns the slots
// whose bytes it wrote (all of them, or on error the ones the caller must
// still release).
func (w *respWriter) flush() ([]*slot, error) {
	buf := *w.bufp
	if w.seg < len(buf) {
		w.segs = append(w.segs, buf[w.seg:])
	}
	var err error
	if len(w.segs) == 1 {
		_, err = w.nc.Write(w.segs[0]) // one segment: no writev
	} else {
		w.iov = w.segs // WriteTo consumes iov; segs keeps the array
		_, err = w.iov.WriteTo(w.nc)
	}
	written := w.slots
	w.reset()
	return written, err
}

// drop forgets what is queued and returns its slots.
func (w *respWriter) drop() []*slot {
	s := append([]*slot(nil), w.slots...)
	w.reset()
	return s
}

// reset empties the queue, keeping its arrays. The slots slice flush
// returned stays readable until the next add.
func (w *respWriter) reset() {
	clear(w.segs) // drop references to upstream buffers
	w.segs, w.iov = w.segs[:0], nil
	w.slots = w.slots[:0]
	w.seg, w.n, w.lastF = 0, 0, nil
	if cap(*w.bufp) > 8<<20 {
		*w.bufp = make([]byte, 0, 64<<10)
	}
	*w.bufp = (*w.bufp)[:0]
}

// upstream returns this connection's upstream connection to a broker for a
// traffic class, dialing it if needed. The dial runs outside upMu, so a
// dead broker delays only the requests that need it; concurrent requests
// for the same key wait for one dial. While a broker is in dial backoff
// (dialer.go) the call fails at once with a retriable error.
func (cc *clientConn) upstream(cluster string, broker UpstreamNodeID, addr string, class trafficClass) (*upstreamConn, error) {
	k := upKey{cluster, broker, class}
	pass := cc.srv.dialer.sec[cluster].Passthrough
	for {
		cc.upMu.Lock()
		gen := cc.upGen
		e := cc.ups[k]
		if e != nil && e.dialing != nil {
			wait := e.dialing
			cc.upMu.Unlock()
			select {
			case <-wait:
				continue
			case <-cc.done:
				return nil, net.ErrClosed
			}
		}
		// A connection made with an older credential (passthrough) or
		// near the end of its broker session is replaced; it finishes
		// what was sent on it (retire).
		renew := e != nil && e.conn != nil && (pass != nil && e.gen != gen || e.conn.stale(time.Now()))
		if e != nil && e.conn != nil && !e.conn.isDead() && e.conn.addr == addr && !renew {
			cc.upMu.Unlock()
			return e.conn, nil
		}
		select {
		case <-cc.done:
			cc.upMu.Unlock()
			return nil, net.ErrClosed
		default:
		}
		var id *upIdentity
		if pass != nil {
			mech, err := pass.Mechanism(cc.upPrincipal, cc.upCred)
			if err != nil {
				cc.upMu.Unlock()
				return nil, err
			}
			id = &upIdentity{principal: cc.upPrincipal, mech: mech}
		}
		var old *upstreamConn
		if e != nil {
			old = e.conn
		}
		e = &upEntry{dialing: make(chan struct{}), gen: gen}
		cc.ups[k] = e
		cc.upMu.Unlock()
		if old != nil {
			if renew && old.addr == addr {
				old.retire()
			} else {
				old.close()
			}
		}

		u, err := cc.srv.dialer.dial(cluster, int32(broker), addr, class.framePool(), id)
		cc.upMu.Lock()
		e.conn = u
		close(e.dialing)
		e.dialing = nil
		closed := false
		select {
		case <-cc.done:
			closed = true
		default:
		}
		cc.upMu.Unlock()
		if err != nil {
			cc.srv.metrics.upstreamErrors.WithLabelValues(cluster).Inc()
			if id != nil && secure.IsUpstreamAuthFailure(err) {
				cc.upstreamRefused(cluster, id.principal, err)
			}
			return nil, err
		}
		if closed {
			u.close() // serve already closed the others
			return nil, net.ErrClosed
		}
		cc.rec.reached(cluster)
		return u, nil
	}
}
