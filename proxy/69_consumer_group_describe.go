package proxy

// ConsumerGroupDescribe (key 69, KIP-848), accepted v0-1. Route: each
// group's home coordinator, one sub-request per group, merged in order.
// Rewrites: assignment topic ids are virtual.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleConsumerGroupDescribe(rc *reqCtx, req *kmsg.ConsumerGroupDescribeRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
		rc.forEachGroup(req.Groups, func(i int) kmsg.Request {
			sub := *req
			sub.Groups = req.Groups[i : i+1]
			return &sub
		}, func(i int, r kmsg.Response) {
			if dr, ok := r.(*kmsg.ConsumerGroupDescribeResponse); ok && len(dr.Groups) > 0 {
				home := rc.srv().routes().GroupCluster(req.Groups[i])
				for g := range dr.Groups {
					for m := range dr.Groups[g].Members {
						mem := &dr.Groups[g].Members[m]
						for _, a := range []*kmsg.Assignment{&mem.Assignment, &mem.TargetAssignment} {
							for t := range a.TopicPartitions {
								a.TopicPartitions[t].TopicID = rc.srv().virtualOf(home, a.TopicPartitions[t].TopicID)
							}
						}
					}
				}
				resp.Groups = append(resp.Groups, dr.Groups...)
				return
			}
			g := kmsg.NewConsumerGroupDescribeResponseGroup()
			g.Group, g.ErrorCode = req.Groups[i], kerr.CoordinatorNotAvailable.Code
			resp.Groups = append(resp.Groups, g)
		})
		return resp
	}
}
