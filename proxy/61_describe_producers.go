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
	return func() kmsg.Response {
		s := rc.srv()
		router := s.routes()
		split := newLeaderSplit[int32](rc, func(partition int32, code int16) kmsg.DescribeProducersResponseTopicPartition {
			p := kmsg.NewDescribeProducersResponseTopicPartition()
			p.Partition, p.ErrorCode = partition, code
			return p
		})
		for _, t := range req.Topics {
			cluster := router.ProduceCluster(t.Topic, rc.client)
			for _, p := range t.Partitions {
				pl, code := s.offsetsPlan(cluster, t.Topic, p, false)
				if code != 0 {
					split.fail(t.Topic, p, code)
					continue
				}
				split.add(pl, t.Topic, p, p)
			}
		}
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		merged := split.run(func(topics []topicParts[int32]) kmsg.Request {
			sub := *req
			sub.Topics = nil
			for _, tp := range topics {
				sub.Topics = append(sub.Topics, kmsg.DescribeProducersRequestTopic{Topic: tp.topic, Partitions: tp.parts})
			}
			return &sub
		}, func(a *splitAnswer, r kmsg.Response) {
			dr := r.(*kmsg.DescribeProducersResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, dr.ThrottleMillis)
			for _, t := range dr.Topics {
				for _, p := range t.Partitions {
					if pl, ok := a.take(t.Topic, p.Partition, p.ErrorCode); ok {
						virtDescribeProducersPartition(pl, &p)
						split.answer(t.Topic, p)
					}
				}
			}
		})
		for _, tp := range merged {
			resp.Topics = append(resp.Topics, kmsg.DescribeProducersResponseTopic{Topic: tp.topic, Partitions: tp.parts})
		}
		return resp
	}
}
