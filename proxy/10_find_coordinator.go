package proxy

// FindCoordinator (key 10), accepted v0-6.
// Route: answered by kproxy: every coordinator a client sees is this
// instance, or with several instances the key's owner (instances.go). kproxy asks the key's home cluster (groups.* for groups; for a
// transactional id, the cluster of its open or last transaction, else
// routes.default) so that a coordinator that does
// not exist yet surfaces as COORDINATOR_NOT_AVAILABLE and the client retries,
// exactly as with a broker. Later group/transaction requests are routed by
// key, never by connection (the Java client addresses its coordinator as
// node MaxInt32-nodeId).
// Identity passthrough: the client's own identity asks the broker too, so
// a client the broker does not authorize for the key gets the broker's
// GROUP_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED (passthrough.go).
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
			if code, msg := rc.passthroughFindCoordinator(cluster, req, key); code != 0 {
				return code, msg
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
					c.NodeID, c.Host, c.Port = s.coordinatorEndpoint(rc.cc.lst, req.CoordinatorType, key)
				}
				resp.Coordinators = append(resp.Coordinators, c)
			}
			return resp
		}
		resp.ErrorCode, resp.ErrorMessage = lookup(req.CoordinatorKey)
		resp.NodeID, resp.Host, resp.Port = -1, "", -1
		if resp.ErrorCode == 0 {
			resp.NodeID, resp.Host, resp.Port = s.coordinatorEndpoint(rc.cc.lst, req.CoordinatorType, req.CoordinatorKey)
		}
		return resp
	}
}

// passthroughFindCoordinator asks cluster for key's coordinator as the
// client, when the cluster passes client identities through: kproxy's own
// lookup (cluster.go) uses its service identity, which the broker may
// authorize where it would refuse the client. It returns the broker's
// authorization error for key, or 0 (any other outcome is left to the
// lookup kproxy makes anyway).
func (rc *reqCtx) passthroughFindCoordinator(cluster string, req *kmsg.FindCoordinatorRequest, key string) (int16, *string) {
	if rc.srv().dialer.sec[cluster].Passthrough == nil {
		return 0, nil
	}
	sub := kmsg.NewPtrFindCoordinatorRequest()
	sub.Version = req.Version
	sub.CoordinatorType = req.CoordinatorType
	sub.CoordinatorKey = key
	if req.Version >= 4 {
		sub.CoordinatorKeys = []string{key}
	}
	r, _ := rc.forwardAny(cluster, sub).(*kmsg.FindCoordinatorResponse)
	if r == nil {
		return 0, nil
	}
	code, msg := r.ErrorCode, r.ErrorMessage
	if len(r.Coordinators) > 0 {
		code, msg = r.Coordinators[0].ErrorCode, r.Coordinators[0].ErrorMessage
	}
	switch code {
	case kerr.GroupAuthorizationFailed.Code, kerr.TransactionalIDAuthorizationFailed.Code, kerr.ClusterAuthorizationFailed.Code:
		return code, msg
	}
	return 0, nil
}
