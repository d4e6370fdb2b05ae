package proxy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reqCtx is what a handler knows about the request it serves.
type reqCtx struct {
	cc       *clientConn
	clientID *string // forwarded upstream as-is
	client   string  // client.id, "" when null
	body     []byte  // the request body after its header, as the client sent it
	// closeAfter, set by a handler's synchronous part, closes the
	// connection once the response is written.
	closeAfter bool
	// filtered: the answer is edited after the handler (policy-narrowed
	// topics put back, a Metadata filter), so it must be a whole message.
	filtered bool
	// metadataFiltered: the policy filters this Metadata answer after the
	// handler (conn.go), so it must be a decoded response, not one shared
	// with other connections (metadata_view.go).
	metadataFiltered bool
	// produce is a Produce's pooled scratch (00_produce.go), or nil.
	produce *produceScratch
	// splice, set for a Produce read by the spliced path, holds the
	// bodies of its large sections (produce_splice.go): the sub-requests
	// are written with them (writeTo).
	splice *spliceReq
}

func (rc *reqCtx) srv() *Server { return rc.cc.srv }

// ctx bounds control-plane lookups made on behalf of a request.
func (rc *reqCtx) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

// pending is a request written upstream whose response is not read yet.
type pending struct {
	u    *upstreamConn
	call *upstreamCall
	req  kmsg.Request
	err  error
}

// send writes req to broker in cluster on this connection's upstream
// connection for the request's traffic class. It returns at once; response
// waits for the answer. Writes from one goroutine reach the broker in order.
func (rc *reqCtx) send(cluster string, broker UpstreamNodeID, addr string, req kmsg.Request) *pending {
	return rc.write(cluster, broker, addr, req, false, true, nil)
}

// sendRaw writes this request's own body bytes upstream under a new header:
// no re-encoding. Only valid when the upstream must see exactly what the
// client sent (same version, nothing rewritten except in place).
func (rc *reqCtx) sendRaw(cluster string, broker UpstreamNodeID, addr string, req kmsg.Request, expectResponse bool) *pending {
	return rc.write(cluster, broker, addr, req, true, expectResponse, nil)
}

// write is send (req encoded) and sendRaw (raw: the client's body bytes).
func (rc *reqCtx) write(cluster string, broker UpstreamNodeID, addr string, req kmsg.Request, raw, expectResponse bool, w answerWatcher) *pending {
	p := new(pending)
	rc.writeTo(p, cluster, broker, addr, req, raw, expectResponse, w, false)
	return p
}

// sendWatched is send (raw: sendRaw) expecting a response, with w told once
// when the call ends: answered, failed, or never sent.
func (rc *reqCtx) sendWatched(cluster string, broker UpstreamNodeID, addr string, req kmsg.Request, raw bool, w answerWatcher) *pending {
	p := new(pending)
	rc.writeWatched(p, cluster, broker, addr, req, raw, w)
	return p
}

// writeWatched is sendWatched into p, which a handler reuses (writeTo).
// w hears the end of the call from the upstream reader, after the call's
// owner may have taken its answer and reused p: it must not refer to p or
// to anything the owner reuses.
func (rc *reqCtx) writeWatched(p *pending, cluster string, broker UpstreamNodeID, addr string, req kmsg.Request, raw bool, w answerWatcher) {
	rc.writeTo(p, cluster, broker, addr, req, raw, true, w, false)
	if p.call == nil {
		w.answered(errNotSent) // nothing was queued: nothing will tell it
	}
}

