package proxy

// IncrementalAlterConfigs (key 44), accepted v0-1. Route and broker-resource
// rule as AlterConfigs (33_alter_configs.go).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(kmsg.IncrementalAlterConfigs, 0, 1, func(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
		req := kreq.(*kmsg.IncrementalAlterConfigsRequest)
		return func() kmsg.Response {
			resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
			var ok []kmsg.IncrementalAlterConfigsRequestResource
			for _, r := range req.Resources {
				if isBrokerResource(int8(r.ResourceType)) && r.ResourceName != "" {
					rr := kmsg.NewIncrementalAlterConfigsResponseResource()
					rr.ResourceType, rr.ResourceName, rr.ErrorCode = r.ResourceType, r.ResourceName, kerr.InvalidRequest.Code
					rr.ErrorMessage = kmsg.StringPtr("kproxy shows one virtual broker; alter a real broker's config on its cluster directly, or use the cluster-wide default (empty name)")
					resp.Resources = append(resp.Resources, rr)
					continue
				}
				ok = append(ok, r)
			}
			order, by := splitResources(rc, ok, func(r kmsg.IncrementalAlterConfigsRequestResource) int8 { return int8(r.ResourceType) },
				func(r kmsg.IncrementalAlterConfigsRequestResource) string { return r.ResourceName }, true)
			seen := map[string]int{}
			for _, c := range order {
				sub := *req
				sub.Resources = by[c]
				ar, _ := rc.forwardAny(c, &sub).(*kmsg.IncrementalAlterConfigsResponse)
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
