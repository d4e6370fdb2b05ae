package proxy

// OffsetForLeaderEpoch (key 23), accepted v2 only: Java validates positions
// with v3+, and kproxy shows no epochs (virt_epochs.go), so clients have
// nothing to validate. Route: each topic's fetch route, each partition to
// its leader; split per broker and merged, every partition answered
// (split_leader.go).
// Rewrites (virt.go): the client's CurrentLeaderEpoch is dropped (-1) so no
// broker fences it; the answer's LeaderEpoch is -1 and its EndOffset
// virtual (decision 003); a partition whose map is not ready yet gets
// NOT_LEADER_FOR_PARTITION.

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleOffsetForLeaderEpoch(rc *reqCtx, req *kmsg.OffsetForLeaderEpochRequest) func() kmsg.Response {
	type (
		asked  = kmsg.OffsetForLeaderEpochRequestTopicPartition
		answer = kmsg.OffsetForLeaderEpochResponseTopicPartition
	)
	return func() kmsg.Response {
		return forwardByLeader(rc, byLeader[asked, answer]{
			route:      readRoute,
			topics:     topicsOf(req.Topics, func(t kmsg.OffsetForLeaderEpochRequestTopic) (string, []asked) { return t.Topic, t.Partitions }),
			partition:  func(p asked) int32 { return p.Partition },
			toUpstream: func(_ partPlan, p *asked) { epochsOffsetForLeaderEpochRequestPartition(p) },
			errorPart: func(partition int32, code int16) answer {
				p := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				p.Partition, p.ErrorCode, p.LeaderEpoch, p.EndOffset = partition, code, -1, -1
				return p
			},
			subRequest: func(topics []topicParts[asked]) kmsg.Request {
				sub := *req
				sub.Topics = kmsgTopics(topics, func(topic string, parts []asked) kmsg.OffsetForLeaderEpochRequestTopic {
					return kmsg.OffsetForLeaderEpochRequestTopic{Topic: topic, Partitions: parts}
				})
				return &sub
			},
			answer: func(r kmsg.Response) ([]topicParts[answer], int32) {
				a := r.(*kmsg.OffsetForLeaderEpochResponse)
				return topicsOf(a.Topics, func(t kmsg.OffsetForLeaderEpochResponseTopic) (string, []answer) { return t.Topic, t.Partitions }), a.ThrottleMillis
			},
			answerKey: func(p *answer) (int32, int16) { return p.Partition, p.ErrorCode },
			toClient:  virtOffsetForLeaderEpochPartition,
			respond: func(topics []topicParts[answer], throttle int32) kmsg.Response {
				resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
				resp.ThrottleMillis = throttle
				resp.Topics = kmsgTopics(topics, func(topic string, parts []answer) kmsg.OffsetForLeaderEpochResponseTopic {
					return kmsg.OffsetForLeaderEpochResponseTopic{Topic: topic, Partitions: parts}
				})
				return resp
			},
		})
	}
}
