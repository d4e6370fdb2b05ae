package proxy

// JoinGroup (key 11), accepted v0-9. Route: the group's home cluster
// coordinator, on a connection of its own (it blocks for the rebalance).
// Rewrites: none; member metadata carries topic names, not ids.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleJoinGroup(rc *reqCtx, req *kmsg.JoinGroupRequest) func() kmsg.Response {
	return rc.toGroupCoordinator(req, req.Group)
}
