package proxy

// OffsetDelete (key 47), accepted v0. Route: the group's home coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleOffsetDelete(rc *reqCtx, req *kmsg.OffsetDeleteRequest) func() kmsg.Response {
	return rc.toGroupCoordinator(req, req.Group)
}
