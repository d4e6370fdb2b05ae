package proxy

// SyncGroup (key 14), accepted v0-5. Route: the group's home coordinator, on
// the group connection. Assignments carry topic names: nothing to rewrite.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.SyncGroup, 0, 5, func(r kmsg.Request) string { return r.(*kmsg.SyncGroupRequest).Group })
}
