package proxy

// DescribeTransactions (key 65), accepted v0. Route: each transactional id's
// coordinator, one sub-request per id, merged in order.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(kmsg.DescribeTransactions, 0, 0, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.DescribeTransactionsRequest)
		return func() kmsg.Response {
			resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
			for _, id := range req.TransactionalIDs {
				sub := *req
				sub.TransactionalIDs = []string{id}
				r := rc.forwardCoordinator(rc.srv().routes().TxnCluster(id), coordTxn, id, &sub)
				if dr, ok := r.(*kmsg.DescribeTransactionsResponse); ok && len(dr.TransactionStates) > 0 {
					resp.TransactionStates = append(resp.TransactionStates, dr.TransactionStates...)
					continue
				}
				st := kmsg.NewDescribeTransactionsResponseTransactionState()
				st.TransactionalID, st.ErrorCode = id, kerr.CoordinatorNotAvailable.Code
				resp.TransactionStates = append(resp.TransactionStates, st)
			}
			return resp
		}
	})
}
