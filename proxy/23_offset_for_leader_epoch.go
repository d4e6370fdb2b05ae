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
	return func() kmsg.Response {
		s := rc.srv()
		router := s.routes()
		split := newLeaderSplit[kmsg.OffsetForLeaderEpochRequestTopicPartition](rc, func(partition int32, code int16) kmsg.OffsetForLeaderEpochResponseTopicPartition {
			p := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			p.Partition, p.ErrorCode, p.LeaderEpoch, p.EndOffset = partition, code, -1, -1
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
				epochsOffsetForLeaderEpochRequestPartition(&p)
				split.add(pl, t.Topic, p.Partition, p)
			}
		}
		resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		merged := split.run(func(topics []topicParts[kmsg.OffsetForLeaderEpochRequestTopicPartition]) kmsg.Request {
			sub := *req
			sub.Topics = nil
			for _, tp := range topics {
				sub.Topics = append(sub.Topics, kmsg.OffsetForLeaderEpochRequestTopic{Topic: tp.topic, Partitions: tp.parts})
			}
			return &sub
		}, func(a *splitAnswer, r kmsg.Response) {
			or := r.(*kmsg.OffsetForLeaderEpochResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, or.ThrottleMillis)
			for _, t := range or.Topics {
				for _, p := range t.Partitions {
					if pl, ok := a.take(t.Topic, p.Partition, p.ErrorCode); ok {
						virtOffsetForLeaderEpochPartition(pl, &p)
						split.answer(t.Topic, p)
					}
				}
			}
		})
		for _, tp := range merged {
			resp.Topics = append(resp.Topics, kmsg.OffsetForLeaderEpochResponseTopic{Topic: tp.topic, Partitions: tp.parts})
		}
		return resp
	}
}
