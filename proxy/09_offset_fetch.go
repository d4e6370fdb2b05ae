package proxy

// OffsetFetch (key 9), accepted v0-9 (v10 names topics by id; capped like
// OffsetCommit). Route: each group's home coordinator;
// v8+ batches groups, which are split per group and merged. Committed offsets
// are virtual and pass through.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(kmsg.OffsetFetch, 0, 9, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.OffsetFetchRequest)
		return func() kmsg.Response {
			if req.Version < 8 {
				return rc.forwardCoordinator(rc.srv().routes().GroupCluster(req.Group), coordGroup, req.Group, req)
			}
			resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
			names := make([]string, len(req.Groups))
			for i, g := range req.Groups {
				names[i] = g.Group
			}
			rc.forEachGroup(names, func(i int) kmsg.Request {
				sub := *req
				sub.Groups = req.Groups[i : i+1]
				return &sub
			}, func(i int, r kmsg.Response) {
				if or, ok := r.(*kmsg.OffsetFetchResponse); ok && len(or.Groups) > 0 {
					resp.ThrottleMillis = max(resp.ThrottleMillis, or.ThrottleMillis)
					resp.Groups = append(resp.Groups, or.Groups...)
					return
				}
				g := kmsg.NewOffsetFetchResponseGroup()
				g.Group, g.ErrorCode = names[i], kerr.CoordinatorNotAvailable.Code
				if or, ok := r.(*kmsg.OffsetFetchResponse); ok && or.ErrorCode != 0 {
					g.ErrorCode = or.ErrorCode
				}
				resp.Groups = append(resp.Groups, g)
			})
			return resp
		}
	})
}
