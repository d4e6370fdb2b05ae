package proxy

// OffsetDelete (key 47), accepted v0. Route: the group's home coordinator.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.OffsetDelete, 0, 0, func(r kmsg.Request) string { return r.(*kmsg.OffsetDeleteRequest).Group })
}
