package proxy

// SyncGroup (key 14), accepted v0-5. Route: the group's home coordinator, on
// the group connection. Assignments carry topic names: nothing to rewrite.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleSyncGroup(rc *reqCtx, req *kmsg.SyncGroupRequest) func() kmsg.Response {
	return rc.toGroupCoordinator(req, req.Group)
}