// writeTo is write into p (stream: the answer body is handed over unread,
// upstreamCall.stream), which a handler reuses
// from one request to the next: p's previous call is reused when it is
// over (newCall).
func (rc *reqCtx) writeTo(p *pending, cluster string, broker UpstreamNodeID, addr string, req kmsg.Request, raw, expectResponse bool, w answerWatcher, stream bool) {
	prev := p.call
	*p = pending{req: req}
	u, err := rc.cc.upstream(cluster, broker, addr, classFor(req.Key()))
	if err != nil {
		p.err = err
		return
	}
	var body []byte
	if raw {
		body = rc.body
	}
	var call *upstreamCall
	var then callHook
	pr, isProduce := req.(*kmsg.ProduceRequest)
	if isProduce && rc.produce != nil && expectResponse {
		then = rc.produce // may answer the client itself (directProduce)
	}
	if isProduce && rc.splice != nil {
		call, err = u.writeSpliced(pr, rc.clientID, rc.splice, expectResponse, w, then, prev)
	} else {
		call, err = u.write(req, rc.clientID, body, raw, expectResponse, w, then, stream, prev)
	}
	if err != nil {
		rc.srv().metrics.upstreamErrors.WithLabelValues(cluster).Inc()
	}
	p.u, p.call, p.err = u, call, err
}

// response waits for and decodes the upstream answer.
func (p *pending) response() (kmsg.Response, error) {
	resp, _, err := p.responseBody()
	return resp, err
}

// responseBody also returns the raw body the response was decoded from.
// Decoding aliases byte fields (record batches) into body rather than
// copying them.
func (p *pending) responseBody() (kmsg.Response, []byte, error) {
	if p.err != nil {
		return nil, nil, p.err
	}
	body, err := p.call.wait(p.u, upstreamTimeout(p.req))
	if err != nil {
		return nil, nil, err
	}
	resp := p.req.ResponseKind()
	if err := resp.ReadFrom(body); err != nil {
		p.call.releaseFrame()
		return nil, nil, fmt.Errorf("decoding %s v%d from upstream %s broker %d: %w", kmsg.NameForKey(p.req.Key()), p.req.GetVersion(), p.u.cluster, p.u.broker, err)
	}
	return resp, body, nil
}

// responseInto is responseBody decoded into resp, which a handler reuses
// (emptied by the caller). unsafe decodes strings without copying them:
// they alias the call's buffer, which the caller then keeps until it is
// done with resp (a Produce: until its answer is written).
func (p *pending) responseInto(resp kmsg.Response, unsafe bool) (kmsg.Response, []byte, error) {
	if p.err != nil {
		return nil, nil, p.err
	}
	body, err := p.call.wait(p.u, upstreamTimeout(p.req))
	if err != nil {
		return nil, nil, err
	}
	resp.SetVersion(p.req.GetVersion())
	read := resp.ReadFrom
	if unsafe {
		read = resp.(kmsg.UnsafeReadFrom).UnsafeReadFrom
	}
	if err := read(body); err != nil {
		p.call.releaseFrame()
		return nil, nil, fmt.Errorf("decoding %s v%d from upstream %s broker %d: %w", kmsg.NameForKey(p.req.Key()), p.req.GetVersion(), p.u.cluster, p.u.broker, err)
	}
	return resp, body, nil
}

// upstreamTimeout is how long to wait for a broker: the request's own
// timeout (or long-poll, or rebalance timeout) plus slack.
func upstreamTimeout(req kmsg.Request) time.Duration {
	const slack = 30 * time.Second
	switch r := req.(type) {
	case *kmsg.FetchRequest:
		return time.Duration(r.MaxWaitMillis)*time.Millisecond + slack
	case *kmsg.JoinGroupRequest:
		return time.Duration(max(r.RebalanceTimeoutMillis, r.SessionTimeoutMillis))*time.Millisecond + slack
	case kmsg.TimeoutRequest:
		return time.Duration(r.Timeout())*time.Millisecond + slack
	}
	return slack
}

// roundTrip sends and waits, retrying once on a fresh connection when the
// upstream connection was already dead (brokers close idle connections).
func (rc *reqCtx) roundTrip(cluster string, broker UpstreamNodeID, addr string, req kmsg.Request) (kmsg.Response, error) {
	resp, err := rc.send(cluster, broker, addr, req).response()
	if err != nil && errors.Is(err, errUpstreamClosed) {
		resp, err = rc.send(cluster, broker, addr, req).response()
	}
	return resp, err
}

// clusterFor returns the named upstream cluster or an error naming it.
func (rc *reqCtx) clusterFor(name string) (*upstreamCluster, error) {
	uc, ok := rc.srv().cluster(name)
	if !ok {
		return nil, fmt.Errorf("route names cluster %q, which is not configured", name)
	}
	return uc, nil
}

