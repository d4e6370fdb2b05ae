package proxy

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// forEachGroup serves a request that names several groups (batched
// DescribeGroups, DeleteGroups, OffsetFetch v8+, ConsumerGroupDescribe): one
// sub-request per group, each to its own coordinator, in parallel; merge
// receives the answers in request order. Groups are few per request, so one
// request per group keeps the code obvious.
func (rc *reqCtx) forEachGroup(groups []string, build func(i int) kmsg.Request, merge func(i int, resp kmsg.Response)) {
	out := make([]kmsg.Response, len(groups))
	done := make(chan struct{}, len(groups))
	for i, g := range groups {
		go func() {
			sub := build(i)
			out[i] = rc.forwardCoordinator(rc.srv().routes().GroupCluster(g), coordGroup, g, sub)
			done <- struct{}{}
		}()
	}
	for range groups {
		<-done
	}
	for i := range groups {
		merge(i, out[i])
	}
}
