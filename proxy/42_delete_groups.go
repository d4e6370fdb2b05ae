package proxy

// DeleteGroups (key 42), accepted v0-2. Route: each group's home
// coordinator, one sub-request per group, merged in request order.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDeleteGroups(rc *reqCtx, req *kmsg.DeleteGroupsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
		rc.forEachGroup(req.Groups, func(i int) kmsg.Request {
			sub := *req
			sub.Groups = req.Groups[i : i+1]
			return &sub
		}, func(i int, r kmsg.Response) {
			if dr, ok := r.(*kmsg.DeleteGroupsResponse); ok && len(dr.Groups) > 0 {
				resp.Groups = append(resp.Groups, dr.Groups...)
				return
			}
			g := kmsg.NewDeleteGroupsResponseGroup()
			g.Group, g.ErrorCode = req.Groups[i], kerr.CoordinatorNotAvailable.Code
			resp.Groups = append(resp.Groups, g)
		})
		return resp
	}
}
