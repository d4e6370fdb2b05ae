package proxy

// DescribeACLs (key 29), accepted v0-3. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDescribeACLs(rc *reqCtx, req *kmsg.DescribeACLsRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
