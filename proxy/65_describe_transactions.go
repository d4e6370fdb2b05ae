package proxy

// DescribeTransactions (key 65), accepted v0. Route: each transactional id's
// coordinator on the cluster of its open (or last) transaction, else
// routes.default; one sub-request per id, merged in order (groups_split.go).
// Rewrites: a state whose producer is this instance's upstream session for
// the id on that cluster shows the virtual PID and epoch the client holds.

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"
)

var txnKeys = perKey{keys: "TransactionalIDs", answers: "TransactionStates", keyField: "TransactionalID", typ: coordTxn,
	cluster: func(rc *reqCtx, id string) string { return rc.srv().txnRoute(id) },
	fix: func(rc *reqCtx, cluster string, a reflect.Value) {
		rc.srv().pids.txnVirtualizeState(cluster, a.Addr().Interface().(*kmsg.DescribeTransactionsResponseTransactionState))
	}}

func handleDescribeTransactions(rc *reqCtx, req *kmsg.DescribeTransactionsRequest) func() kmsg.Response {
	return rc.forwardPerKey(req, txnKeys)
}
