package proxy

// ConsumerGroupHeartbeat (key 68, KIP-848), accepted v0-1. Route: the group's
// home coordinator. Topic ids in the assignment are the home cluster's, which
// is also the cluster clients see ids from while one cluster serves every
// topic; virtual topic ids come with per-topic routing (a later issue).

import "github.com/twmb/franz-go/pkg/kmsg"

func init() {
	registerGroupAPI(kmsg.ConsumerGroupHeartbeat, 0, 1, func(r kmsg.Request) string { return r.(*kmsg.ConsumerGroupHeartbeatRequest).Group })
}
