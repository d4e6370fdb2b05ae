package proxy

// Shared body of AlterConfigs (33) and IncrementalAlterConfigs (44): the two
// differ only in their kmsg types, so one split serves both
// (split_cluster.go). Broker resources may only name the cluster-wide
// default (""): kproxy's one virtual broker stands for every real broker,
// so altering "broker N" has no single meaning.

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const virtualBrokerAlterRefusal = "kproxy shows one virtual broker; alter a real broker's config on its cluster directly, or use the cluster-wide default (empty name)"

// alterConfigs forwards an alter-configs request: each resource to the
// clusters configClusters names for a write.
func (rc *reqCtx) alterConfigs(req kmsg.Request) func() kmsg.Response {
	resource := func(e reflect.Value) (int8, string) {
		return int8(e.FieldByName("ResourceType").Int()), e.FieldByName("ResourceName").String()
	}
	return func() kmsg.Response {
		return rc.forwardListSplit(req, listSplit{
			list: "Resources",
			keys: []string{"ResourceType", "ResourceName"},
			clusters: func(e reflect.Value) []string {
				typ, name := resource(e)
				return rc.configClusters(typ, name, true)
			},
			refuse: func(e reflect.Value) (int16, string) {
				if typ, name := resource(e); isBrokerResource(typ) && name != "" {
					return kerr.InvalidRequest.Code, virtualBrokerAlterRefusal
				}
				return 0, ""
			},
		})
	}
}
