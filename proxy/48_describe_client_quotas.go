package proxy

// DescribeClientQuotas (key 48), accepted v0-1. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDescribeClientQuotas(rc *reqCtx, req *kmsg.DescribeClientQuotasRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
