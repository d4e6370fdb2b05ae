package proxy

// JoinGroup (key 11), accepted v0-9. Route: the group's home cluster
// coordinator, on a connection of its own (it blocks for the rebalance).
// Rewrites: none; member metadata carries topic names, not ids.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.JoinGroup, 0, 9, func(r kmsg.Request) string { return r.(*kmsg.JoinGroupRequest).Group })
}
