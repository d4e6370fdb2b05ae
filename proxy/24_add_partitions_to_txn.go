package proxy

// AddPartitionsToTxn (key 24), accepted v0-3: the client versions. v4+ is the
// broker-to-broker batched form (KIP-890) and is not advertised.
// Route: the transaction's coordinator. Errors: per partition.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerTxnAPI(kmsg.AddPartitionsToTxn, 0, 3, func(r kmsg.Request) string { return r.(*kmsg.AddPartitionsToTxnRequest).TransactionalID })
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
