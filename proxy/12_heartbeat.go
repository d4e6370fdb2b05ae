package proxy

// Heartbeat (key 12), accepted v0-4. Route: the group's home coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleHeartbeat(rc *reqCtx, req *kmsg.HeartbeatRequest) func() kmsg.Response {
	return rc.toGroupCoordinator(req, req.Group)
}
