package proxy

// DescribeConfigs (key 32), accepted v0-4. Route: topic resources to the
// topic's fetch cluster; other resources to the default cluster.
// Broker resources (type 4) and broker loggers (type 8) name a broker id:
// the virtual id is mapped to one real broker of the default
// cluster, the request for them goes to that broker, and the answer names
// the virtual id again.

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDescribeConfigs(rc *reqCtx, req *kmsg.DescribeConfigsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
		order, by := splitResources(rc, req.Resources, func(r kmsg.DescribeConfigsRequestResource) int8 { return int8(r.ResourceType) },
			func(r kmsg.DescribeConfigsRequestResource) string { return r.ResourceName }, false)
		virtual := strconv.Itoa(int(s.self()))
		for _, cluster := range order {
			sub := *req
			sub.Resources = append([]kmsg.DescribeConfigsRequestResource(nil), by[cluster]...)
			fail := func(code int16) {
				for _, r := range sub.Resources {
					rr := kmsg.NewDescribeConfigsResponseResource()
					rr.ResourceType, rr.ResourceName, rr.ErrorCode = r.ResourceType, r.ResourceName, code
					resp.Resources = append(resp.Resources, rr)
				}
			}
			uc, err := rc.clusterFor(cluster)
			if err != nil {
				fail(kerr.UnknownServerError.Code)
				continue
			}
			id, addr, ok := uc.anyBroker()
			if !ok {
				fail(kerr.RequestTimedOut.Code)
				continue
			}
			upstream := strconv.Itoa(int(id))
			for i := range sub.Resources {
				r := &sub.Resources[i]
				if isBrokerResource(int8(r.ResourceType)) && r.ResourceName == virtual {
					r.ResourceName = upstream
				}
			}
			r, err := rc.roundTrip(cluster, id, addr, &sub)
			if err != nil {
				fail(kerr.RequestTimedOut.Code)
				continue
			}
			dr := r.(*kmsg.DescribeConfigsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, dr.ThrottleMillis)
			for _, rr := range dr.Resources {
				if isBrokerResource(int8(rr.ResourceType)) && rr.ResourceName == upstream {
					rr.ResourceName = virtual
				}
				resp.Resources = append(resp.Resources, rr)
			}
		}
		return resp
	}
}

func isBrokerResource(t int8) bool { return t == resourceBroker || t == resourceBrokerLogger }
