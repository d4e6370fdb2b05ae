package proxy

// AddPartitionsToTxn (key 24), accepted v0-3: the client versions. v4+ is the
// broker-to-broker batched form (KIP-890) and is not advertised.
// Route: the transaction's coordinator. A transaction may not span clusters:
// if any partition's topic is routed to a cluster other than the
// transaction's, nothing is forwarded; those partitions get
// INVALID_TXN_STATE and the rest OPERATION_NOT_ATTEMPTED, as a broker
// answers a partly invalid request, and kproxy logs why.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(kmsg.AddPartitionsToTxn, 0, 3, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.AddPartitionsToTxnRequest)
		return func() kmsg.Response {
			router := rc.srv().routes()
			txnCluster := router.TxnCluster(req.TransactionalID)
			var offCluster []string
			for _, t := range req.Topics {
				if c := router.ProduceCluster(t.Topic, rc.client); c != txnCluster {
					offCluster = append(offCluster, t.Topic)
					rc.cc.log.Warn("refusing a transaction that would span clusters", "transactional_id", req.TransactionalID, "topic", t.Topic, "route", c, "txn_cluster", txnCluster)
				}
			}
			if len(offCluster) == 0 {
				return rc.forwardCoordinator(txnCluster, coordTxn, req.TransactionalID, req)
			}
			resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
			for _, t := range req.Topics {
				code := kerr.OperationNotAttempted.Code
				for _, o := range offCluster {
					if o == t.Topic {
						code = kerr.InvalidTxnState.Code
					}
				}
				rt := kmsg.NewAddPartitionsToTxnResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p, code
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
			return resp
		}
	})
	errorFillers[kmsg.AddPartitionsToTxn.Int16()] = func(kreq kmsg.Request, kresp kmsg.Response, code int16) {
		req, resp := kreq.(*kmsg.AddPartitionsToTxnRequest), kresp.(*kmsg.AddPartitionsToTxnResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	}
}
