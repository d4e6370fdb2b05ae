package proxy

// CreatePartitions (key 37), accepted v0-3. Route: each topic to its route's
// cluster(s), so a split-route topic keeps the same partition count on both
// (split_cluster.go: every topic is answered). The topics leave kproxy's
// Metadata views (metadata_view.go) once the clusters answered.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleCreatePartitions(rc *reqCtx, req *kmsg.CreatePartitionsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		names := make([]string, len(req.Topics))
		for i, t := range req.Topics {
			names[i] = t.Topic
		}
		defer rc.srv().metadataChanged(names)
		return rc.forwardListSplit(req, rc.topicsSplit(nil))
	}
}
