package proxy

// CreatePartitions (key 37), accepted v0-3. Route: each topic to its route's
// cluster(s), so a split-route topic keeps the same partition count on both
// (split_cluster.go: every topic is answered).

import "github.com/twmb/franz-go/pkg/kmsg"

func handleCreatePartitions(rc *reqCtx, req *kmsg.CreatePartitionsRequest) func() kmsg.Response {
	return func() kmsg.Response { return rc.forwardListSplit(req, rc.topicsSplit(nil)) }
}
