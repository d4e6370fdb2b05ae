package proxy

// OffsetCommit (key 8), accepted v0-9 (v10 names topics by id, KIP-848
// era; capped so commits carry names, which need no translation).
// Route: the group's home coordinator; commits for topics the home cluster
// does not have go to the cluster that has them (group_offsets.go).
// Offsets are stored as the client sent them (virtual offsets). While the
// group's home moves, commits are queued, and commits of members that have
// not rejoined since are replayed (group_hold.go).
// Errors: per partition, mirroring the request.
// With several instances (instances.go) an instance that does not
// coordinate the group answers NOT_COORDINATOR in every partition.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleOffsetCommit(rc *reqCtx, req *kmsg.OffsetCommitRequest) func() kmsg.Response {
	return func() kmsg.Response {
		if resp := rc.srv().notCoordinator(coordGroup, req.Group, req); resp != nil {
			return resp // another instance coordinates the group (instances.go)
		}
		rc.noteMember(req.Group, nil) // coordinated.go: membership
		queued, held, done := rc.gateCommit(req)
		if held {
			return queued // held during a group move (group_hold.go)
		}
		defer done()
		return rc.afterMoveCommit(req, rc.commitAt(rc.srv().routes().GroupCluster(req.Group), req))
	}
}

func init() {
	errorFillers[kmsg.OffsetCommit.Int16()] = fillErrors(func(req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, code int16) {
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			completeCommit(t, &rt, code)
			resp.Topics = append(resp.Topics, rt)
		}
	})
}
