package proxy

// ListTransactions (key 66), accepted v0-2. Route: every broker of every
// cluster, merged. Producer ids are the clusters' own.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleListTransactions(rc *reqCtx, req *kmsg.ListTransactionsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
		rc.broadcast(req, func(r kmsg.Response) {
			lr := r.(*kmsg.ListTransactionsResponse)
			resp.TransactionStates = append(resp.TransactionStates, lr.TransactionStates...)
			resp.UnknownStateFilters = lr.UnknownStateFilters
		})
		return resp
	}
}
