package proxy

// AlterConfigs (key 33), accepted v0-2. Route and broker-resource rule:
// alter_configs.go and config_resources.go.

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleAlterConfigs(rc *reqCtx, req *kmsg.AlterConfigsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
		resp.Resources = alterConfigs(rc, req.Resources, configAlteration[kmsg.AlterConfigsRequestResource, kmsg.AlterConfigsResponseResource]{
			typ:  func(r kmsg.AlterConfigsRequestResource) int8 { return int8(r.ResourceType) },
			name: func(r kmsg.AlterConfigsRequestResource) string { return r.ResourceName },
			refused: func(r kmsg.AlterConfigsRequestResource, code int16, msg string) kmsg.AlterConfigsResponseResource {
				q := kmsg.NewAlterConfigsResponseResource()
				q.ResourceType, q.ResourceName, q.ErrorCode, q.ErrorMessage = r.ResourceType, r.ResourceName, code, kmsg.StringPtr(msg)
				return q
			},
			forward: func(c string, rs []kmsg.AlterConfigsRequestResource) ([]kmsg.AlterConfigsResponseResource, bool) {
				sub := *req
				sub.Resources = rs
				ar, ok := rc.forwardAny(c, &sub).(*kmsg.AlterConfigsResponse)
				if !ok || ar == nil {
					return nil, false
				}
				return ar.Resources, true
			},
			key: func(q kmsg.AlterConfigsResponseResource) string {
				return strconv.Itoa(int(q.ResourceType)) + "/" + q.ResourceName
			},
			errOf: func(q *kmsg.AlterConfigsResponseResource) (*int16, **string) { return &q.ErrorCode, &q.ErrorMessage },
		})
		return resp
	}
}