// forwardAny sends req to any broker of cluster (KRaft brokers forward
// controller-bound requests themselves). On failure the response carries
// errorCode in its top-level error field when it has one; otherwise the
// client connection is closed (nil response) so the client retries.
func (rc *reqCtx) forwardAny(cluster string, req kmsg.Request) kmsg.Response {
	uc, err := rc.clusterFor(cluster)
	if err == nil {
		for attempt := 0; attempt < 2; attempt++ {
			id, addr, ok := uc.anyBroker()
			if !ok {
				err = fmt.Errorf("cluster %s: no known brokers", cluster)
				break
			}
			var resp kmsg.Response
			if resp, err = rc.roundTrip(cluster, id, addr, req); err == nil {
				return resp
			}
		}
	}
	rc.cc.log.Warn("upstream request failed", "api", kmsg.NameForKey(req.Key()), "cluster", cluster, "error", err)
	return errorResponse(req, kerr.RequestTimedOut.Code)
}

// forwardCoordinator sends req to the coordinator of key (typ 0 group, 1
// transaction) on cluster. A NOT_COORDINATOR answer drops the cached
// coordinator and goes to the client unchanged: the client looks the
// coordinator up again (kproxy answers itself) and retries, and the retry
// finds the new one.
func (rc *reqCtx) forwardCoordinator(cluster string, typ int8, key string, req kmsg.Request) kmsg.Response {
	uc, err := rc.clusterFor(cluster)
	if err != nil {
		return errorResponse(req, kerr.CoordinatorNotAvailable.Code)
	}
	ctx, cancel := rc.ctx()
	defer cancel()
	id, addr, err := uc.coordinator(ctx, typ, key)
	if err != nil {
		rc.cc.log.Debug("coordinator lookup failed", "cluster", cluster, "key", key, "error", err)
		return errorResponse(req, kerr.CoordinatorNotAvailable.Code)
	}
	clearRequestEpochs(req)
	resp, err := rc.roundTrip(cluster, id, addr, req)
	if err != nil {
		uc.forgetCoordinator(typ, key)
		return errorResponse(req, kerr.CoordinatorNotAvailable.Code)
	}
	clearResponseEpochs(resp)
	if code := topErrorCode(resp); code == kerr.NotCoordinator.Code || code == kerr.CoordinatorNotAvailable.Code {
		uc.forgetCoordinator(typ, key)
	}
	return resp
}

// errorResponse builds req's response with code in every ErrorCode field
// that mirrors the request: the top-level one, and for per-partition APIs
// the topic/partition lists copied from the request by handler helpers.
// Responses without a top-level ErrorCode get a per-API filler from
// errorFillers, or nil (close the connection) as a last resort.
func errorResponse(req kmsg.Request, code int16) kmsg.Response {
	resp := req.ResponseKind()
	if f, ok := errorFillers[req.Key()]; ok {
		f(req, resp, code)
		return resp
	}
	v := reflect.ValueOf(resp).Elem()
	if f := v.FieldByName("ErrorCode"); f.IsValid() && f.CanSet() && f.Kind() == reflect.Int16 {
		f.SetInt(int64(code))
		return resp
	}
	return nil
}

// errorFillers build error responses for APIs whose errors are per entry.
var errorFillers = map[int16]func(req kmsg.Request, resp kmsg.Response, code int16){}

// fillErrors makes an errorFillers entry from a filler of the API's own
// request and response types.
func fillErrors[Q kmsg.Request, R kmsg.Response](f func(req Q, resp R, code int16)) func(kmsg.Request, kmsg.Response, int16) {
	return func(req kmsg.Request, resp kmsg.Response, code int16) { f(req.(Q), resp.(R), code) }
}

// topErrorCode reads a response's top-level ErrorCode, if it has one.
func topErrorCode(resp kmsg.Response) int16 {
	v := reflect.ValueOf(resp).Elem()
	if f := v.FieldByName("ErrorCode"); f.IsValid() && f.Kind() == reflect.Int16 {
		return int16(f.Int())
	}
	return 0
}
