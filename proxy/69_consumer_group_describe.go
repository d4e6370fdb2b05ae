package proxy

// ConsumerGroupDescribe (key 69, KIP-848), accepted v0-1. Route: each
// group's home coordinator, one sub-request per group, merged in order
// (groups_split.go). Rewrites: assignment topic ids are virtual.

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleConsumerGroupDescribe(rc *reqCtx, req *kmsg.ConsumerGroupDescribeRequest) func() kmsg.Response {
	pk := groupKeys
	pk.fix = func(rc *reqCtx, home string, a reflect.Value) {
		g := a.Addr().Interface().(*kmsg.ConsumerGroupDescribeResponseGroup)
		for m := range g.Members {
			mem := &g.Members[m]
			for _, as := range []*kmsg.Assignment{&mem.Assignment, &mem.TargetAssignment} {
				for t := range as.TopicPartitions {
					as.TopicPartitions[t].TopicID = rc.srv().virtualOf(home, as.TopicPartitions[t].TopicID)
				}
			}
		}
	}
	return rc.forwardPerKey(req, pk)
}
