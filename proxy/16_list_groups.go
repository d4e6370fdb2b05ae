package proxy

// ListGroups (key 16), accepted v0-5. Route: every broker of every cluster;
// the group lists are merged (a group homed on either cluster is listed).

import "github.com/twmb/franz-go/pkg/kmsg"

func handleListGroups(rc *reqCtx, req *kmsg.ListGroupsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
		seen := map[string]bool{}
		rc.broadcast(req, func(r kmsg.Response) {
			lr := r.(*kmsg.ListGroupsResponse)
			if lr.ErrorCode != 0 && resp.ErrorCode == 0 {
				resp.ErrorCode = lr.ErrorCode
			}
			for _, g := range lr.Groups {
				if !seen[g.Group] {
					seen[g.Group] = true
					resp.Groups = append(resp.Groups, g)
				}
			}
		})
		return resp
	}
}
