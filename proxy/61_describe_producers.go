package proxy

// DescribeProducers (key 61), accepted v0. Route: each topic's produce route,
// each partition to its leader; split per broker and merged, every
// partition answered (split_leader.go).
// Rewrites (virt.go): CurrentTxnStartOffset cluster -> virtual. Not done:
// ProducerID and ProducerEpoch are the cluster's (producer ids are virtual
// only in the APIs producers use, ident_pid.go).

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDescribeProducers(rc *reqCtx, req *kmsg.DescribeProducersRequest) func() kmsg.Response {
	type (
		asked  = int32 // a partition
		answer = kmsg.DescribeProducersResponseTopicPartition
	)
	return func() kmsg.Response {
		return forwardByLeader(rc, byLeader[asked, answer]{
			route:     writeRoute,
			topics:    topicsOf(req.Topics, func(t kmsg.DescribeProducersRequestTopic) (string, []asked) { return t.Topic, t.Partitions }),
			partition: func(p asked) int32 { return p },
			errorPart: func(partition int32, code int16) answer {
				p := kmsg.NewDescribeProducersResponseTopicPartition()
				p.Partition, p.ErrorCode = partition, code
				return p
			},
			subRequest: func(topics []topicParts[asked]) kmsg.Request {
				sub := *req
				sub.Topics = kmsgTopics(topics, func(topic string, parts []asked) kmsg.DescribeProducersRequestTopic {
					return kmsg.DescribeProducersRequestTopic{Topic: topic, Partitions: parts}
				})
				return &sub
			},
			answer: func(r kmsg.Response) ([]topicParts[answer], int32) {
				a := r.(*kmsg.DescribeProducersResponse)
				return topicsOf(a.Topics, func(t kmsg.DescribeProducersResponseTopic) (string, []answer) { return t.Topic, t.Partitions }), a.ThrottleMillis
			},
			answerKey: func(p *answer) (int32, int16) { return p.Partition, p.ErrorCode },
			toClient:  virtDescribeProducersPartition,
			respond: func(topics []topicParts[answer], throttle int32) kmsg.Response {
				resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
				resp.ThrottleMillis = throttle
				resp.Topics = kmsgTopics(topics, func(topic string, parts []answer) kmsg.DescribeProducersResponseTopic {
					return kmsg.DescribeProducersResponseTopic{Topic: topic, Partitions: parts}
				})
				return resp
			},
		})
	}
}
