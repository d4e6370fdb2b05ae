package proxy

// TxnOffsetCommit (key 28), accepted v0-5. Route: the group's home
// coordinator, which must be on the open transaction's cluster (a
// transaction may not span clusters; AddOffsetsToTxn checked it when the
// group joined the transaction). Otherwise every partition gets
// INVALID_TXN_STATE and nothing is forwarded. While the group is held for a
// move (group_hold.go) it is refused like the other group APIs.
// Rewrites: ProducerID/ProducerEpoch, virtual to the cluster's session
// (txn_producers.go). Errors: per partition, mirroring the request.
// With several instances (instances.go) an instance that does not
// coordinate the group answers NOT_COORDINATOR; the one that does forwards the
// request unchanged (txn_instances.go).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	errorFillers[kmsg.TxnOffsetCommit.Int16()] = fillErrors(func(req *kmsg.TxnOffsetCommitRequest, resp *kmsg.TxnOffsetCommitResponse, code int16) {
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
}

// handleTxnOffsetCommit answers on the response goroutine (apis.go: answerLater).
func handleTxnOffsetCommit(rc *reqCtx, req *kmsg.TxnOffsetCommitRequest) kmsg.Response {
	s := rc.srv()
	p := &s.pids
	if resp := s.notCoordinator(coordGroup, req.Group, req); resp != nil {
		return resp // another instance coordinates the group (instances.go)
	}
	rc.noteMember(req.Group, nil) // a member's own commit (coordinated.go: membership)
	// The group's hold during a group move (group_hold.go), as for the
	// other group APIs (toGroupCoordinator): refused while held, else
	// counted in flight until answered.
	resp, done := rc.gateGroup(kmsg.TxnOffsetCommit, req.Group, req)
	if done == nil {
		return resp
	}
	defer done()
	if s.txnDirect() {
		return rc.txnOffsetCommitDirect(req) // several instances (txn_instances.go)
	}
	t, code := p.txnEnter(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Version, 3)
	if code != 0 {
		return errorResponse(req, code)
	}
	defer t.op.Unlock()
	home := s.routes().GroupCluster(req.Group)
	p.mu.Lock()
	open := t.cluster
	u, ok := t.sessions[home]
	p.mu.Unlock()
	if open != home || !ok {
		rc.cc.log.Warn("refusing a transactional offset commit off the transaction's cluster", "transactional_id", req.TransactionalID, "group", req.Group, "route", home, "txn_cluster", open)
		return errorResponse(req, kerr.InvalidTxnState.Code)
	}
	req.ProducerID, req.ProducerEpoch = u.pid, u.epoch
	return rc.forwardCoordinator(home, coordGroup, req.Group, req)
}
