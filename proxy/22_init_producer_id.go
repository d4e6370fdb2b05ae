package proxy

// InitProducerId (key 22), accepted v0-5. Route: a transactional producer's
// coordinator on its transaction cluster. An idempotent producer (null
// transactional id) is answered by kproxy with a virtual PID (ident_pid.go).
// An EndTxn (v5, transactions V2) epoch bump returns the coordinator's PID.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	register(kmsg.InitProducerID, 0, 5, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.InitProducerIDRequest)
		return func() kmsg.Response {
			if req.TransactionalID == nil {
				return rc.srv().initVirtualProducer(req)
			}
			id := *req.TransactionalID
			return rc.forwardCoordinator(rc.srv().routes().TxnCluster(id), coordTxn, id, req)
		}
	})
}
