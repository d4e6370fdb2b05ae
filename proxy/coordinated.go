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

// registerGroupAPI registers an API whose request names one consumer group.
func registerGroupAPI(key kmsg.Key, min, max int16, group func(kmsg.Request) string) {
	register(key, min, max, func(rc *reqCtx, req kmsg.Request) func() kmsg.Response {
		return func() kmsg.Response {
			g := group(req)
			if membership(key) && rc.client != "" && g != "" {
				rc.srv().clientGroups.Store(rc.client, g)
			}
			resp, done := rc.gateGroup(key, g, req)
			if done == nil {
				return resp // held during a group move (group_hold.go)
			}
			defer done()
			resp = rc.forwardCoordinator(rc.srv().routes().GroupCluster(g), coordGroup, g, req)
			if key == kmsg.Heartbeat {
				resp = rc.afterMoveHeartbeat(g, resp)
			}
			return resp
		}
	})
}

// registerAnyAPI registers an API any broker of the default cluster serves.
func registerAnyAPI(key kmsg.Key, min, max int16) {
	register(key, min, max, func(rc *reqCtx, req kmsg.Request) func() kmsg.Response {
		return func() kmsg.Response { return rc.forwardAny(rc.srv().routes().DefaultCluster(), req) }
	})
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
