package proxy

// DescribeConfigs (key 32), accepted v0-4. Route: the default cluster.
// Broker resources (type 4) and broker loggers (type 8) name a broker id:
// the virtual id is mapped to one real broker of the default cluster, the
// request goes to that broker, and the answer names the virtual id again.

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(kmsg.DescribeConfigs, 0, 4, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.DescribeConfigsRequest)
		return func() kmsg.Response {
			s := rc.srv()
			cluster := s.routes().DefaultCluster()
			uc, err := rc.clusterFor(cluster)
			if err != nil {
				return errorResponse(req, kerr.UnknownServerError.Code)
			}
			id, addr, ok := uc.anyBroker()
			if !ok {
				return errorResponse(req, kerr.RequestTimedOut.Code)
			}
			virtual := strconv.Itoa(int(s.self()))
			sub := *req
			sub.Resources = append([]kmsg.DescribeConfigsRequestResource(nil), req.Resources...)
			for i := range sub.Resources {
				r := &sub.Resources[i]
				if isBrokerResource(int8(r.ResourceType)) && (r.ResourceName == virtual || r.ResourceName == "") {
					r.ResourceName = strconv.Itoa(int(id))
				}
			}
			r, err := rc.roundTrip(cluster, id, addr, &sub)
			if err != nil {
				return errorResponse(req, kerr.RequestTimedOut.Code)
			}
			dr := r.(*kmsg.DescribeConfigsResponse)
			for i := range dr.Resources {
				if isBrokerResource(int8(dr.Resources[i].ResourceType)) && dr.Resources[i].ResourceName == strconv.Itoa(int(id)) {
					dr.Resources[i].ResourceName = virtual
				}
			}
			return dr
		}
	})
	errorFillers[kmsg.DescribeConfigs.Int16()] = func(kreq kmsg.Request, kresp kmsg.Response, code int16) {
		req, resp := kreq.(*kmsg.DescribeConfigsRequest), kresp.(*kmsg.DescribeConfigsResponse)
		for _, r := range req.Resources {
			rr := kmsg.NewDescribeConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode = r.ResourceType, r.ResourceName, code
			resp.Resources = append(resp.Resources, rr)
		}
	}
}

func isBrokerResource(t int8) bool { return t == 4 || t == 8 }
