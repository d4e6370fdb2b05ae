package proxy

// DeleteACLs (key 31), accepted v0-3. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDeleteACLs(rc *reqCtx, req *kmsg.DeleteACLsRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
