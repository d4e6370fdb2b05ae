package proxy

// DeleteTopics (key 20), accepted v0-6. Route: each topic to its route's
// cluster(s). Topics named by virtual id (v6+) are sent by name.
// Rewrites: response TopicID is the virtual id.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDeleteTopics(rc *reqCtx, req *kmsg.DeleteTopicsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
		// Normalize to names (v0-5 TopicNames, v6+ Topics by name or id).
		var names []string
		if req.Version < 6 {
			names = append(names, req.TopicNames...)
		} else {
			for _, t := range req.Topics {
				if t.Topic != nil {
					names = append(names, *t.Topic)
					continue
				}
				n, ok := s.topicIDs.name(t.TopicID)
				if !ok {
					rt := kmsg.NewDeleteTopicsResponseTopic()
					rt.TopicID, rt.ErrorCode = t.TopicID, kerr.UnknownTopicID.Code
					resp.Topics = append(resp.Topics, rt)
					continue
				}
				names = append(names, n)
			}
		}
		seen := map[string]int{}
		rc.forwardSplit(names, func(idx []int) kmsg.Request {
			sub := *req
			sub.TopicNames, sub.Topics = nil, nil
			for _, i := range idx {
				sub.TopicNames = append(sub.TopicNames, names[i])
				t := kmsg.NewDeleteTopicsRequestTopic()
				t.Topic = kmsg.StringPtr(names[i])
				sub.Topics = append(sub.Topics, t)
			}
			return &sub
		}, func(cluster string, r kmsg.Response) {
			dr := r.(*kmsg.DeleteTopicsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, dr.ThrottleMillis)
			for _, t := range dr.Topics {
				t.TopicID = s.virtualOf(cluster, t.TopicID)
				if t.Topic == nil {
					continue
				}
				mergeAnswer(&resp.Topics, seen, *t.Topic, t, func(q *kmsg.DeleteTopicsResponseTopic) (*int16, **string) { return &q.ErrorCode, &q.ErrorMessage })
			}
		})
		return resp
	}
}
