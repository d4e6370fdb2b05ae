package proxy

// ListPartitionReassignments (key 46), accepted v0-0. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleListPartitionReassignments(rc *reqCtx, req *kmsg.ListPartitionReassignmentsRequest) func() kmsg.Response {
	return rc.toDefaultCluster(req)
}
