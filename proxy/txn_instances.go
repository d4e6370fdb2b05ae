package proxy

// Transactional producers when several instances serve one virtual cluster
// (Options.Instances, docs/ha.md). The single-instance design
// (txn_producers.go) gives a transactional id a virtual PID and keeps its
// upstream sessions, open transaction and sequence bases in the process
// that answered InitProducerId. With several instances that process is the
// id's coordinator instance only, while the transaction's batches go to the
// leaders of their partitions, spread over every instance: a leader that
// knows nothing of the virtual PID refused every batch it did not
// coordinate with INVALID_TXN_STATE. No instance can rebuild another's
// virtual session (the upstream PID behind it is a broker's answer), so
// here a transactional id is not virtualized at all:
//
//   - InitProducerId goes to the id's coordinator on the transaction
//     cluster (routes.default, TxnCluster) with the client's own PID and
//     epoch, and the broker's answer goes back unchanged: the client holds
//     the broker's session, which fences older producers and follows
//     KIP-360 bumps itself;
//   - AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and TxnOffsetCommit are
//     forwarded unchanged, after the same one-cluster check as before: a
//     topic or group whose route is another cluster is refused with
//     INVALID_TXN_STATE (the session exists on the transaction cluster
//     only);
//   - a transactional batch is written as the client sent it, by whichever
//     instance leads its partition (ident_pid.go).
//
// What this gives up, until transactional sessions are kept on the control
// cluster: a transaction never moves across a flip (a topic's route must be
// the transaction cluster), and cutovers do not wait for open transactions
// (WaitTxnIdle sees none). Neither happens with control: yet: replication,
// and with it every cutover, is refused with control: (config validation).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnDirect says transactional ids are served unvirtualized (see above).
func (s *Server) txnDirect() bool { return s.opts.Instances }

// initTxnDirect answers InitProducerId for a transactional id with the
// coordinator's own answer.
func (rc *reqCtx) initTxnDirect(req *kmsg.InitProducerIDRequest) kmsg.Response {
	id := *req.TransactionalID
	return rc.forwardCoordinator(rc.srv().routes().TxnCluster(id), coordTxn, id, req)
}

// addPartitionsToTxnDirect forwards AddPartitionsToTxn unchanged, after the
// one-cluster and hold checks of handleAddPartitionsToTxn.
func (rc *reqCtx) addPartitionsToTxnDirect(req *kmsg.AddPartitionsToTxnRequest) kmsg.Response {
	s := rc.srv()
	router := s.routes()
	cluster := router.TxnCluster(req.TransactionalID)
	refuse := func(code func(topic string) int16) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
		fillAddPartitionsToTxn(req, resp, code)
		return resp
	}
	off := map[string]bool{}
	held := false
	for _, tp := range req.Topics {
		if c := router.ProduceCluster(tp.Topic, rc.client); c != cluster {
			off[tp.Topic] = true
			rc.cc.log.Warn("refusing a transaction off the transaction cluster", "transactional_id", req.TransactionalID, "topic", tp.Topic, "route", c, "txn_cluster", cluster)
		}
		held = held || s.holds.isHeld(tp.Topic)
	}
	switch {
	case len(off) > 0:
		return refuse(func(topic string) int16 {
			if off[topic] {
				return kerr.InvalidTxnState.Code
			}
			return kerr.OperationNotAttempted.Code
		})
	case held:
		return refuse(func(string) int16 { return kerr.ConcurrentTransactions.Code })
	}
	return rc.forwardCoordinator(cluster, coordTxn, req.TransactionalID, req)
}

// addOffsetsToTxnDirect forwards AddOffsetsToTxn unchanged when the group's
// home is the transaction cluster.
func (rc *reqCtx) addOffsetsToTxnDirect(req *kmsg.AddOffsetsToTxnRequest) kmsg.Response {
	routes := rc.srv().routes()
	cluster := routes.TxnCluster(req.TransactionalID)
	if home := routes.GroupCluster(req.Group); home != cluster {
		rc.cc.log.Warn("refusing a transaction off the transaction cluster: its group is homed elsewhere", "transactional_id", req.TransactionalID, "group", req.Group, "route", home, "txn_cluster", cluster)
		return errorResponse(req, kerr.InvalidTxnState.Code)
	}
	return rc.forwardCoordinator(cluster, coordTxn, req.TransactionalID, req)
}

// endTxnDirect forwards EndTxn unchanged.
func (rc *reqCtx) endTxnDirect(req *kmsg.EndTxnRequest) kmsg.Response {
	return rc.forwardCoordinator(rc.srv().routes().TxnCluster(req.TransactionalID), coordTxn, req.TransactionalID, req)
}

// txnOffsetCommitDirect forwards TxnOffsetCommit unchanged to the group's
// coordinator when the group's home is the transaction cluster. The caller
// gated the group (gateGroup).
func (rc *reqCtx) txnOffsetCommitDirect(req *kmsg.TxnOffsetCommitRequest) kmsg.Response {
	routes := rc.srv().routes()
	home := routes.GroupCluster(req.Group)
	if cluster := routes.TxnCluster(req.TransactionalID); home != cluster {
		rc.cc.log.Warn("refusing a transactional offset commit off the transaction cluster", "transactional_id", req.TransactionalID, "group", req.Group, "route", home, "txn_cluster", cluster)
		return errorResponse(req, kerr.InvalidTxnState.Code)
	}
	return rc.forwardCoordinator(home, coordGroup, req.Group, req)
}

// txnProduceCluster is the cluster a transactional produce of id must be
// routed to: the open transaction's here (txn_producers.go), the
// transaction cluster with several instances ("" when none is open, which
// refuses the produce).
func (s *Server) txnProduceCluster(id string) string {
	if s.txnDirect() {
		return s.routes().TxnCluster(id)
	}
	return s.pids.txnOpenCluster(id)
}
