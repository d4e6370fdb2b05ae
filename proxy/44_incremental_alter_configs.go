package proxy

// IncrementalAlterConfigs (key 44), accepted v0-1. Route and broker-resource
// rule: alter_configs.go and config_resources.go.

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleIncrementalAlterConfigs(rc *reqCtx, req *kmsg.IncrementalAlterConfigsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		resp.Resources = alterConfigs(rc, req.Resources, configAlteration[kmsg.IncrementalAlterConfigsRequestResource, kmsg.IncrementalAlterConfigsResponseResource]{
			typ:  func(r kmsg.IncrementalAlterConfigsRequestResource) int8 { return int8(r.ResourceType) },
			name: func(r kmsg.IncrementalAlterConfigsRequestResource) string { return r.ResourceName },
			refused: func(r kmsg.IncrementalAlterConfigsRequestResource, code int16, msg string) kmsg.IncrementalAlterConfigsResponseResource {
				q := kmsg.NewIncrementalAlterConfigsResponseResource()
				q.ResourceType, q.ResourceName, q.ErrorCode, q.ErrorMessage = r.ResourceType, r.ResourceName, code, kmsg.StringPtr(msg)
				return q
			},
			forward: func(c string, rs []kmsg.IncrementalAlterConfigsRequestResource) ([]kmsg.IncrementalAlterConfigsResponseResource, bool) {
				sub := *req
				sub.Resources = rs
				ar, ok := rc.forwardAny(c, &sub).(*kmsg.IncrementalAlterConfigsResponse)
				if !ok || ar == nil {
					return nil, false
				}
				return ar.Resources, true
			},
			key: func(q kmsg.IncrementalAlterConfigsResponseResource) string {
				return strconv.Itoa(int(q.ResourceType)) + "/" + q.ResourceName
			},
			errOf: func(q *kmsg.IncrementalAlterConfigsResponseResource) (*int16, **string) {
				return &q.ErrorCode, &q.ErrorMessage
			},
		})
		return resp
	}
}
