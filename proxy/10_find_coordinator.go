package proxy

// FindCoordinator (key 10), accepted v0-6.
// Route: answered by kproxy: every coordinator a client sees is this
// instance. kproxy asks the key's home cluster (groups.* for groups; for a
// transactional id, the cluster of its open or last transaction, else
// routes.default) so that a coordinator that does
// not exist yet surfaces as COORDINATOR_NOT_AVAILABLE and the client retries,
// exactly as with a broker. Later group/transaction requests are routed by
// key, never by connection (the Java client addresses its coordinator as
// node MaxInt32-nodeId).
// Version notes: v4+ batches keys (KIP-699); share coordinators (type 2) are
// refused with INVALID_REQUEST since share groups are not advertised.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleFindCoordinator(rc *reqCtx, req *kmsg.FindCoordinatorRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
		lookup := func(key string) (code int16, msg *string) {
			var cluster string
			switch req.CoordinatorType {
			case 0:
				if s.groupHeld(key) {
					// The group's home is moving (group_hold.go).
					return kerr.CoordinatorNotAvailable.Code, kmsg.StringPtr("kproxy is moving this group's coordinator; retry")
				}
				cluster = s.routes().GroupCluster(key)
			case 1:
				// The open (or last) transaction's cluster: its
				// coordinator serves the id's next requests.
				cluster = s.txnRoute(key)
			default:
				return kerr.InvalidRequest.Code, kmsg.StringPtr("kproxy does not serve share coordinators")
			}
			uc, err := rc.clusterFor(cluster)
			if err != nil {
				return kerr.CoordinatorNotAvailable.Code, kmsg.StringPtr(err.Error())
			}
			ctx, cancel := rc.ctx()
			defer cancel()
			if _, _, err := uc.coordinator(ctx, req.CoordinatorType, key); err != nil {
				return kerr.CoordinatorNotAvailable.Code, nil
			}
			return 0, nil
		}
		if req.Version >= 4 {
			for _, key := range req.CoordinatorKeys {
				c := kmsg.NewFindCoordinatorResponseCoordinator()
				c.Key = key
				c.ErrorCode, c.ErrorMessage = lookup(key)
				c.NodeID, c.Host, c.Port = -1, "", -1
				if c.ErrorCode == 0 {
					c.NodeID, c.Host, c.Port = s.selfEndpoint(rc.cc.lst)
				}
				resp.Coordinators = append(resp.Coordinators, c)
			}
			return resp
		}
		resp.ErrorCode, resp.ErrorMessage = lookup(req.CoordinatorKey)
		resp.NodeID, resp.Host, resp.Port = -1, "", -1
		if resp.ErrorCode == 0 {
			resp.NodeID, resp.Host, resp.Port = s.selfEndpoint(rc.cc.lst)
		}
		return resp
	}
}
