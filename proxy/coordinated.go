package proxy

// Shared plumbing for APIs served by a group or transaction coordinator. The
// per-API files say which field names the key; routing is by key, never by
// connection. Transaction coordinator APIs have their own handlers: they
// follow the transactional id's open transaction and rewrite producer ids
// (txn_producers.go).

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	coordGroup int8 = 0
	coordTxn   int8 = 1
)

// toGroupCoordinator serves a request that names one consumer group: it
// goes to the coordinator of the group's home cluster, unless the group is
// held for a home move (group_hold.go) or another instance coordinates it
// (NOT_COORDINATOR, instances.go).
func (rc *reqCtx) toGroupCoordinator(req kmsg.Request, group string) func() kmsg.Response {
	key := kmsg.Key(req.Key())
	return func() kmsg.Response {
		if resp := rc.srv().notCoordinator(coordGroup, group, req); resp != nil {
			return resp // another instance coordinates the group (instances.go)
		}
		switch {
		case key == kmsg.JoinGroup:
			rc.noteMember(group, joinSubscription(req.(*kmsg.JoinGroupRequest)))
		case membership(key):
			rc.noteMember(group, nil)
		case key == kmsg.LeaveGroup:
			rc.noteLeft(group)
		}
		resp, done := rc.gateGroup(key, group, req)
		if done == nil {
			return resp // held during a group move (group_hold.go)
		}
		defer done()
		resp = rc.forwardCoordinator(rc.srv().routes().GroupCluster(group), coordGroup, group, req)
		rc.srv().noteRelayedMembers(group, req, resp)
		if key == kmsg.Heartbeat {
			resp = rc.afterMoveHeartbeat(group, resp)
		}
		return resp
	}
}

// toDefaultCluster serves a request any broker of the default cluster
// answers.
func (rc *reqCtx) toDefaultCluster(req kmsg.Request) func() kmsg.Response {
	return func() kmsg.Response { return rc.forwardAny(rc.srv().routes().DefaultCluster(), req) }
}

// membership says whether an API is sent by a group member about its own
// membership or progress (so its client.id belongs to the group), as
// opposed to admin calls about some group.
func membership(key kmsg.Key) bool {
	switch key {
	case kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.ConsumerGroupHeartbeat, kmsg.TxnOffsetCommit:
		return true
	}
	return false
}
