package proxy

// DescribeCluster (key 60), accepted v0-2. Route: answered by kproxy from its
// own identity (the virtual cluster has one broker per kproxy instance).
// Rewrites: ClusterID, ControllerID and Brokers are virtual (this instance,
// or the live instances: virt_nodes.go, instances.go); grepplabs
// kafka-proxy forwards this unchanged, which sends admin tools to the real
// brokers. EndpointType 2 (controllers, KIP-919) gets UNSUPPORTED_VERSION's
// sibling INVALID_REQUEST: kproxy exposes no controllers.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDescribeCluster(rc *reqCtx, req *kmsg.DescribeClusterRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
		if req.EndpointType == 2 {
			resp.ErrorCode = kerr.InvalidRequest.Code
			resp.ErrorMessage = kmsg.StringPtr("kproxy exposes brokers only")
			return resp
		}
		resp.EndpointType = 1
		resp.ClusterID = s.opts.ClusterID
		resp.ControllerID = s.controllerID()
		resp.ClusterAuthorizedOperations = -2147483648
		resp.Brokers = s.describeClusterBrokers(rc.cc.lst)
		return resp
	}
}
