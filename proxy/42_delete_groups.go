package proxy

// DeleteGroups (key 42), accepted v0-2. Route: each group's home
// coordinator, one sub-request per group, merged in request order
// (groups_split.go).

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDeleteGroups(rc *reqCtx, req *kmsg.DeleteGroupsRequest) func() kmsg.Response {
	return rc.forwardPerKey(req, groupKeys)
}
