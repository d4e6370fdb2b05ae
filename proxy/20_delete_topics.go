package proxy

// DeleteTopics (key 20), accepted v0-6. Route: each topic to its route's
// cluster(s), every topic answered (split_cluster.go). Topics named by
// virtual id (v6+) are sent by name.
// Rewrites: response TopicID is the virtual id. The topics leave kproxy's
// Metadata views (metadata_view.go) once the clusters answered.

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
		defer s.metadataChanged(names)
		answers, throttle := splitByCluster(names, clusterSplit[string, kmsg.DeleteTopicsResponseTopic]{
			clusters: rc.topicClusters,
			send: func(cluster string, part []string) ([]kmsg.DeleteTopicsResponseTopic, int32, bool) {
				sub := *req
				sub.TopicNames, sub.Topics = part, nil
				for _, n := range part {
					t := kmsg.NewDeleteTopicsRequestTopic()
					t.Topic = kmsg.StringPtr(n)
					sub.Topics = append(sub.Topics, t)
				}
				dr, ok := rc.forwardAny(cluster, &sub).(*kmsg.DeleteTopicsResponse)
				if !ok {
					return nil, 0, false
				}
				for i := range dr.Topics {
					dr.Topics[i].TopicID = s.virtualOf(cluster, dr.Topics[i].TopicID)
				}
				return dr.Topics, dr.ThrottleMillis, true
			},
			itemKey: func(n string) string { return n },
			answerKey: func(t kmsg.DeleteTopicsResponseTopic) string {
				if t.Topic == nil {
					return ""
				}
				return *t.Topic
			},
			failed: func(n string, code int16, msg string) kmsg.DeleteTopicsResponseTopic {
				t := kmsg.NewDeleteTopicsResponseTopic()
				t.Topic, t.ErrorCode, t.ErrorMessage = kmsg.StringPtr(n), code, kmsg.StringPtr(msg)
				if id, ok := s.topicIDs.lookup(n); ok {
					t.TopicID = id
				}
				return t
			},
			errOf: func(t *kmsg.DeleteTopicsResponseTopic) (*int16, **string) { return &t.ErrorCode, &t.ErrorMessage },
		})
		resp.Topics = append(resp.Topics, answers...)
		resp.ThrottleMillis = throttle
		return resp
	}
}
