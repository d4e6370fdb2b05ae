package proxy

// InitProducerId (key 22), accepted v0-5. Route: a transactional producer's
// coordinator on its transaction cluster; an idempotent producer (null
// transactional id) to any broker of the default cluster.
// Not done: virtual producer ids (one PID per upstream cluster, batch header
// rewrite) come with per-topic routing; until then a PID is the default
// cluster's.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	register(kmsg.InitProducerID, 0, 5, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.InitProducerIDRequest)
		return func() kmsg.Response {
			if req.TransactionalID == nil {
				return rc.forwardAny(rc.srv().routes().DefaultCluster(), req)
			}
			id := *req.TransactionalID
			return rc.forwardCoordinator(rc.srv().routes().TxnCluster(id), coordTxn, id, req)
		}
	})
}
