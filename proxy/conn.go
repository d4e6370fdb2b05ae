package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// clientConn is one downstream client connection. It owns two goroutines:
// read (decode and dispatch, in request order) and write (responses, in
// request order). Each request's response is produced on a goroutine of its
// own; the write goroutine waits for the slots in the order they were queued,
// so pipelined requests may complete out of order upstream but always leave
// in order (Java's InFlightRequests rejects anything else).
type clientConn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	log hclog.Logger

	slots chan *slot    // responses to write, in request order
	done  chan struct{} // closed when the connection is finished

	upMu sync.Mutex // guards ups
	ups  map[upKey]*upstreamConn
}

type upKey struct {
	cluster string
	broker  UpstreamNodeID
	class   trafficClass
}

// slot is one response position in the connection's output order.
type slot struct {
	corr    int32
	key     int16
	version int16
	start   time.Time
	ready   chan struct{}
	resp    kmsg.Response
}

func newClientConn(s *Server, nc net.Conn, id uint64) *clientConn {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &clientConn{
		srv:   s,
		id:    id,
		nc:    nc,
		log:   s.log.With("conn", id, "remote", nc.RemoteAddr().String()),
		slots: make(chan *slot, s.opts.MaxInflight),
		done:  make(chan struct{}),
		ups:   map[upKey]*upstreamConn{},
	}
}

func (cc *clientConn) serve() {
	cc.srv.metrics.connections.Inc()
	defer cc.srv.metrics.connections.Dec()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cc.writeLoop()
	}()
	err := cc.readLoop()
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		cc.log.Warn("closing client connection", "error", err)
	} else if cc.log.IsDebug() {
		cc.log.Debug("client connection closed")
	}
	close(cc.done)
	cc.nc.Close()
	wg.Wait()
	cc.upMu.Lock()
	for _, u := range cc.ups {
		u.close()
	}
	cc.upMu.Unlock()
}

// readLoop reads and dispatches requests until the connection fails or a
// frame is malformed. A malformed frame ends only this connection.
func (cc *clientConn) readLoop() error {
	br := bufio.NewReaderSize(cc.nc, 64<<10)
	var reuse []byte // a frame buffer no request references any more
	for {
		body, err := readFrameInto(br, cc.srv.opts.MaxFrameBytes, reuse)
		reuse = nil
		if err != nil {
			if errors.Is(err, errFrameTooLarge) {
				cc.srv.metrics.badFrames.Inc()
			}
			return err
		}
		cc.srv.metrics.bytesIn.Add(float64(len(body) + 4))
		released, err := cc.dispatch(body)
		if err != nil {
			cc.srv.metrics.badFrames.Inc()
			return err
		}
		if released && cap(body) <= 8<<20 {
			reuse = body
		}
	}
}

// dispatch decodes and starts one request. released says the request no
// longer references body once dispatch returns (Produce: its bytes were
// written upstream during the synchronous part), so the buffer can be
// reused for the next frame.
func (cc *clientConn) dispatch(frame []byte) (released bool, err error) {
	adv := cc.srv.advertised()
	h, req, body, err := parseRequest(frame, adv)
	if errors.Is(err, errApiVersionsTooNew) {
		// Answer v0 with UNSUPPORTED_VERSION and our range, so the client
		// retries lower (KIP-511; NetworkClient.handleApiVersionsResponse).
		cc.enqueueReady(h, apiVersionsUnsupported(adv))
		return true, nil
	}
	if err != nil {
		return false, err
	}
	spec := registry[h.key]
	clientID := ""
	if h.clientID != nil {
		clientID = *h.clientID
	}
	cc.srv.metrics.requests[h.key].Inc()
	if cc.log.IsTrace() {
		cc.log.Trace("request", "api", kmsg.NameForKey(h.key), "version", h.version, "corr", h.corr, "client_id", clientID)
	}

	noResponse := false
	if p, ok := req.(*kmsg.ProduceRequest); ok && p.Acks == 0 {
		noResponse = true // acks=0: the client reads no response, ever
	}
	var s *slot
	if !noResponse {
		s = &slot{corr: h.corr, key: h.key, version: h.version, start: time.Now(), ready: make(chan struct{})}
		select {
		case cc.slots <- s:
		case <-cc.done:
			return false, net.ErrClosed
		}
	}
	rc := &reqCtx{cc: cc, clientID: h.clientID, client: clientID, body: body}
	wait := cc.runHandler(func() func() kmsg.Response { return spec.handle(rc, req) })
	go func() {
		var resp kmsg.Response
		defer func() {
			if p := recover(); p != nil {
				cc.log.Error("handler panicked; closing this connection", "api", kmsg.NameForKey(h.key), "panic", p, "stack", string(debug.Stack()))
				cc.nc.Close()
				resp = nil
			}
			if s != nil {
				s.resp = resp
				close(s.ready)
			}
		}()
		if wait != nil {
			resp = wait()
		}
	}()
	_, isProduce := req.(*kmsg.ProduceRequest)
	return isProduce, nil
}

