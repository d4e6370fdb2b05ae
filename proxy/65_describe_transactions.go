package proxy

// DescribeTransactions (key 65), accepted v0. Route: each transactional id's
// coordinator on the cluster of its open (or last) transaction, else
// routes.default; one sub-request per id, merged in order.
// Rewrites: a state whose producer is this instance's upstream session for
// the id on that cluster shows the virtual PID and epoch the client holds.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDescribeTransactions(rc *reqCtx, req *kmsg.DescribeTransactionsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
		for _, id := range req.TransactionalIDs {
			sub := *req
			sub.TransactionalIDs = []string{id}
			cluster := s.txnRoute(id)
			r := rc.forwardCoordinator(cluster, coordTxn, id, &sub)
			if dr, ok := r.(*kmsg.DescribeTransactionsResponse); ok && len(dr.TransactionStates) > 0 {
				for i := range dr.TransactionStates {
					s.pids.txnVirtualizeState(cluster, &dr.TransactionStates[i])
				}
				resp.TransactionStates = append(resp.TransactionStates, dr.TransactionStates...)
				continue
			}
			st := kmsg.NewDescribeTransactionsResponseTransactionState()
			st.TransactionalID, st.ErrorCode = id, kerr.CoordinatorNotAvailable.Code
			resp.TransactionStates = append(resp.TransactionStates, st)
		}
		return resp
	}
}
