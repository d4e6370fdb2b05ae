package proxy

// Group hold, for moving a consumer group's home (control/groupmove.go).
// While a group is held, none of its coordinator requests reaches a cluster:
//
//   - OffsetCommit is queued in arrival order and answered at release. A
//     commit is the one group request whose loss costs the client something
//     (a member whose commit failed re-consumes from its previous one), and a
//     queue keeps commits in order.
//   - JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetFetch, OffsetDelete
//     and TxnOffsetCommit are answered NOT_COORDINATOR, and FindCoordinator
//     for the group COORDINATOR_NOT_AVAILABLE. Every client retries both
//     after looking the coordinator up again, with backoff (Java
//     AbstractCoordinator/ConsumerCoordinator response handlers, franz-go
//     kgo maybeDeleteStaleCoordinator), and kproxy answers the lookup
//     itself, so the retries never leave the proxy. COORDINATOR_LOAD_IN_
//     PROGRESS is not used for them: the Java client's Heartbeat handler
//     treats it as unexpected. These are not queued: a JoinGroup may
//     legitimately park for a whole rebalance timeout, heartbeats carry
//     nothing worth keeping, and a TxnOffsetCommit only takes effect when
//     its transaction ends on the old home's coordinator, which no replay
//     can arrange.
//
// ReleaseGroup answers the queue, in order. When the router still names the
// home the group had when the hold began (an aborted move), each commit is
// simply forwarded there. When it names a new home, each queued commit is
// first sent to the old home, whose coordinator still knows the member and
// validates its generation and member id as it would have without the move
// (a fenced member's commit is refused there); the partitions it accepted
// are then written to the new home as a simple commit (generation -1, no
// member id), which a coordinator accepts while the group has no members -
// true, because every other request of the group keeps getting
// NOT_COORDINATOR until the queue is empty. The client sees the old home's
// answer, or the new home's error for a partition the new home refused, so
// a commit answered "ok" is on the new home, after the copied snapshot, in
// arrival order. Nothing else is rewritten: offsets are virtual on both.
//
// The hold is removed only once its queue is empty (commits that arrive
// while the queue is replayed join it), as ReleaseProduce does.
//
// After a move, members still carry their old home's member id and
// generation until they rejoin, which the new home does not know. For
// moveGrace after the release (or until the group is held again):
//
//   - a commit the new home refuses with UNKNOWN_MEMBER_ID,
//     ILLEGAL_GENERATION or GROUP_ID_NOT_FOUND is replayed as above (old
//     home validates, new home takes a simple commit while it has no
//     members), so the progress a member made before it noticed the move
//     is not lost; once any member has joined the new home, the simple
//     commit is refused and the client gets the new home's error;
//   - a heartbeat the new home answers UNKNOWN_MEMBER_ID or
//     GROUP_ID_NOT_FOUND is answered REBALANCE_IN_PROGRESS instead, so the
//     member rejoins the clean way (a cooperative member keeps its
//     partitions and positions; an eager one commits on revoke, which the
//     previous rule accepts) instead of treating its partitions as lost and
//     rewinding to the last commit. Its JoinGroup then learns its member id
//     is unknown and joins anew: one rebalance.
//
// In-flight accounting: OffsetCommit and TxnOffsetCommit are counted from
// the hold check to their upstream answer, under the same mutex as the hold,
// so once HoldGroup returns no new commit can start and WaitGroupIdle sees
// every earlier one finish.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// moveGrace is how long after a move commits and heartbeats of members
// that have not rejoined yet are translated (see the file comment). A member
// notices within a heartbeat interval; the bound only frees the entry.
const moveGrace = 10 * time.Minute

// groupHoldLimit bounds how long a queued commit waits for ReleaseGroup, so
// a controller bug cannot wedge a client; it then answers
// COORDINATOR_LOAD_IN_PROGRESS, which clients retry for commits.
const groupHoldLimit = 10 * time.Minute

// heldCommit is one queued OffsetCommit.
type heldCommit struct {
	rc    *reqCtx
	req   *kmsg.OffsetCommitRequest
	done  chan struct{} // closed when resp is set
	resp  kmsg.Response
	taken bool // guarded by groupHolds.mu: ReleaseGroup owns the answer
}

