package proxy

// DeleteRecords (key 21), accepted v0-2. Route: each topic's produce route,
// each partition to its leader; split per broker and merged, every
// partition answered (split_leader.go).
// Rewrites (virt.go): the requested offset virtual -> cluster, the answer's
// LowWatermark cluster -> virtual, for a topic whose home's offsets go
// through a map (after a cutover).
// Refused: a replicated topic (routes' replicate list) gets POLICY_VIOLATION
// for every partition, and kproxy logs why: a delete on one cluster would
// not reach the copy, and a delete on the source past what was copied
// would stop the copy of that partition (docs/decisions/007).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDeleteRecords(rc *reqCtx, req *kmsg.DeleteRecordsRequest) func() kmsg.Response {
	type (
		asked  = kmsg.DeleteRecordsRequestTopicPartition
		answer = kmsg.DeleteRecordsResponseTopicPartition
	)
	return func() kmsg.Response {
		return forwardByLeader(rc, byLeader[asked, answer]{
			route:      deleteRecordsRoute,
			topics:     topicsOf(req.Topics, func(t kmsg.DeleteRecordsRequestTopic) (string, []asked) { return t.Topic, t.Partitions }),
			partition:  func(p asked) int32 { return p.Partition },
			toUpstream: func(pl partPlan, p *asked) { offsetsDeleteRecordsRequestPartition(pl.offsets, p) },
			errorPart: func(partition int32, code int16) answer {
				p := kmsg.NewDeleteRecordsResponseTopicPartition()
				p.Partition, p.ErrorCode, p.LowWatermark = partition, code, -1
				return p
			},
			subRequest: func(topics []topicParts[asked]) kmsg.Request {
				sub := *req
				sub.Topics = kmsgTopics(topics, func(topic string, parts []asked) kmsg.DeleteRecordsRequestTopic {
					return kmsg.DeleteRecordsRequestTopic{Topic: topic, Partitions: parts}
				})
				return &sub
			},
			answer: func(r kmsg.Response) ([]topicParts[answer], int32) {
				a := r.(*kmsg.DeleteRecordsResponse)
				return topicsOf(a.Topics, func(t kmsg.DeleteRecordsResponseTopic) (string, []answer) { return t.Topic, t.Partitions }), a.ThrottleMillis
			},
			answerKey: func(p *answer) (int32, int16) { return p.Partition, p.ErrorCode },
			toClient:  virtDeleteRecordsPartition,
			respond: func(topics []topicParts[answer], throttle int32) kmsg.Response {
				resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
				resp.ThrottleMillis = throttle
				resp.Topics = kmsgTopics(topics, func(topic string, parts []answer) kmsg.DeleteRecordsResponseTopic {
					return kmsg.DeleteRecordsResponseTopic{Topic: topic, Partitions: parts}
				})
				return resp
			},
		})
	}
}

// deleteRecordsRoute refuses a replicated topic (see above) and routes any
// other as its producers write it.
func deleteRecordsRoute(rc *reqCtx, router Router, topic string) leaderRoute {
	if router.Replicated(topic) {
		rc.cc.log.Warn("DeleteRecords refused: the topic is replicated, and a delete on one cluster would not reach its copy (docs/decisions/007)", "topic", topic)
		return leaderRoute{refused: kerr.PolicyViolation.Code}
	}
	return writeRoute(rc, router, topic)
}
