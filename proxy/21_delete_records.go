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
	return func() kmsg.Response {
		s := rc.srv()
		router := s.routes()
		split := newLeaderSplit[kmsg.DeleteRecordsRequestTopicPartition](rc, func(partition int32, code int16) kmsg.DeleteRecordsResponseTopicPartition {
			p := kmsg.NewDeleteRecordsResponseTopicPartition()
			p.Partition, p.ErrorCode, p.LowWatermark = partition, code, -1
			return p
		})
		for _, t := range req.Topics {
			if router.Replicated(t.Topic) {
				rc.cc.log.Warn("DeleteRecords refused: the topic is replicated, and a delete on one cluster would not reach its copy (docs/decisions/007)", "topic", t.Topic)
				for _, p := range t.Partitions {
					split.fail(t.Topic, p.Partition, kerr.PolicyViolation.Code)
				}
				continue
			}
			cluster := router.ProduceCluster(t.Topic, rc.client)
			for _, p := range t.Partitions {
				pl, code := s.offsetsPlan(cluster, t.Topic, p.Partition, false)
				if code != 0 {
					split.fail(t.Topic, p.Partition, code)
					continue
				}
				offsetsDeleteRecordsRequestPartition(pl.offsets, &p)
				split.add(pl, t.Topic, p.Partition, p)
			}
		}
		resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
		merged := split.run(func(topics []topicParts[kmsg.DeleteRecordsRequestTopicPartition]) kmsg.Request {
			sub := *req
			sub.Topics = nil
			for _, tp := range topics {
				sub.Topics = append(sub.Topics, kmsg.DeleteRecordsRequestTopic{Topic: tp.topic, Partitions: tp.parts})
			}
			return &sub
		}, func(a *splitAnswer, r kmsg.Response) {
			dr := r.(*kmsg.DeleteRecordsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, dr.ThrottleMillis)
			for _, t := range dr.Topics {
				for _, p := range t.Partitions {
					if pl, ok := a.take(t.Topic, p.Partition, p.ErrorCode); ok {
						virtDeleteRecordsPartition(pl, &p)
						split.answer(t.Topic, p)
					}
				}
			}
		})
		for _, tp := range merged {
			resp.Topics = append(resp.Topics, kmsg.DeleteRecordsResponseTopic{Topic: tp.topic, Partitions: tp.parts})
		}
		return resp
	}
}
