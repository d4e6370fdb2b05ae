package proxy

// AddOffsetsToTxn (key 25), accepted v0-4. Route: the transaction's
// coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerTxnAPI(kmsg.AddOffsetsToTxn, 0, 4, func(r kmsg.Request) string { return r.(*kmsg.AddOffsetsToTxnRequest).TransactionalID })
}
