package proxy

// AlterUserSCRAMCredentials (key 51), accepted v0-0. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleAlterUserSCRAMCredentials(rc *reqCtx, req *kmsg.AlterUserSCRAMCredentialsRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
