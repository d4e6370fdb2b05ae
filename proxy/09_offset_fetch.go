package proxy

// OffsetFetch (key 9), accepted v0-9 (v10 names topics by id; capped like
// OffsetCommit). Route: each group's home coordinator, plus the cluster that
// holds commits for topics the home cluster lacks (group_offsets.go); v8+
// batches groups, answered group by group. Committed offsets are virtual and
// pass through; epochs are cleared (virt_epochs.go). A group held for a
// home move answers NOT_COORDINATOR (group_hold.go), and so does a group
// another instance coordinates (instances.go).

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleOffsetFetch(rc *reqCtx, req *kmsg.OffsetFetchRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		if req.Version >= 8 {
			for _, g := range req.Groups {
				resp.Groups = append(resp.Groups, rc.groupOffsetsOrHeld(req, g))
			}
			return resp
		}
		g := kmsg.NewOffsetFetchRequestGroup()
		g.Group = req.Group
		if req.Topics != nil {
			g.Topics = []kmsg.OffsetFetchRequestGroupTopic{}
			for _, t := range req.Topics {
				g.Topics = append(g.Topics, kmsg.OffsetFetchRequestGroupTopic{Topic: t.Topic, Partitions: t.Partitions})
			}
		}
		got := rc.groupOffsetsOrHeld(req, g)
		resp.ErrorCode, resp.Topics = got.ErrorCode, topicsOfGroup(got.Topics)
		return resp
	}
}
