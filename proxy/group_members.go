package proxy

// A group move copies committed offsets to the new home with an admin
// commit (no member, generation -1), which a coordinator accepts only while
// the group is empty there. A group that was homed on the new home before
// (a move there and back) can still have members on it: the ones its
// clients had when it left, which the coordinator keeps until their session
// times out (45 s for the Java client, and a member waiting in a rebalance
// is kept up to its rebalance timeout, 5 min by default). They are not
// clients: those talk, through kproxy, to the group's current home. A
// consumer connected to the new home directly is another matter: its
// member is real, and the move must not take its group from under it.
//
// What tells the two apart is where the member id came from. The member ids
// coordinators handed out through kproxy (JoinGroup answers) are remembered
// here; a move may remove members it finds on the new home when kproxy
// handed out every one of them (control/groupmove.go), and refuses
// otherwise, as before.
//
// Bounded: at most relayedMembersMax ids, each kept relayedMemberMaxAge after
// kproxy last relayed a request of it (no coordinator keeps a member longer
// than its session or rebalance timeout, both capped far below that). When
// full, a new id is not remembered: a move then treats that member as a
// stranger and refuses, the safe side.

import (
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	relayedMemberMaxAge = time.Hour
	relayedMembersMax   = 100_000
)

// relayedMembers is group -> member id -> when kproxy last relayed it.
type relayedMembers struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[string]map[string]time.Time
	n   int
}

// note remembers member of group as handed out through kproxy.
func (r *relayedMembers) note(group, member string) {
	if group == "" || member == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]map[string]time.Time{}
	}
	if r.now == nil {
		r.now = time.Now
	}
	now := r.now()
	if _, ok := r.m[group][member]; !ok && r.n >= relayedMembersMax {
		r.expireLocked(now) // may drop group's map: look it up after
		if r.n >= relayedMembersMax {
			return
		}
	}
	ids := r.m[group]
	if ids == nil {
		ids = map[string]time.Time{}
		r.m[group] = ids
	}
	if _, ok := ids[member]; !ok {
		r.n++
	}
	ids[member] = now
}

// forget drops members of group (they left).
func (r *relayedMembers) forget(group string, members ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := r.m[group]
	for _, id := range members {
		if _, ok := ids[id]; ok {
			delete(ids, id)
			r.n--
		}
	}
	if len(ids) == 0 {
		delete(r.m, group)
	}
}

// has reports whether member of group was handed out through kproxy within
// relayedMemberMaxAge.
func (r *relayedMembers) has(group, member string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.m[group][member]
	return ok && r.clock().Sub(at) <= relayedMemberMaxAge
}

func (r *relayedMembers) clock() time.Time {
	if r.now == nil {
		return time.Now()
	}
	return r.now()
}

func (r *relayedMembers) expireLocked(now time.Time) {
	for group, ids := range r.m {
		for id, at := range ids {
			if now.Sub(at) > relayedMemberMaxAge {
				delete(ids, id)
				r.n--
			}
		}
		if len(ids) == 0 {
			delete(r.m, group)
		}
	}
}

// noteRelayedMembers files the member ids a group request and its answer
// carried: a JoinGroup answer's id (also given with MEMBER_ID_REQUIRED), a
// member's own id on the requests it sends, and drops the ids a LeaveGroup
// names.
func (s *Server) noteRelayedMembers(group string, req kmsg.Request, resp kmsg.Response) {
	r := &s.relayed
	switch q := req.(type) {
	case *kmsg.JoinGroupRequest:
		if a, ok := resp.(*kmsg.JoinGroupResponse); ok {
			r.note(group, a.MemberID)
		}
	case *kmsg.SyncGroupRequest:
		r.note(group, q.MemberID)
	case *kmsg.HeartbeatRequest:
		r.note(group, q.MemberID)
	case *kmsg.LeaveGroupRequest:
		ids := []string{q.MemberID}
		for _, m := range q.Members {
			ids = append(ids, m.MemberID)
		}
		r.forget(group, ids...)
	}
}

// RelayedMember reports whether the coordinator of group handed member out
// through kproxy (within the last hour): a member a group move may remove
// from its new home as one its clients left behind there.
func (s *Server) RelayedMember(group, member string) bool { return s.relayed.has(group, member) }

// RelayedMembers is every member id of group kproxy handed out (within the
// last hour). With several instances each knows the members it relayed:
// a coordinated group move gathers them from every instance's answer to
// the hold (control/coordgroups.go).
func (s *Server) RelayedMembers(group string) []string {
	r := &s.relayed
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock()
	var out []string
	for id, at := range r.m[group] {
		if now.Sub(at) <= relayedMemberMaxAge {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
