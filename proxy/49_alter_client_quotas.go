package proxy

// AlterClientQuotas (key 49), accepted v0-1. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleAlterClientQuotas(rc *reqCtx, req *kmsg.AlterClientQuotasRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
