package proxy

// OffsetCommit (key 8), accepted v0-9 (v10 names topics by id, KIP-848
// era; capped so commits carry names, which need no translation).
// Route: the group's home coordinator.
// Offsets are stored as the client sent them (virtual offsets).
// Errors: per partition, mirroring the request.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.OffsetCommit, 0, 9, func(r kmsg.Request) string { return r.(*kmsg.OffsetCommitRequest).Group })
	errorFillers[kmsg.OffsetCommit.Int16()] = func(kreq kmsg.Request, kresp kmsg.Response, code int16) {
		req, resp := kreq.(*kmsg.OffsetCommitRequest), kresp.(*kmsg.OffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	}
}
