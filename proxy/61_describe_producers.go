package proxy

// DescribeProducers (key 61), accepted v0. Route: each topic's produce route,
// each partition to its leader, one sub-request per partition.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDescribeProducers(rc *reqCtx, req *kmsg.DescribeProducersRequest) func() kmsg.Response {
	return func() kmsg.Response {
		router := rc.srv().routes()
		look := newLeaderLookup(rc)
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewDescribeProducersResponseTopic()
			rt.Topic = t.Topic
			cluster := router.ProduceCluster(t.Topic, rc.client)
			for _, p := range t.Partitions {
				rp := kmsg.NewDescribeProducersResponseTopicPartition()
				rp.Partition = p
				ref, code := look.find(cluster, t.Topic, p)
				if code == 0 {
					sub := *req
					sub.Topics = []kmsg.DescribeProducersRequestTopic{{Topic: t.Topic, Partitions: []int32{p}}}
					r, err := rc.roundTrip(ref.cluster, ref.id, ref.addr, &sub)
					code = kerr.NotLeaderForPartition.Code
					if err == nil {
						if dr := r.(*kmsg.DescribeProducersResponse); len(dr.Topics) == 1 && len(dr.Topics[0].Partitions) == 1 {
							rp, code = dr.Topics[0].Partitions[0], dr.Topics[0].Partitions[0].ErrorCode
						}
					}
				}
				rp.ErrorCode = code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
}
