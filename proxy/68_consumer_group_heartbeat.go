package proxy

// ConsumerGroupHeartbeat (key 68, KIP-848), accepted v0-1. Route: the
// group's home coordinator. The assignment is computed by that coordinator
// from its own metadata and names its own topic ids: owned partitions in the
// request go up as the home cluster's ids, and the assignment comes back as
// virtual ids (virt_topicids.go). A subscribed topic that does not exist on
// the home cluster is never assigned (DESIGN.md §3a).
// With several instances (instances.go) an instance that does not
// coordinate the group answers NOT_COORDINATOR.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleConsumerGroupHeartbeat(rc *reqCtx, req *kmsg.ConsumerGroupHeartbeatRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		if resp := s.notCoordinator(coordGroup, req.Group, req); resp != nil {
			return resp // another instance coordinates the group (instances.go)
		}
		home := s.routes().GroupCluster(req.Group)
		if req.MemberEpoch < 0 {
			rc.noteLeft(req.Group) // -1 leaves, -2 leaves a static member's place
		} else {
			rc.noteMember(req.Group, heartbeatSubscription(req))
		}
		for i := range req.Topics {
			if _, up, ok := s.upstreamTopicID(home, req.Topics[i].TopicID); ok {
				req.Topics[i].TopicID = up
			}
		}
		resp := rc.forwardCoordinator(home, coordGroup, req.Group, req)
		if hr, ok := resp.(*kmsg.ConsumerGroupHeartbeatResponse); ok && hr.Assignment != nil {
			if uc, ok := s.clusters[home]; ok {
				for _, t := range hr.Assignment.Topics {
					if _, known := uc.topicName(t.TopicID); !known {
						// An id kproxy has not seen from this
						// cluster: learn all its topics once.
						ctx, cancel := rc.ctx()
						_ = uc.refresh(ctx, nil)
						cancel()
						break
					}
				}
			}
			for i := range hr.Assignment.Topics {
				t := &hr.Assignment.Topics[i]
				t.TopicID = s.virtualOf(home, t.TopicID)
			}
		}
		return resp
	}
}
