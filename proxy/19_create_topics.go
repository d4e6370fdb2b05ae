package proxy

// CreateTopics (key 19), accepted v0-7. Route: each topic to its route's
// cluster(s): both clusters when its produce and fetch routes differ, so
// the partition counts match (split_cluster.go: every topic is answered,
// REQUEST_TIMED_OUT for a cluster that did not answer). Rewrites: TopicID
// (v7+) is the virtual id. A topic created on two clusters answers with the
// first error, if any. The topics leave kproxy's Metadata views
// (metadata_view.go) once the clusters answered.

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleCreateTopics(rc *reqCtx, req *kmsg.CreateTopicsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		defer s.metadataChanged(createdTopics(req))
		return rc.forwardListSplit(req, rc.topicsSplit(func(cluster string, a reflect.Value) {
			t := a.Addr().Interface().(*kmsg.CreateTopicsResponseTopic)
			if t.TopicID != ([16]byte{}) {
				if uc, ok := s.clusters[cluster]; ok {
					uc.learnTopicID(t.Topic, t.TopicID)
				}
				t.TopicID = s.virtualOf(cluster, t.TopicID)
			}
		}))
	}
}

func createdTopics(req *kmsg.CreateTopicsRequest) []string {
	names := make([]string, len(req.Topics))
	for i, t := range req.Topics {
		names[i] = t.Topic
	}
	return names
}