type groupHold struct {
	from  string // the group's home when the hold began
	queue []*heldCommit
	since time.Time
}

// groupHolds is a Server's group hold and commit in-flight state.
type groupHolds struct {
	mu       sync.Mutex // guards the fields below
	held     map[string]*groupHold
	inflight map[string]int // group -> commits between hold check and answer
	moved    map[string]groupMove
}

// groupMove is a released move, for moveGrace.
type groupMove struct {
	from, to string
	until    time.Time
}

func (s *Server) groupHolds() *groupHolds {
	h := &s.gholds
	h.mu.Lock()
	if h.held == nil {
		h.held, h.inflight, h.moved = map[string]*groupHold{}, map[string]int{}, map[string]groupMove{}
	}
	h.mu.Unlock()
	return h
}

// groupHeld reports whether group's coordinator requests are being held.
func (s *Server) groupHeld(group string) bool {
	h := s.groupHolds()
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.held[group]
	return ok
}

// HoldGroup stops group's coordinator requests from reaching either
// cluster: commits queue, the rest are told to retry. The group's current
// home (the router's answer now) is remembered for ReleaseGroup.
func (s *Server) HoldGroup(group string) {
	h := s.groupHolds()
	from := s.routes().GroupCluster(group)
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.held[group]; !ok {
		h.held[group] = &groupHold{from: from, since: time.Now()}
	}
	delete(h.moved, group)
}

// GroupHeldCount is how many commits wait in group's hold.
func (s *Server) GroupHeldCount(group string) int {
	h := s.groupHolds()
	h.mu.Lock()
	defer h.mu.Unlock()
	if gh, ok := h.held[group]; ok {
		return len(gh.queue)
	}
	return 0
}

