package proxy

// AddOffsetsToTxn (key 25), accepted v0-4. Route: the transaction's
// coordinator on the transaction's cluster. Sending offsets may be what
// begins a transaction: it begins on the group's home cluster, whose group
// coordinator takes the TxnOffsetCommit that follows. A group homed on
// another cluster than the open transaction's is refused with
// INVALID_TXN_STATE (the transactional id and the group move together;
// DESIGN.md). Rewrites: ProducerID/ProducerEpoch (txn_producers.go).
// With several instances (instances.go) an instance that does not
// coordinate the transactional id answers NOT_COORDINATOR; the one that does forwards
// the request unchanged (txn_instances.go).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleAddOffsetsToTxn answers on the response goroutine (apis.go: answerLater).
func handleAddOffsetsToTxn(rc *reqCtx, req *kmsg.AddOffsetsToTxnRequest) kmsg.Response {
	s := rc.srv()
	p := &s.pids
	if resp := s.notCoordinator(coordTxn, req.TransactionalID, req); resp != nil {
		return resp // another instance coordinates the id (instances.go)
	}
	if s.txnDirect() {
		return rc.addOffsetsToTxnDirect(req) // several instances (txn_instances.go)
	}
	t, code := p.txnEnter(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Version, 2)
	if code != 0 {
		return errorResponse(req, code)
	}
	defer t.op.Unlock()
	home := s.routes().GroupCluster(req.Group)
	cluster := p.txnOpenCluster(req.TransactionalID)
	if cluster == "" {
		cluster = home
	}
	if home != cluster {
		rc.cc.log.Warn("refusing a transaction that would span clusters: its group is homed elsewhere", "transactional_id", req.TransactionalID, "group", req.Group, "route", home, "txn_cluster", cluster)
		return errorResponse(req, kerr.InvalidTxnState.Code)
	}
	u, code := rc.txnSessionFor(t, cluster)
	if code != 0 {
		return errorResponse(req, code)
	}
	req.ProducerID, req.ProducerEpoch = u.pid, u.epoch
	r := rc.forwardCoordinator(cluster, coordTxn, req.TransactionalID, req)
	if ar, ok := r.(*kmsg.AddOffsetsToTxnResponse); ok && ar.ErrorCode == 0 {
		p.txnBegin(t, cluster)
	}
	return r
}
