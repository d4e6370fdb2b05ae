package proxy

// LeaveGroup (key 13), accepted v0-5. Route: the group's home coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.LeaveGroup, 0, 5, func(r kmsg.Request) string { return r.(*kmsg.LeaveGroupRequest).Group })
}
