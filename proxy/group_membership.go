package proxy

// Canary rules that select consumers by group need to know, for a Fetch (or
// the Metadata and ListOffsets a consumer sends), which group the consumer
// is a member of. Fetch names no group, and a consumer usually fetches on a
// connection other than the one it talks to its coordinator on (franz-go
// keeps separate connections for fetches, for JoinGroup/SyncGroup and for
// the rest; librdkafka and the Java client talk to "the coordinator" on a
// connection of its own even when it is the same broker). What the wire
// offers to tie them together:
//
//   - A connection that carried a group request of a member (JoinGroup,
//     SyncGroup, Heartbeat, OffsetCommit, TxnOffsetCommit,
//     ConsumerGroupHeartbeat) belongs to that group: exact.
//   - Other connections of the same client instance share its source IP
//     (ports differ), its client.id, and the software name and version it
//     gave in ApiVersions v3+. Nothing else: Fetch carries no member id,
//     and ids KIP-714 gives a client instance travel only on telemetry
//     requests.
//
// So a connection's groups are the ones it carried membership for; a
// connection with none takes the groups of its client instance, keyed by
// (source IP, client.id, software). Two consumers of one instance key in
// different groups (two processes on one host with the default client.id
// kgo, sarama or rdkafka, or two consumers in one process) cannot be told
// apart on their fetch connections. The subscription narrows it down: a
// JoinGroup's consumer protocol metadata and ConsumerGroupHeartbeat's
// subscribed topic names say which topics each group reads, and only
// groups that read the topic count. When more than one is left, the
// request is served as from a member of no group: a canary never captures
// a consumer it did not select, at the price of not capturing the one it
// did (kproxy_canary_group_ambiguous_total counts these). docs/routing.md
// says so; a canary consumer with a client.id of its own avoids it.
//
// Bounded: a connection holds the groups it carried (a client sends a
// handful); an instance's group entry lives while a connection carrying it
// is open, and for limits.group_membership_grace after the last one closed
// (a coordinator connection the client reconnects keeps its group
// meanwhile). A LeaveGroup, or a ConsumerGroupHeartbeat leaving, drops the
// connection's group at once.

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// instanceKey is what identifies a client instance across its connections.
type instanceKey struct {
	ip, clientID, software string
}

// topicSet is a group's subscription; nil means not known (any topic).
type topicSet map[string]struct{}

func (ts topicSet) has(topic string) bool {
	if ts == nil {
		return true
	}
	_, ok := ts[topic]
	return ok
}

// groupEntry is a client instance's membership of one group.
type groupEntry struct {
	conns  int       // open connections that carried this membership
	last   time.Time // the last membership request, or the last such connection's close
	topics topicSet
}

// memberships is the server's table of client instances' groups.
type memberships struct {
	mu    sync.Mutex
	grace time.Duration
	now   func() time.Time
	m     map[instanceKey]map[string]*groupEntry
	n     int // entries in m, for kproxy_state_entries
	gauge func(float64)
}

func newMemberships(grace time.Duration, gauge func(float64)) *memberships {
	return &memberships{grace: grace, now: time.Now, m: map[instanceKey]map[string]*groupEntry{}, gauge: gauge}
}

// connGroups is one connection's side: the instance key its memberships
// were filed under and each group's subscription.
type connGroups struct {
	mu     sync.Mutex
	key    instanceKey
	groups map[string]topicSet
}

// instanceKey of a request: the connection's peer IP and software, and the
// request's client.id.
func (rc *reqCtx) instanceKey() instanceKey {
	k := instanceKey{ip: rc.cc.ip, clientID: rc.client}
	if sw := rc.cc.software.Load(); sw != nil {
		k.software = *sw
	}
	return k
}

// noteMember records that this connection carried a member's request for
// group. topics is the subscription the request states, nil if it states
// none (the last one stated is kept).
func (rc *reqCtx) noteMember(group string, topics topicSet) {
	if group == "" {
		return
	}
	s, cc := rc.srv(), rc.cc
	key := rc.instanceKey()
	cc.member.mu.Lock()
	defer cc.member.mu.Unlock()
	if cc.member.groups == nil {
		cc.member.groups = map[string]topicSet{}
	}
	if len(cc.member.groups) > 0 && cc.member.key != key {
		// The connection changed its client.id: file it anew.
		for g := range cc.member.groups {
			s.members.release(cc.member.key, g, false)
		}
		clear(cc.member.groups)
	}
	cc.member.key = key
	old, had := cc.member.groups[group]
	if topics == nil {
		topics = old
	}
	cc.member.groups[group] = topics
	s.members.hold(key, group, topics, !had)
}

