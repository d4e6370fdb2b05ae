package proxy

// DescribeConfigs (key 32), accepted v0-4. Route: topic resources to the
// topic's fetch cluster; other resources to the default cluster.
// Broker resources (type 4) and broker loggers (type 8) name a broker id:
// the virtual id is mapped to one real broker of the default
// cluster, the request for them goes to that broker, and the answer names
// the virtual id again. Every resource is answered (split_cluster.go).

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDescribeConfigs(rc *reqCtx, req *kmsg.DescribeConfigsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
		virtual := strconv.Itoa(int(s.self()))
		key := func(typ kmsg.ConfigResourceType, name string) string { return strconv.Itoa(int(typ)) + "/" + name }
		resp.Resources, resp.ThrottleMillis = splitByCluster(req.Resources, clusterSplit[kmsg.DescribeConfigsRequestResource, kmsg.DescribeConfigsResponseResource]{
			clusters: func(r kmsg.DescribeConfigsRequestResource) []string {
				return rc.configClusters(int8(r.ResourceType), r.ResourceName, false)
			},
			send: func(cluster string, part []kmsg.DescribeConfigsRequestResource) ([]kmsg.DescribeConfigsResponseResource, int32, bool) {
				uc, err := rc.clusterFor(cluster)
				if err != nil {
					return nil, 0, false
				}
				id, addr, ok := uc.anyBroker()
				if !ok {
					return nil, 0, false
				}
				upstream := strconv.Itoa(int(id))
				sub := *req
				sub.Resources = append([]kmsg.DescribeConfigsRequestResource(nil), part...)
				for i := range sub.Resources {
					r := &sub.Resources[i]
					if isBrokerResource(int8(r.ResourceType)) && r.ResourceName == virtual {
						r.ResourceName = upstream
					}
				}
				r, err := rc.roundTrip(cluster, id, addr, &sub)
				if err != nil {
					return nil, 0, false
				}
				dr := r.(*kmsg.DescribeConfigsResponse)
				for i := range dr.Resources {
					rr := &dr.Resources[i]
					if isBrokerResource(int8(rr.ResourceType)) && rr.ResourceName == upstream {
						rr.ResourceName = virtual
					}
				}
				return dr.Resources, dr.ThrottleMillis, true
			},
			itemKey:   func(r kmsg.DescribeConfigsRequestResource) string { return key(r.ResourceType, r.ResourceName) },
			answerKey: func(r kmsg.DescribeConfigsResponseResource) string { return key(r.ResourceType, r.ResourceName) },
			failed: func(r kmsg.DescribeConfigsRequestResource, code int16, msg string) kmsg.DescribeConfigsResponseResource {
				rr := kmsg.NewDescribeConfigsResponseResource()
				rr.ResourceType, rr.ResourceName, rr.ErrorCode, rr.ErrorMessage = r.ResourceType, r.ResourceName, code, kmsg.StringPtr(msg)
				return rr
			},
			errOf: func(r *kmsg.DescribeConfigsResponseResource) (*int16, **string) { return &r.ErrorCode, &r.ErrorMessage },
		})
		return resp
	}
}

func isBrokerResource(t int8) bool { return t == resourceBroker || t == resourceBrokerLogger }
