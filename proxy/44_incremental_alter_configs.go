package proxy

// IncrementalAlterConfigs (key 44), accepted v0-1. Route and broker-resource
// rule: alter_configs.go and config_resources.go.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleIncrementalAlterConfigs(rc *reqCtx, req *kmsg.IncrementalAlterConfigsRequest) func() kmsg.Response {
	return rc.alterConfigs(req)
}