// WaitGroupIdle waits until no OffsetCommit or TxnOffsetCommit for group is
// in flight upstream (every one that passed the hold check was answered).
func (s *Server) WaitGroupIdle(ctx context.Context, group string) error {
	h := s.groupHolds()
	for {
		h.mu.Lock()
		n := h.inflight[group]
		h.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d offset commits for group %s still in flight: %w", n, group, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// ReleaseGroup ends group's hold: queued commits are answered in arrival
// order against the home the router names now (see the file comment), then
// the group's requests flow again. It returns once the queue is answered.
func (s *Server) ReleaseGroup(group string) {
	h := s.groupHolds()
	for {
		h.mu.Lock()
		gh, ok := h.held[group]
		if !ok {
			h.mu.Unlock()
			return
		}
		queue := gh.queue
		gh.queue = nil
		if len(queue) == 0 {
			delete(h.held, group)
			if to := s.routes().GroupCluster(group); to != gh.from {
				h.moved[group] = groupMove{from: gh.from, to: to, until: time.Now().Add(moveGrace)}
			}
			h.mu.Unlock()
			return
		}
		for _, hc := range queue {
			hc.taken = true
		}
		from := gh.from
		h.mu.Unlock()
		to := s.routes().GroupCluster(group)
		for _, hc := range queue {
			hc.resp = hc.rc.replayCommit(from, to, hc.req)
			close(hc.done)
		}
	}
}

// gateCommit is OffsetCommit's hold check. When the group is held it queues
// the commit and returns its answer once released (held true). Otherwise it
// counts the commit in flight; the caller calls done after the answer.
func (rc *reqCtx) gateCommit(req *kmsg.OffsetCommitRequest) (resp kmsg.Response, held bool, done func()) {
	h := rc.srv().groupHolds()
	h.mu.Lock()
	gh, ok := h.held[req.Group]
	if !ok {
		h.inflight[req.Group]++
		h.mu.Unlock()
		return nil, false, func() { h.leave(req.Group) }
	}
	hc := &heldCommit{rc: rc, req: req, done: make(chan struct{})}
	gh.queue = append(gh.queue, hc)
	h.mu.Unlock()

	t := time.NewTimer(groupHoldLimit)
	defer t.Stop()
	select {
	case <-hc.done:
		return hc.resp, true, nil
	case <-t.C:
	}
	h.mu.Lock()
	if !hc.taken {
		if gh, ok := h.held[req.Group]; ok {
			for i, q := range gh.queue {
				if q == hc {
					gh.queue = append(gh.queue[:i], gh.queue[i+1:]...)
					break
				}
			}
		}
		h.mu.Unlock()
		rc.cc.log.Error("held offset commit was never released; answering COORDINATOR_LOAD_IN_PROGRESS so the client retries", "group", req.Group)
		return errorResponse(req, kerr.CoordinatorLoadInProgress.Code), true, nil
	}
	h.mu.Unlock()
	<-hc.done // being replayed: bounded by upstream timeouts
	return hc.resp, true, nil
}

// gateGroup is the hold check of the other group-keyed APIs
// (toGroupCoordinator): a non-nil response when the group is held, else a
// done func (counting TxnOffsetCommit in flight).
func (rc *reqCtx) gateGroup(key kmsg.Key, group string, req kmsg.Request) (kmsg.Response, func()) {
	h := rc.srv().groupHolds()
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.held[group]; ok {
		if resp := errorResponse(req, kerr.NotCoordinator.Code); resp != nil {
			return resp, nil
		}
		// No error field to carry the code (none of today's group APIs):
		// nil closes the connection and the client retries.
		return nil, nil
	}
	if key != kmsg.TxnOffsetCommit {
		return nil, func() {}
	}
	h.inflight[group]++
	return nil, func() { h.leave(group) }
}

// recentMove returns group's move if it was released within moveGrace and
// the group is still routed to where it moved.
func (rc *reqCtx) recentMove(group string) (groupMove, bool) {
	s := rc.srv()
	h := s.groupHolds()
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.moved[group]
	if !ok {
		return m, false
	}
	if time.Now().After(m.until) {
		delete(h.moved, group)
		return m, false
	}
	return m, s.routes().GroupCluster(group) == m.to
}

// afterMoveCommit replays a commit the new home refused because the member
// has not rejoined since its group moved (see the file comment).
func (rc *reqCtx) afterMoveCommit(req *kmsg.OffsetCommitRequest, resp kmsg.Response) kmsg.Response {
	r, ok := resp.(*kmsg.OffsetCommitResponse)
	if !ok || (req.Generation < 0 && req.MemberID == "") {
		return resp
	}
	refused := false
	for _, t := range r.Topics {
		for _, p := range t.Partitions {
			switch p.ErrorCode {
			case kerr.UnknownMemberID.Code, kerr.IllegalGeneration.Code, kerr.GroupIDNotFound.Code:
				refused = true
			}
		}
	}
	if !refused {
		return resp
	}
	m, ok := rc.recentMove(req.Group)
	if !ok {
		return resp
	}
	return rc.replayCommit(m.from, m.to, req)
}

// afterMoveHeartbeat turns the new home's "who are you?" to a member that
// has not rejoined since its group moved into REBALANCE_IN_PROGRESS.
func (rc *reqCtx) afterMoveHeartbeat(group string, resp kmsg.Response) kmsg.Response {
	r, ok := resp.(*kmsg.HeartbeatResponse)
	if !ok || (r.ErrorCode != kerr.UnknownMemberID.Code && r.ErrorCode != kerr.GroupIDNotFound.Code) {
		return resp
	}
	if _, ok := rc.recentMove(group); ok {
		r.ErrorCode = kerr.RebalanceInProgress.Code
	}
	return resp
}

func (h *groupHolds) leave(group string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inflight[group]--; h.inflight[group] <= 0 {
		delete(h.inflight, group)
	}
}

// groupOffsetsOrHeld is OffsetFetch's per-group answer: NOT_COORDINATOR
// (on the group and on every requested partition, for versions without a
// group-level error) while the group is held, else fetchGroupOffsets.
func (rc *reqCtx) groupOffsetsOrHeld(req *kmsg.OffsetFetchRequest, g kmsg.OffsetFetchRequestGroup) kmsg.OffsetFetchResponseGroup {
	s := rc.srv()
	// Another instance coordinates the group (instances.go: notCoordinator;
	// the batched form answers per group, so the check is here).
	elsewhere := s.notCoordinator(coordGroup, g.Group, req) != nil
	if !elsewhere && !s.groupHeld(g.Group) {
		return rc.fetchGroupOffsets(req, g)
	}
	out := kmsg.NewOffsetFetchResponseGroup()
	out.Group = g.Group
	out.ErrorCode = kerr.NotCoordinator.Code
	out.Topics = noOffsets(g.Topics, kerr.NotCoordinator.Code)
	return out
}

// replayCommit answers a commit queued during a hold that began with the
// group on from; to is the group's home at release.
func (rc *reqCtx) replayCommit(from, to string, req *kmsg.OffsetCommitRequest) kmsg.Response {
	r := rc.commitAt(from, req)
	if from == to {
		return r
	}
	old, ok := r.(*kmsg.OffsetCommitResponse)
	if !ok {
		return r
	}
	accepted := map[string]map[int32]bool{}
	for _, t := range old.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 {
				if accepted[t.Topic] == nil {
					accepted[t.Topic] = map[int32]bool{}
				}
				accepted[t.Topic][p.Partition] = true
			}
		}
	}
	// The same offsets, as a simple commit, for the partitions whose
	// commits live on the new home (a topic the new home lacks keeps its
	// commits where the first write put them; see group_offsets.go).
	simple := *req
	simple.Generation, simple.MemberID, simple.InstanceID, simple.Topics = -1, "", nil, nil
	look := newLeaderLookup(rc)
	for _, t := range req.Topics {
		if rc.offsetHome(to, t.Topic, look) != to {
			continue
		}
		st := t
		st.Partitions = nil
		for _, p := range t.Partitions {
			if accepted[t.Topic][p.Partition] {
				st.Partitions = append(st.Partitions, p)
			}
		}
		if len(st.Partitions) > 0 {
			simple.Topics = append(simple.Topics, st)
		}
	}
	if len(simple.Topics) == 0 {
		return old
	}
	failed := map[string]map[int32]int16{}
	if nr, ok := rc.forwardCoordinator(to, coordGroup, req.Group, &simple).(*kmsg.OffsetCommitResponse); ok {
		for _, t := range nr.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					if failed[t.Topic] == nil {
						failed[t.Topic] = map[int32]int16{}
					}
					failed[t.Topic][p.Partition] = p.ErrorCode
				}
			}
		}
	} else {
		for _, t := range simple.Topics {
			failed[t.Topic] = map[int32]int16{}
			for _, p := range t.Partitions {
				failed[t.Topic][p.Partition] = kerr.CoordinatorNotAvailable.Code
			}
		}
	}
	if len(failed) > 0 {
		rc.cc.log.Warn("a commit held during a group move was accepted by the old home but not the new one; the client is told it failed", "group", req.Group, "from", from, "to", to)
	}
	for i := range old.Topics {
		t := &old.Topics[i]
		for j := range t.Partitions {
			if code, ok := failed[t.Topic][t.Partitions[j].Partition]; ok {
				t.Partitions[j].ErrorCode = code
			}
		}
	}
	return old
}

// RefuseHeldGroup answers group's queued commits NOT_COORDINATOR, sent
// nowhere, and keeps the hold: an instance that stops while a coordinated
// move of the group is undecided cannot know which cluster is its home
// (control/coordgroups.go). Clients look the coordinator up again and
// commit through another instance.
func (s *Server) RefuseHeldGroup(group string) {
	h := s.groupHolds()
	h.mu.Lock()
	gh, ok := h.held[group]
	if !ok {
		h.mu.Unlock()
		return
	}
	queue := gh.queue
	gh.queue = nil
	for _, hc := range queue {
		hc.taken = true
	}
	h.mu.Unlock()
	for _, hc := range queue {
		hc.resp = errorResponse(hc.req, kerr.NotCoordinator.Code)
		close(hc.done)
	}
}