// noteLeft drops group from this connection (LeaveGroup, or a
// ConsumerGroupHeartbeat with a leaving epoch).
func (rc *reqCtx) noteLeft(group string) {
	cc := rc.cc
	cc.member.mu.Lock()
	defer cc.member.mu.Unlock()
	if _, ok := cc.member.groups[group]; !ok {
		return // an admin removing members, not this connection's own
	}
	delete(cc.member.groups, group)
	rc.srv().members.release(cc.member.key, group, true)
}

// closeMemberships releases a closed connection's groups.
func (cc *clientConn) closeMemberships() {
	cc.member.mu.Lock()
	defer cc.member.mu.Unlock()
	for g := range cc.member.groups {
		cc.srv.members.release(cc.member.key, g, false)
	}
	cc.member.groups = nil
}

// hold refreshes key's entry for group, counting a new connection.
func (ms *memberships) hold(key instanceKey, group string, topics topicSet, newConn bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	groups := ms.m[key]
	if groups == nil {
		groups = map[string]*groupEntry{}
		ms.m[key] = groups
	}
	e := groups[group]
	if e == nil {
		e = &groupEntry{}
		groups[group] = e
		ms.n++
		ms.gauge(float64(ms.n))
	}
	if newConn {
		e.conns++
	}
	e.last = ms.now()
	if topics != nil {
		e.topics = topics
	}
}

// release un-counts a connection of key's entry for group; left drops the
// entry at once when no other connection holds it (the member left).
func (ms *memberships) release(key instanceKey, group string, left bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	e := ms.m[key][group]
	if e == nil {
		return
	}
	e.conns--
	e.last = ms.now()
	if left && e.conns <= 0 {
		ms.dropLocked(key, group)
	}
}

func (ms *memberships) dropLocked(key instanceKey, group string) {
	delete(ms.m[key], group)
	if len(ms.m[key]) == 0 {
		delete(ms.m, key)
	}
	ms.n--
	ms.gauge(float64(ms.n))
}

// live says whether an entry still counts at now.
func (ms *memberships) live(e *groupEntry, now time.Time) bool {
	return e.conns > 0 || now.Sub(e.last) < ms.grace
}

// lookup is the group of key's instance that reads topic: "" when none,
// and also when several do (ambiguous is then true).
func (ms *memberships) lookup(key instanceKey, topic string) (group string, ambiguous bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	now := ms.now()
	for g, e := range ms.m[key] {
		if !ms.live(e, now) || !e.topics.has(topic) {
			continue
		}
		if group != "" {
			return "", true
		}
		group = g
	}
	return group, false
}

// expire drops entries past their grace; it returns how many.
func (ms *memberships) expire() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	now := ms.now()
	n := 0
	for key, groups := range ms.m {
		for g, e := range groups {
			if !ms.live(e, now) {
				ms.dropLocked(key, g)
				n++
			}
		}
	}
	return n
}

// group is the consumer group this request's client reads topic as, for
// canary rules that select by group (see the file comment): the
// connection's own membership if it carried one, else its client
// instance's; "" when there is none or it is ambiguous.
func (rc *reqCtx) group(topic string) string {
	cc := rc.cc
	cc.member.mu.Lock()
	var group string
	var own, ambiguous bool
	for g, ts := range cc.member.groups {
		own = true
		if !ts.has(topic) {
			continue
		}
		if group != "" {
			ambiguous = true
			break
		}
		group = g
	}
	cc.member.mu.Unlock()
	if !own {
		group, ambiguous = rc.srv().members.lookup(rc.instanceKey(), topic)
	}
	if ambiguous {
		rc.srv().metrics.groupAmbiguous.Inc()
		return ""
	}
	return group
}

// joinSubscription is the topics a JoinGroup's consumer protocol metadata
// subscribes to (the union over the protocols offered), nil when it is not
// a consumer group or the metadata does not decode.
func joinSubscription(req *kmsg.JoinGroupRequest) topicSet {
	if req.ProtocolType != "consumer" {
		return nil
	}
	ts := topicSet{}
	for _, p := range req.Protocols {
		var meta kmsg.ConsumerMemberMetadata
		if err := meta.ReadFrom(p.Metadata); err != nil {
			return nil
		}
		for _, t := range meta.Topics {
			ts[t] = struct{}{}
		}
	}
	return ts
}

// heartbeatSubscription is a ConsumerGroupHeartbeat's subscription: nil
// when it states none (unchanged since the last) or subscribes by regex.
func heartbeatSubscription(req *kmsg.ConsumerGroupHeartbeatRequest) topicSet {
	if req.SubscribedTopicNames == nil || req.SubscribedTopicRegex != nil {
		return nil
	}
	ts := topicSet{}
	for _, t := range req.SubscribedTopicNames {
		ts[t] = struct{}{}
	}
	return ts
}
