package proxy

// ElectLeaders (key 43), accepted v0-2. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleElectLeaders(rc *reqCtx, req *kmsg.ElectLeadersRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
