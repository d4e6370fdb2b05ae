package proxy

// CreateTopics (key 19), accepted v0-7. Route: each topic to its route's
// cluster(s): both clusters when its produce and fetch routes differ, so
// the partition counts match. Rewrites: TopicID (v7+) is the virtual id.
// A topic created on two clusters answers with the first error, if any.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleCreateTopics(rc *reqCtx, req *kmsg.CreateTopicsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
		names := make([]string, len(req.Topics))
		for i, t := range req.Topics {
			names[i] = t.Topic
		}
		seen := map[string]int{}
		rc.forwardSplit(names, func(idx []int) kmsg.Request {
			sub := *req
			sub.Topics = nil
			for _, i := range idx {
				sub.Topics = append(sub.Topics, req.Topics[i])
			}
			return &sub
		}, func(cluster string, r kmsg.Response) {
			cr := r.(*kmsg.CreateTopicsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, cr.ThrottleMillis)
			for _, t := range cr.Topics {
				if t.TopicID != ([16]byte{}) {
					if uc, ok := s.clusters[cluster]; ok {
						uc.learnTopicID(t.Topic, t.TopicID)
					}
					t.TopicID = s.virtualOf(cluster, t.TopicID)
				}
				mergeAnswer(&resp.Topics, seen, t.Topic, t, func(q *kmsg.CreateTopicsResponseTopic) (*int16, **string) { return &q.ErrorCode, &q.ErrorMessage })
			}
		})
		return resp
	}
}
