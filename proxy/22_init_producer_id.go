package proxy

// InitProducerId (key 22), accepted v0-5. Answered by kproxy with a virtual
// PID and epoch, for idempotent and transactional producers alike
// (ident_pid.go). An idempotent producer's answer needs no upstream call
// (upstream sessions start lazily, per cluster, on its first batch there).
// A transactional producer's id is re-initialized upstream first, on
// routes.default and on every cluster this instance holds a session on, so
// older producers are fenced and their open transaction aborted there as a
// broker would; errors such as CONCURRENT_TRANSACTIONS come back as the
// client's answer, and it retries (txn_producers.go).
// With several instances (instances.go) an instance that does not
// coordinate the transactional id answers NOT_COORDINATOR, and the one that does
// forwards the init unvirtualized (txn_instances.go).

import "github.com/twmb/franz-go/pkg/kmsg"

func handleInitProducerID(rc *reqCtx, req *kmsg.InitProducerIDRequest) func() kmsg.Response {
	return func() kmsg.Response {
		// An empty transactional id is an idempotent producer, as
		// for the broker (TransactionCoordinator.handleInitProducerId).
		if req.TransactionalID == nil || *req.TransactionalID == "" {
			return rc.srv().initVirtualProducer(req)
		}
		s := rc.srv()
		if resp := s.notCoordinator(coordTxn, *req.TransactionalID, req); resp != nil {
			return resp // another instance coordinates the id (instances.go)
		}
		if s.txnDirect() {
			return rc.initTxnDirect(req) // several instances (txn_instances.go)
		}
		return rc.initTxnProducer(req)
	}
}
