package proxy

// LeaveGroup (key 13), accepted v0-5. Route: the group's home coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleLeaveGroup(rc *reqCtx, req *kmsg.LeaveGroupRequest) func() kmsg.Response {
	return rc.toGroupCoordinator(req, req.Group)
}
