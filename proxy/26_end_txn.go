package proxy

// EndTxn (key 26), accepted v0-5. Route: the transaction's coordinator on
// the transaction's cluster; with no transaction open here (a retried
// EndTxn whose first answer was lost), the last transaction's cluster, whose
// coordinator answers the retry.
// Rewrites: ProducerID/ProducerEpoch in the request; in a v5 answer
// (KIP-890 part 2 bumps the epoch at every EndTxn) the upstream session is
// updated and the client gets its virtual PID with the next virtual epoch.
// An answer other than a retriable error ends the transaction here: the next
// one may begin on another cluster, and WaitTxnIdle stops waiting for it.
// With several instances (instances.go) an instance that does not
// coordinate the transactional id answers NOT_COORDINATOR; the one that does forwards
// the request unchanged (txn_instances.go).

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleEndTxn answers on the response goroutine (apis.go: answerLater).
func handleEndTxn(rc *reqCtx, req *kmsg.EndTxnRequest) kmsg.Response {
	s := rc.srv()
	p := &s.pids
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if r := s.notCoordinator(coordTxn, req.TransactionalID, req); r != nil {
		return r // another instance coordinates the id (instances.go)
	}
	if s.txnDirect() {
		return rc.endTxnDirect(req) // several instances (txn_instances.go)
	}
	t, code := p.txnEnter(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Version, 2)
	if code != 0 {
		resp.ErrorCode = code
		return resp
	}
	defer t.op.Unlock()
	p.mu.Lock()
	cluster := t.cluster
	if cluster == "" {
		cluster = t.last
	}
	u, ok := t.sessions[cluster]
	p.mu.Unlock()
	if !ok {
		// Nothing was ever added: what a coordinator answers EndTxn on
		// an empty transaction (transactions V1).
		resp.ErrorCode = kerr.InvalidTxnState.Code
		return resp
	}
	req.ProducerID, req.ProducerEpoch = u.pid, u.epoch
	r := rc.forwardCoordinator(cluster, coordTxn, req.TransactionalID, req)
	er, ok := r.(*kmsg.EndTxnResponse)
	if !ok {
		return r
	}
	if txnEndRetriable(er.ErrorCode) {
		return er
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.cluster == cluster {
		t.endLocked(p)
	}
	if er.Version >= 5 && er.ErrorCode == 0 && er.ProducerID >= 0 {
		if nu := (upstreamPID{er.ProducerID, er.ProducerEpoch}); nu != u {
			// The coordinator bumped the session (transactions V2):
			// follow it upstream, and bump the virtual epoch so the
			// client's epoch keeps rising, as it would on a broker.
			t.sessions[cluster] = nu
			if t.vepoch >= math.MaxInt16-1 {
				delete(p.txnPIDs, t.vpid)
				t.vpid, t.vepoch = newVirtualPID(), 0
				p.txnPIDs[t.vpid] = t
			} else {
				t.vepoch++
			}
		}
	}
	if er.Version >= 5 {
		er.ProducerID, er.ProducerEpoch = t.vpid, t.vepoch
	}
	return er
}
