package proxy

// AlterConfigs (key 33), accepted v0-2. Route and broker-resource rule:
// alter_configs.go and config_resources.go.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleAlterConfigs(rc *reqCtx, req *kmsg.AlterConfigsRequest) func() kmsg.Response {
	return rc.alterConfigs(req)
}
