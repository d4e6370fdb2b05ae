package proxy

// DescribeGroups (key 15), accepted v0-6. Route: each group's home
// coordinator, one sub-request per group, merged in request order
// (groups_split.go).

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDescribeGroups(rc *reqCtx, req *kmsg.DescribeGroupsRequest) func() kmsg.Response {
	return rc.forwardPerKey(req, groupKeys)
}
