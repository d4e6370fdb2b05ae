package proxy

// CreatePartitions (key 37), accepted v0-3. Route: each topic to its route's
// cluster(s), so a split-route topic keeps the same partition count on both.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleCreatePartitions(rc *reqCtx, req *kmsg.CreatePartitionsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
		names := make([]string, len(req.Topics))
		for i, t := range req.Topics {
			names[i] = t.Topic
		}
		seen := map[string]int{}
		rc.forwardSplit(names, func(idx []int) kmsg.Request {
			sub := *req
			sub.Topics = nil
			for _, i := range idx {
				sub.Topics = append(sub.Topics, req.Topics[i])
			}
			return &sub
		}, func(_ string, r kmsg.Response) {
			cr := r.(*kmsg.CreatePartitionsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, cr.ThrottleMillis)
			for _, t := range cr.Topics {
				mergeAnswer(&resp.Topics, seen, t.Topic, t, func(q *kmsg.CreatePartitionsResponseTopic) (*int16, **string) { return &q.ErrorCode, &q.ErrorMessage })
			}
		})
		return resp
	}
}
