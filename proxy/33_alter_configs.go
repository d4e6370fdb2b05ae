package proxy

// AlterConfigs (key 33), accepted v0-2. Route: config_resources.go. Broker
// resources may only name the cluster-wide default (""): kproxy's one
// virtual broker stands for every real broker, so altering "broker N" has no
// single meaning; such a resource is refused with INVALID_REQUEST.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(kmsg.AlterConfigs, 0, 2, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.AlterConfigsRequest)
		return func() kmsg.Response {
			resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
			var ok []kmsg.AlterConfigsRequestResource
			for _, r := range req.Resources {
				if isBrokerResource(int8(r.ResourceType)) && r.ResourceName != "" {
					rr := kmsg.NewAlterConfigsResponseResource()
					rr.ResourceType, rr.ResourceName, rr.ErrorCode = r.ResourceType, r.ResourceName, kerr.InvalidRequest.Code
					rr.ErrorMessage = kmsg.StringPtr("kproxy shows one virtual broker; alter a real broker's config on its cluster directly, or use the cluster-wide default (empty name)")
					resp.Resources = append(resp.Resources, rr)
					continue
				}
				ok = append(ok, r)
			}
			order, by := splitResources(rc, ok, func(r kmsg.AlterConfigsRequestResource) int8 { return int8(r.ResourceType) },
				func(r kmsg.AlterConfigsRequestResource) string { return r.ResourceName }, true)
			seen := map[string]int{}
			for _, c := range order {
				sub := *req
				sub.Resources = by[c]
				ar, _ := rc.forwardAny(c, &sub).(*kmsg.AlterConfigsResponse)
				if ar == nil {
					continue
				}
				for _, r := range ar.Resources {
					k := string(rune(r.ResourceType)) + r.ResourceName
					if i, dup := seen[k]; dup {
						if resp.Resources[i].ErrorCode == 0 {
							resp.Resources[i].ErrorCode, resp.Resources[i].ErrorMessage = r.ErrorCode, r.ErrorMessage
						}
						continue
					}
					seen[k] = len(resp.Resources)
					resp.Resources = append(resp.Resources, r)
				}
			}
			return resp
		}
	})
}
