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
	return func() kmsg.Response {
		s := rc.srv()
		router := s.routes()
		split := newLeaderSplit[kmsg.ListOffsetsRequestTopicPartition](rc, func(partition int32, code int16) kmsg.ListOffsetsResponseTopicPartition {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Partition, p.ErrorCode, p.Offset, p.Timestamp = partition, code, -1, -1
			return p
		})
		for _, t := range req.Topics {
			cluster := router.FetchCluster(t.Topic, rc.client, rc.group())
			for _, p := range t.Partitions {
				pl, code := s.offsetsPlan(cluster, t.Topic, p.Partition, router.Replicated(t.Topic))
				if code != 0 {
					split.fail(t.Topic, p.Partition, code)
					continue
				}
				epochsListOffsetsRequestPartition(&p)
				split.add(pl, t.Topic, p.Partition, p)
			}
		}
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		merged := split.run(func(topics []topicParts[kmsg.ListOffsetsRequestTopicPartition]) kmsg.Request {
			sub := *req
			sub.Topics = nil
			for _, tp := range topics {
				sub.Topics = append(sub.Topics, kmsg.ListOffsetsRequestTopic{Topic: tp.topic, Partitions: tp.parts})
			}
			return &sub
		}, func(a *splitAnswer, r kmsg.Response) {
			lr := r.(*kmsg.ListOffsetsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, lr.ThrottleMillis)
			for _, t := range lr.Topics {
				for _, p := range t.Partitions {
					if pl, ok := a.take(t.Topic, p.Partition, p.ErrorCode); ok {
						virtListOffsetsPartition(pl, &p)
						split.answer(t.Topic, p)
					}
				}
			}
		})
		for _, tp := range merged {
			resp.Topics = append(resp.Topics, kmsg.ListOffsetsResponseTopic{Topic: tp.topic, Partitions: tp.parts})
		}
		return resp
	}
}
