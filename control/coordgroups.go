package control

// Coordinated group home moves (docs/ha.md, "Group home moves with several
// instances"; docs/decisions/011-coordinated-group-moves.md): with several
// instances (config control:), a group's home moves through the control
// topic as a replicated topic's does (coordflip.go), on the same records
// and driver, the subject being "group:" and the escaped group id instead
// of a topic name (no topic name holds a colon):
//
//   - the driver (lowest instance id) starts a move when its config gives
//     the group another home than the one the control topic (or, before
//     any move, the config it started with) gives it;
//   - every instance holds the group (its commits queue, its other requests
//     answer NOT_COORDINATOR, proxy/group_hold.go), waits for its commits
//     in flight, and answers ready with the member ids it handed out;
//   - once every member is ready, the driver copies the committed offsets
//     from the old home to the new one (groupMoves.copyCommitted: virtual
//     offsets, the same numbers on both clusters, whether the group's
//     topics flipped or not) and only then publishes the decision; a copy
//     that fails, a view change or max_hold abort;
//   - every instance pins the group where the first decision says and
//     releases: its queued commits are replayed there.
//
// The home is the destination of the last move decided flipped, read at
// start (coordFlips.restore) before clients are served, so every instance
// agrees after a crash or restart. groupMoves keeps it as a pin while the
// config names another home.

import (
	"context"
	"net/url"
	"strings"
	"time"
)

const groupSubjectPrefix = "group:"

// groupSubject is the control topic's subject for a group's moves. Group
// ids may hold any character, a slash too, which the record keys use as
// separator: escaped.
func groupSubject(group string) string { return groupSubjectPrefix + url.PathEscape(group) }

// subjectGroup is the group a subject names (ok false: a topic).
func subjectGroup(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, groupSubjectPrefix)
	if !ok {
		return "", false
	}
	g, err := url.PathUnescape(rest)
	return g, err == nil
}

// coordSubjects hands each subject of the coordinator to its side: topics
// to the cutover controller, groups to the group mover.
type coordSubjects struct {
	topics flipLocal
	groups *groupMoves
}

func (s coordSubjects) coordHold(subject, from, to string) {
	if g, ok := subjectGroup(subject); ok {
		s.groups.coordHold(g, from, to)
		return
	}
	s.topics.coordHold(subject, from, to)
}

func (s coordSubjects) coordPrepare(ctx context.Context, subject, from, to string) (int32, map[int32]flipPoint, error) {
	if g, ok := subjectGroup(subject); ok {
		return 0, nil, s.groups.coordPrepare(ctx, g)
	}
	return s.topics.coordPrepare(ctx, subject, from, to)
}

func (s coordSubjects) coordCommit(subject, from, to string, gen int64, prepared bool, points map[int32]flipPoint) {
	if g, ok := subjectGroup(subject); ok {
		s.groups.coordEnd(g, from, to, "")
		return
	}
	s.topics.coordCommit(subject, from, to, gen, prepared, points)
}

func (s coordSubjects) coordRestore(subject, from, to string, gen int64, points, left map[int32]flipPoint) error {
	if g, ok := subjectGroup(subject); ok {
		s.groups.coordRestore(g, to)
		return nil
	}
	return s.topics.coordRestore(subject, from, to, gen, points, left)
}

func (s coordSubjects) coordMoves(subject string, n uint64) {
	if _, ok := subjectGroup(subject); !ok {
		s.topics.coordMoves(subject, n)
	}
}

func (s coordSubjects) coordRefuse(subject string) {
	if g, ok := subjectGroup(subject); ok {
		s.groups.srv.RefuseHeldGroup(g)
		s.groups.log.Warn("group move undecided as this instance stops: its held commits are refused (the clients commit through another instance)", "group", g)
		return
	}
	s.topics.coordRefuse(subject)
}

func (s coordSubjects) coordAbort(subject, from, to string, prepared bool, reason string) {
	if g, ok := subjectGroup(subject); ok {
		s.groups.coordEnd(g, from, to, "aborted by the driver: "+reason)
		return
	}
	s.topics.coordAbort(subject, from, to, prepared, reason)
}

func (s coordSubjects) copiesAtDecision(subject string) bool {
	_, ok := subjectGroup(subject)
	return ok
}

