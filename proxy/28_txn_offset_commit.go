package proxy

// TxnOffsetCommit (key 28), accepted v0-5. Route: the group's home
// coordinator (which must be on the transaction's cluster: a transaction may
// not span clusters). Errors: per partition, mirroring the request.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.TxnOffsetCommit, 0, 5, func(r kmsg.Request) string { return r.(*kmsg.TxnOffsetCommitRequest).Group })
	errorFillers[kmsg.TxnOffsetCommit.Int16()] = func(kreq kmsg.Request, kresp kmsg.Response, code int16) {
		req, resp := kreq.(*kmsg.TxnOffsetCommitRequest), kresp.(*kmsg.TxnOffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	}
}