// errApiVersionsTooNew marks an ApiVersions request newer than we know.
var errApiVersionsTooNew = errors.New("ApiVersions version is newer than kproxy knows")

// parseRequest decodes one request frame body against the advertised
// versions. Every failure is an error that names what was wrong; nothing
// here panics on any input (FuzzParseRequest).
func parseRequest(frame []byte, adv map[int16]versionRange) (requestHeader, kmsg.Request, []byte, error) {
	h, r, err := parseRequestHeader(frame)
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
	req := kmsg.RequestForKey(h.key)
	req.SetVersion(h.version)
	body, err := decodeRequest(r, req)
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
	select {
	case cc.slots <- s:
	case <-cc.done:
	}
}

func (cc *clientConn) writeLoop() {
	bw := bufio.NewWriterSize(cc.nc, 64<<10)
	bufp := getBuf()
	defer putBuf(bufp)
	for {
		var s *slot
		select {
		case s = <-cc.slots:
		case <-cc.done:
			return
		}
		// Flush what is buffered before waiting on a response that is
		// not ready: holding response N until N+1 completes would add
		// the next request's whole latency to every pipelined request.
		select {
		case <-s.ready:
		default:
			if bw.Buffered() > 0 {
				if err := bw.Flush(); err != nil {
					cc.nc.Close()
					return
				}
			}
			select {
			case <-s.ready:
			case <-cc.done:
				return
			}
		}
		if s.resp == nil {
			cc.nc.Close()
			return
		}
		buf := appendResponseHeader((*bufp)[:0], s.corr, s.resp)
		var body []byte
		var held *heldFrames
		switch r := s.resp.(type) {
		case *passthrough:
			body = r.body // upstream bytes, written as they are
			held = &r.frames
		case *heldResponse:
			buf = r.Response.AppendTo(buf)
			held = &r.frames
		default:
			buf = s.resp.AppendTo(buf)
		}
		setFrameSize(buf, len(body))
		*bufp = buf
		if c := cc.srv.opts.Capture; c != nil {
			c(s.key, s.version, append(append([]byte(nil), buf...), body...))
		}
		if _, err := bw.Write(buf); err != nil {
			cc.nc.Close()
			return
		}
		if len(body) > 0 {
			if _, err := bw.Write(body); err != nil {
				cc.nc.Close()
				return
			}
		}
		// Flush when nothing else is queued, so pipelined responses share
		// a syscall but a lone response is not delayed.
		if len(cc.slots) == 0 {
			if err := bw.Flush(); err != nil {
				cc.nc.Close()
				return
			}
		}
		if held != nil {
			held.release() // the response's bytes are in the socket or bw now
		}
		cc.srv.metrics.bytesOut.Add(float64(len(buf) + len(body)))
		cc.srv.metrics.latency[s.key].Observe(time.Since(s.start).Seconds())
		if cap(*bufp) > 8<<20 {
			*bufp = make([]byte, 0, 64<<10)
		}
	}
}

// upstream returns this connection's upstream connection to a broker for a
// traffic class, dialing it if needed.
func (cc *clientConn) upstream(cluster string, broker UpstreamNodeID, addr string, class trafficClass) (*upstreamConn, error) {
	k := upKey{cluster, broker, class}
	cc.upMu.Lock()
	defer cc.upMu.Unlock()
	if u, ok := cc.ups[k]; ok && !u.isDead() && u.addr == addr {
		return u, nil
	}
	select {
	case <-cc.done:
		return nil, net.ErrClosed
	default:
	}
	u, err := dialUpstream(cluster, int32(broker), addr, cc.srv.opts.MaxFrameBytes, class == classFetch)
	if err != nil {
		cc.srv.metrics.upstreamErrors.WithLabelValues(cluster).Inc()
		return nil, err
	}
	if old, ok := cc.ups[k]; ok {
		old.close()
	}
	cc.ups[k] = u
	return u, nil
}