func (s coordSubjects) coordCopy(ctx context.Context, subject, from, to string, readies []readyRecord) error {
	g, _ := subjectGroup(subject)
	relayed := map[string]bool{}
	for _, r := range readies {
		for _, m := range r.Relayed {
			relayed[m] = true
		}
	}
	return s.groups.coordCopy(ctx, g, from, to, func(member string) bool { return relayed[member] })
}

func (s coordSubjects) coordRelayed(subject string) []string {
	if g, ok := subjectGroup(subject); ok {
		return s.groups.srv.RelayedMembers(g)
	}
	return nil
}

var (
	_ flipLocal     = coordSubjects{}
	_ flipCopier    = coordSubjects{}
	_ relayedLister = coordSubjects{}
)

// coordHold pins group on from (where its queued commits are validated
// at release) and holds it.
func (g *groupMoves) coordHold(group, from, to string) {
	g.mu.Lock()
	g.pins[group] = from
	g.status[group] = &GroupMoveStatus{Group: group, From: from, To: to, State: groupHolding, StartedAt: time.Now()}
	g.running[group] = true
	g.overlay.setGroups(g.pins, g.frozen)
	g.mu.Unlock()
	g.srv.HoldGroup(group)
	g.log.Info("coordinated group move: holding", "group", group, "from", from, "to", to)
}

// coordPrepare waits for the group's commits in flight here.
func (g *groupMoves) coordPrepare(ctx context.Context, group string) error {
	if g.prepareHook != nil {
		if err := g.prepareHook(ctx); err != nil {
			return err
		}
	}
	return g.srv.WaitGroupIdle(ctx, group)
}

// coordCopy is the driver's copy of the committed offsets, every instance
// holding the group; relayed is every member id the instances handed out.
func (g *groupMoves) coordCopy(ctx context.Context, group, from, to string, relayed func(member string) bool) error {
	g.mu.Lock()
	cfg := g.cfg
	g.mu.Unlock()
	g.setState(group, groupCopying)
	n, err := g.copyCommitted(ctx, cfg, group, from, to, relayed)
	g.mu.Lock()
	if st := g.status[group]; st != nil {
		st.Offsets = n
	}
	g.mu.Unlock()
	if err != nil {
		g.log.Error("coordinated group move: the committed offsets were not copied; the move aborts", "group", group, "from", from, "to", to, "error", err)
	} else {
		g.log.Info("coordinated group move: committed offsets copied", "group", group, "from", from, "to", to, "offsets", n)
	}
	return err
}

// coordEnd ends this instance's part in a group's move as decided: moved
// (reason "") or aborted. The group is pinned on its home, then released
// there, then compared with the config again.
func (g *groupMoves) coordEnd(group, from, to, reason string) {
	g.mu.Lock()
	st := g.status[group]
	if st == nil {
		st = &GroupMoveStatus{Group: group, From: from, To: to, StartedAt: time.Now()}
		g.status[group] = st
	}
	st.FinishedAt = time.Now()
	st.HoldMillis = st.FinishedAt.Sub(st.StartedAt).Milliseconds()
	st.Held = g.srv.GroupHeldCount(group)
	home := to
	if reason != "" {
		home = from
		st.State, st.Reason = groupAborted, reason
		g.moves.WithLabelValues("aborted").Inc()
	} else {
		st.State = groupMoved
		g.moves.WithLabelValues("moved").Inc()
	}
	g.pins[group] = home
	g.saveLocked()
	g.overlay.setGroups(g.pins, g.frozen)
	g.mu.Unlock()
	// After the router names the home the queued commits go to.
	g.srv.ReleaseGroup(group)
	if reason != "" {
		g.log.Warn("coordinated group move aborted; the group stays on its home", "group", group, "home", from, "reason", reason)
	} else {
		g.log.Info("coordinated group move: moved; requests released to the new home", "group", group, "from", from, "to", to, "held_commits", st.Held)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.running, group)
	if g.table != nil && g.frozen == nil {
		g.considerLocked(g.cfg, group, home, false)
	}
	g.saveLocked()
	g.overlay.setGroups(g.pins, g.frozen)
}

// coordRestore makes the control topic's home of group this instance's at
// start, before the controller applies the config: a pin the config
// compares with (apply drops it where the config agrees).
func (g *groupMoves) coordRestore(group, home string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pins[group] = home
	g.restored[group] = true
}
