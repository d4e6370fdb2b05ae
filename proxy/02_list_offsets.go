package proxy

// ListOffsets (key 2), accepted v1-11. Route: each topic's fetch route, each
// partition to its leader; split per upstream broker and merged, every
// partition answered (split_leader.go).
// Rewrites (virt.go): no epochs; offsets virtual through the partition's
// offset map. A partition whose map is not ready yet gets
// NOT_LEADER_FOR_PARTITION (retriable), as in Fetch: cluster offsets never
// reach a client.

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleListOffsets(rc *reqCtx, req *kmsg.ListOffsetsRequest) func() kmsg.Response {
	type (
		asked  = kmsg.ListOffsetsRequestTopicPartition
		answer = kmsg.ListOffsetsResponseTopicPartition
	)
	return func() kmsg.Response {
		return forwardByLeader(rc, byLeader[asked, answer]{
			route:      readRoute,
			topics:     topicsOf(req.Topics, func(t kmsg.ListOffsetsRequestTopic) (string, []asked) { return t.Topic, t.Partitions }),
			partition:  func(p asked) int32 { return p.Partition },
			toUpstream: func(_ partPlan, p *asked) { epochsListOffsetsRequestPartition(p) },
			errorPart: func(partition int32, code int16) answer {
				p := kmsg.NewListOffsetsResponseTopicPartition()
				p.Partition, p.ErrorCode, p.Offset, p.Timestamp = partition, code, -1, -1
				return p
			},
			subRequest: func(topics []topicParts[asked]) kmsg.Request {
				sub := *req
				sub.Topics = kmsgTopics(topics, func(topic string, parts []asked) kmsg.ListOffsetsRequestTopic {
					return kmsg.ListOffsetsRequestTopic{Topic: topic, Partitions: parts}
				})
				return &sub
			},
			answer: func(r kmsg.Response) ([]topicParts[answer], int32) {
				a := r.(*kmsg.ListOffsetsResponse)
				return topicsOf(a.Topics, func(t kmsg.ListOffsetsResponseTopic) (string, []answer) { return t.Topic, t.Partitions }), a.ThrottleMillis
			},
			answerKey: func(p *answer) (int32, int16) { return p.Partition, p.ErrorCode },
			toClient:  virtListOffsetsPartition,
			respond: func(topics []topicParts[answer], throttle int32) kmsg.Response {
				resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
				resp.ThrottleMillis = throttle
				resp.Topics = kmsgTopics(topics, func(topic string, parts []answer) kmsg.ListOffsetsResponseTopic {
					return kmsg.ListOffsetsResponseTopic{Topic: topic, Partitions: parts}
				})
				return resp
			},
		})
	}
}
