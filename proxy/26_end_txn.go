package proxy

// EndTxn (key 26), accepted v0-5. Route: the transaction's coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerTxnAPI(kmsg.EndTxn, 0, 5, func(r kmsg.Request) string { return r.(*kmsg.EndTxnRequest).TransactionalID })
}
