package proxy

// Heartbeat (key 12), accepted v0-4. Route: the group's home coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.Heartbeat, 0, 4, func(r kmsg.Request) string { return r.(*kmsg.HeartbeatRequest).Group })
}
