package control

// The group move controller: turns a reload that changes a consumer group's
// home (groups.* in the config) into hold -> wait for in-flight commits ->
// copy the committed offsets verbatim (they are virtual, so the same numbers
// mean the same records on either cluster) -> pin the group to its new home
// -> release, bounded by cutover.max_hold. On any error the group is pinned
// to its old home and released there ("aborted"); the next reload that
// still names the new home tries again. Members notice once: their next
// heartbeat reaches a coordinator that does not know them (UNKNOWN_MEMBER_ID)
// and they rejoin there, resuming from the copied offsets. Commits sent
// during the hold are queued by the proxy and land on the new home after the
// copy (proxy/group_hold.go). Topic routes, and topic flips, never move a
// group.
//
// Which groups move: every exact group id named in the old or the new
// config's groups section, and every pinned group, is compared directly.
// When a glob or groups.default changes, the groups it may move are the ones
// that exist: they are listed (ListGroups) on both clusters in the
// background, and each one whose home changes and that the listing found on
// its old home moves. Until that listing is done, every group not pinned
// keeps the home the previous table gave it (the frozen table), so none of
// them reaches its new home before its offsets do.
//
// Persisted: state_dir/group-homes.json keeps the groups section in effect
// and the pins (saveLocked), and start-up restores them (restore), so a
// restart after an aborted or interrupted move, or with a groups section
// edited while kproxy was down, moves the group again with its offsets
// instead of serving it from a home that lacks them. Without state_dir a
// move runs in memory only.
//
// With control: (several instances, or one with a control cluster) no move
// runs here on its own: considerLocked asks the coordinator for it, and
// every instance holds, the driver copies, and every instance pins and
// releases as the control topic decides (coordgroups.go). The steps are
// this file's (hold, wait, copyCommitted, pin, release).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
	"github.com/kproxy/kproxy/statefile"
)

// GroupMoveState is where a group's home move is; /status shows it as its
// string.
type GroupMoveState string

// Group move states.
const (
	groupHolding GroupMoveState = "holding" // coordinator requests held, waiting for in-flight commits
	groupCopying GroupMoveState = "copying" // committed offsets being copied
	groupMoved   GroupMoveState = "moved"
	groupAborted GroupMoveState = "aborted" // the group stays on its old home; Reason says why
)

// GroupMoveStatus is one group's move, for /status and `kproxy status`.
type GroupMoveStatus struct {
	Group      string         `json:"group"`
	From       string         `json:"from"`
	To         string         `json:"to"`
	State      GroupMoveState `json:"state"`
	Reason     string         `json:"reason,omitempty"`
	Offsets    int            `json:"offsets"` // partitions whose committed offsets were copied
	StartedAt  time.Time      `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at,omitzero"`
	HoldMillis int64          `json:"hold_ms"`
	Held       int            `json:"held_commits"` // commits queued by the proxy (at release, once done)
}

// groupMoves owns group moves and the routing overlay that keeps a group on
// the cluster its offsets are on.
type groupMoves struct {
	log   hclog.Logger
	srv   groupHolder
	moves *prometheus.CounterVec

	// ctx is the controller's lifetime: Close cancels it, which aborts a
	// running move (the group stays on its old home).
	ctx     context.Context
	overlay *overlay

	mu     sync.Mutex // guards the fields below
	cfg    *config.Config
	table  *routing.Table    // the config's table, under the overlay
	pins   map[string]string // group -> the cluster that coordinates it now
	frozen *routing.Table    // non-nil while globs resolve: unpinned groups keep this table's home
	status map[string]*GroupMoveStatus
	// running holds the groups whose run has not returned. A move's status
	// says moved or aborted before its held requests are released, and a
	// reload in between (a routes edit right after a move, reversing it)
	// started a second, opposite move of the group while the first still
	// held it: the first's release let commits through to the home the
	// second was copying away from, and a consumer group skipped thousands
	// of records (TestGroupMovesBackAndForthUnderLoad on a loaded machine).
	running map[string]bool
	wg      sync.WaitGroup // running moves and glob listings
	file    string         // state_dir/group-homes.json ("" without state_dir)
	admins  *clusterAdmins // shared with the cutover controller

	// coord: several instances (config control:), every move runs
	// through the control topic (coordgroups.go) and this instance only
	// says what its config asks for; nil with one instance. restored:
	// the groups whose pin is the control topic's home, which the
	// state_dir's pins do not override.
	coord    *coordFlips
	restored map[string]bool
	// prepareHook, set by tests, runs first in coordPrepare.
	prepareHook func(ctx context.Context) error
}

// groupHolder is the proxy's side of a group move (proxy/group_hold.go).
type groupHolder interface {
	HoldGroup(group string)
	ReleaseGroup(group string)
	WaitGroupIdle(ctx context.Context, group string) error
	GroupHeldCount(group string) int
	// RelayedMember says whether the group's coordinator handed member
	// out through kproxy (proxy/group_members.go); RelayedMembers lists
	// them.
	RelayedMember(group, member string) bool
	RelayedMembers(group string) []string
	// RefuseHeldGroup answers the held commits retriable, sent nowhere
	// (an instance stopping during a coordinated move).
	RefuseHeldGroup(group string)
}

// groupHomes is what group-homes.json keeps: the groups section in effect
// and the pins, so that start-up can compare the config with where the
// groups really are.
type groupHomes struct {
	Groups config.Groups     `json:"groups"`
	Pins   map[string]string `json:"pins,omitempty"`
}

// restore reads state_dir/group-homes.json and makes start-up behave like a
// reload from the groups config in effect when kproxy last ran: a groups
// change made while kproxy was down then moves those groups with their
// offsets, instead of serving them from a home that does not have them. It
// returns the table to pass to apply as prev (nil: nothing was kept).
func (g *groupMoves) restore(cfg *config.Config) (*routing.Table, error) {
	if cfg.StateDir == "" {
		return nil, nil
	}
	g.mu.Lock()
	g.file = filepath.Join(cfg.StateDir, "group-homes.json")
	file := g.file
	g.mu.Unlock()
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h groupHomes
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	last := *cfg
	last.Groups = h.Groups
	prev, err := routing.NewTable(&last)
	if err != nil {
		return nil, fmt.Errorf("%s: the groups section kproxy last served no longer fits the config: %w", file, err)
	}
	g.mu.Lock()
	g.cfg = &last
	for k, v := range h.Pins {
		if !g.restored[k] { // the control topic's home wins
			g.pins[k] = v
		}
	}
	g.mu.Unlock()
	return prev, nil
}

// saveLocked persists the groups section in effect and the pins. Callers
// hold mu. A failure is logged: moves go on, and the next save retries.
func (g *groupMoves) saveLocked() {
	if g.file == "" || g.cfg == nil {
		return
	}
	b, _ := json.MarshalIndent(groupHomes{Groups: g.cfg.Groups, Pins: g.pins}, "", "  ")
	if err := statefile.WriteAtomic(g.file, b, 0o644); err != nil {
		g.log.Error("group homes not saved; a restart with a changed groups section may not move them", "file", g.file, "error", err)
	}
}

func newGroupMoves(ctx context.Context, log hclog.Logger, srv groupHolder, ov *overlay, admins *clusterAdmins, reg prometheus.Registerer) *groupMoves {
	g := &groupMoves{
		log: log, srv: srv, ctx: ctx, overlay: ov, admins: admins,
		pins: map[string]string{}, status: map[string]*GroupMoveStatus{}, running: map[string]bool{}, restored: map[string]bool{},
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_group_moves_total",
			Help: "Consumer group home moves, by result (moved, aborted).",
		}, []string{"result"}),
	}
	g.moves.WithLabelValues("moved")
	g.moves.WithLabelValues("aborted")
	reg.MustRegister(g.moves)
	return g
}

// refresh hands the overlay the group pins and the frozen table; the
// overlay installs the router. Called without mu held.
func (g *groupMoves) refresh() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.overlay.setGroups(g.pins, g.frozen)
}

// apply takes a new config's table (prev is the table it replaces; nil at
// startup, when nothing moves) and starts a move for every group whose home
// changes. Call it before the overlay serves next, so the pins it sets are
// in the first router that serves next.
func (g *groupMoves) apply(cfg *config.Config, prev, next *routing.Table) {
	g.mu.Lock()
	defer g.mu.Unlock()
	prevCfg := g.cfg
	g.cfg, g.table = cfg, next
	// A closure, not `defer g.overlay.setGroups(g.pins, g.frozen)`: that
	// evaluates g.frozen now, before it is set below, and served a changed
	// default or glob's groups from their new home until the listing
	// pinned them back to the old one (the soak's re-reads after moves).
	defer func() { g.overlay.setGroups(g.pins, g.frozen) }()
	defer g.saveLocked()
	if prev == nil && g.coord != nil {
		// Several instances: the control topic's homes (pins) are
		// compared with the config at start too.
		prev = next
	}
	if prev == nil {
		return
	}
	names := map[string]bool{}
	for _, c := range []*config.Config{prevCfg, cfg} {
		if c == nil {
			continue
		}
		for k := range c.Groups.Homes {
			if !config.IsGlob(k) {
				names[k] = true
			}
		}
	}
	for k := range g.pins {
		names[k] = true
	}
	for _, name := range sortedGroupKeys(names) {
		g.considerLocked(cfg, name, g.currentLocked(name, prev), true)
	}
	if prevCfg == nil || g.frozen != nil || globsChanged(prevCfg, cfg) {
		if g.frozen == nil {
			g.frozen = prev
		}
		g.wg.Add(1)
		go g.resolve(cfg)
	}
}

// currentLocked is the cluster that coordinates group now; prev is the
// table the router served before g.table (nil: g.table).
func (g *groupMoves) currentLocked(group string, prev *routing.Table) string {
	if c, ok := g.pins[group]; ok {
		return c
	}
	if g.frozen != nil {
		return string(g.frozen.GroupHome(group))
	}
	if prev == nil {
		prev = g.table
	}
	return string(prev.GroupHome(group))
}

// considerLocked starts moving group from cur to its home in g.table, or
// drops its pin when that is where it is. With several instances it asks
// the coordinator for the move instead (retry: a reload, which tries a move
// that aborted again).
func (g *groupMoves) considerLocked(cfg *config.Config, group, cur string, retry bool) {
	to := string(g.table.GroupHome(group))
	st := g.status[group]
	if g.running[group] {
		if g.coord != nil && st != nil {
			// The want follows the config during a coordinated hold:
			// the driver aborts a move its config no longer asks for.
			g.coord.want(groupSubject(group), st.From, to, retry)
		}
		return // run (coordEnd) looks at the table again when it ends
	}
	if cur == to {
		delete(g.pins, group)
		if st != nil && st.State == groupAborted {
			delete(g.status, group)
		}
		if g.coord != nil {
			g.coord.want(groupSubject(group), cur, cur, false)
		}
		return
	}
	g.pins[group] = cur
	if g.coord != nil {
		g.coord.want(groupSubject(group), cur, to, retry)
		return
	}
	g.status[group] = &GroupMoveStatus{Group: group, From: cur, To: to, State: groupHolding, StartedAt: time.Now()}
	g.running[group] = true
	g.wg.Add(1)
	go g.run(cfg, group, cur, to)
}

// globsChanged reports whether the group globs or groups.default differ.
func globsChanged(a, b *config.Config) bool {
	if a.Groups.Default != b.Groups.Default {
		return true
	}
	globs := func(c *config.Config) map[string]config.Cluster {
		out := map[string]config.Cluster{}
		for k, v := range c.Groups.Homes {
			if config.IsGlob(k) {
				out[k] = v
			}
		}
		return out
	}
	return !maps.Equal(globs(a), globs(b))
}

// resolve lists the groups that exist and moves those whose home changed,
// then lifts the frozen table.
func (g *groupMoves) resolve(cfg *config.Config) {
	defer g.wg.Done()
	ctx, cancel := context.WithTimeout(g.ctx, 30*time.Second)
	defer cancel()
	listed := map[string][]string{} // group -> clusters it was listed on
	var errs []error
	for _, cluster := range []string{proxy.Source, proxy.Target} {
		if cfg.Clusters.Get(config.Cluster(cluster)) == nil {
			continue
		}
		adm, err := g.admins.get(cfg, cluster)
		if err == nil {
			var gs kadm.ListedGroups
			gs, err = adm.ListGroups(ctx)
			for name := range gs {
				listed[name] = append(listed[name], cluster)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("listing groups on %s: %w", cluster, err))
		}
	}

	g.mu.Lock()
	if g.cfg != cfg {
		g.mu.Unlock()
		return // a later reload listed again
	}
	if err := errors.Join(errs...); err != nil {
		g.mu.Unlock()
		g.log.Error("could not list consumer groups to resolve changed group globs; groups they match keep their previous home until the next reload", "error", err)
		return
	}
	for _, name := range sortedGroupKeys(listed) {
		cur := g.currentLocked(name, nil)
		found := false
		for _, c := range listed[name] {
			found = found || c == cur
		}
		if found { // else it has no coordinator state on its home: nothing to move
			g.considerLocked(cfg, name, cur, true)
		}
	}
	g.frozen = nil
	g.mu.Unlock()
	g.refresh()
}

// run is one group's hold -> copy -> pin -> release.
func (g *groupMoves) run(cfg *config.Config, group, from, to string) {
	defer g.wg.Done()
	limit := cfg.Cutover.MaxHold
	if limit <= 0 {
		limit = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(g.ctx, limit)
	defer cancel()
	start := time.Now()
	g.srv.HoldGroup(group)
	g.log.Info("group move holding coordinator requests", "group", group, "from", from, "to", to, "max_hold", limit)

	n, err := g.copyOffsets(ctx, cfg, group, from, to)
	held := time.Since(start)

	g.mu.Lock()
	st := g.status[group]
	st.HoldMillis, st.FinishedAt, st.Offsets = held.Milliseconds(), time.Now(), n
	st.Held = g.srv.GroupHeldCount(group)
	if err != nil {
		st.State, st.Reason = groupAborted, err.Error()
		g.pins[group] = from
		g.moves.WithLabelValues("aborted").Inc()
	} else {
		st.State = groupMoved
		g.pins[group] = to
		g.moves.WithLabelValues("moved").Inc()
	}
	g.saveLocked()
	g.mu.Unlock()
	// Release after the router names the cluster the queued commits go to.
	g.refresh()
	g.srv.ReleaseGroup(group)
	if err != nil {
		g.log.Error("group move aborted; the group stays on its old home", "group", group, "from", from, "to", to, "held_commits", st.Held, "hold", held, "error", err)
		g.mu.Lock()
		delete(g.running, group)
		g.mu.Unlock()
		return
	}
	g.log.Info("group moved; coordinator requests released to the new home", "group", group, "from", from, "to", to, "offsets", n, "held_commits", st.Held, "hold", held)

	// The config may have changed while the group moved.
	g.mu.Lock()
	delete(g.running, group)
	if g.frozen == nil && string(g.table.GroupHome(group)) == to {
		delete(g.pins, group) // the table says the same
	} else if g.frozen == nil {
		g.considerLocked(g.cfg, group, to, false)
	}
	g.saveLocked()
	g.mu.Unlock()
	g.refresh()
}

func (g *groupMoves) setState(group string, state GroupMoveState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.status[group]; st != nil {
		st.State = state
		g.log.Info("group move "+string(state), "group", group, "from", st.From, "to", st.To)
	}
}

// copyOffsets waits for in-flight commits, then copies the committed
// offsets (copyCommitted), the members this instance relayed being the ones
// it may remove from to.
func (g *groupMoves) copyOffsets(ctx context.Context, cfg *config.Config, group, from, to string) (int, error) {
	if err := g.srv.WaitGroupIdle(ctx, group); err != nil {
		return 0, fmt.Errorf("waiting for in-flight offset commits: %w", err)
	}
	g.setState(group, groupCopying)
	return g.copyCommitted(ctx, cfg, group, from, to, func(member string) bool { return g.srv.RelayedMember(group, member) })
}

// copyCommitted writes the group's committed offsets on from to to, and
// reads them back (the hold's in-flight commits are over). It returns how
// many partitions were copied. A topic to lacks keeps its commits on from,
// where the proxy looks for them (proxy/group_offsets.go). relayed says
// whether kproxy handed a member out (removeLeftovers). Offsets are virtual
// on both clusters: copied verbatim, flipped topic or not.
func (g *groupMoves) copyCommitted(ctx context.Context, cfg *config.Config, group, from, to string, relayed func(member string) bool) (int, error) {
	src, err := g.admins.get(cfg, from)
	if err != nil {
		return 0, err
	}
	fetched, err := src.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading committed offsets on %s: %w", from, err)
	}
	if err := fetched.Error(); err != nil {
		return 0, fmt.Errorf("reading committed offsets on %s: %w", from, err)
	}
	offs := kadm.Offsets{}
	fetched.Each(func(r kadm.OffsetResponse) {
		if r.At >= 0 {
			offs.Add(r.Offset)
		}
	})
	if len(offs) == 0 {
		return 0, nil
	}
	dst, err := g.admins.get(cfg, to)
	if err != nil {
		return 0, err
	}
	if err := g.removeLeftovers(ctx, cfg, group, to, relayed); err != nil {
		return 0, err
	}
	committed, err := g.commitWhenEmpty(ctx, dst, group, offs)
	if err != nil {
		return 0, fmt.Errorf("writing committed offsets on %s: %w", to, err)
	}
	var errs []error
	written := kadm.Offsets{}
	committed.Each(func(r kadm.OffsetResponse) {
		switch {
		case r.Err == nil:
			written.Add(r.Offset)
		case errors.Is(r.Err, kerr.UnknownTopicOrPartition):
			g.log.Warn("topic missing on the group's new home; its committed offsets stay on the old home", "group", group, "topic", r.Topic, "partition", r.Partition, "cluster", from)
		default:
			errs = append(errs, fmt.Errorf("%s/%d: %w", r.Topic, r.Partition, r.Err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("writing committed offsets on %s (does the group have members there already?): %w", to, err)
	}
	back, err := dst.FetchOffsets(ctx, group)
	if err == nil {
		err = back.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("reading back committed offsets on %s: %w", to, err)
	}
	n := 0
	written.Each(func(o kadm.Offset) {
		n++
		got, ok := back.Lookup(o.Topic, o.Partition)
		if (!ok || got.At != o.At || got.Metadata != o.Metadata) && err == nil {
			err = fmt.Errorf("%s/%d: %s reads back offset %d after %d was written", o.Topic, o.Partition, to, got.At, o.At)
		}
	})
	return n, err
}

// removeLeftovers empties group on to of the members its clients left
// there when the group last moved away (a move there and back within the
// members' session or rebalance timeout), so the admin commit that copies
// the offsets is accepted. Members kproxy never handed out are clients
// connected to to directly: they are left alone, and the commit then fails
// and the move aborts, as it should (proxy/group_members.go says why).
func (g *groupMoves) removeLeftovers(ctx context.Context, cfg *config.Config, group, to string, relayed func(member string) bool) error {
	dst, err := g.admins.get(cfg, to)
	if err != nil {
		return err
	}
	// Best effort: a new home that cannot describe the group yet (its
	// coordinator loading, or __consumer_offsets not yet created on a
	// cluster no group has used: COORDINATOR_NOT_AVAILABLE) is asked again
	// for up to 2 s, then the move goes on to the commit, which waits for
	// the coordinator itself and fails as before if members are there.
	var d kadm.DescribedGroup
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		var described kadm.DescribedGroups
		described, err = dst.DescribeGroups(dctx, group)
		if err == nil {
			d = described[group]
			err = d.Err
		}
		if err == nil || errors.Is(err, kerr.GroupIDNotFound) || dctx.Err() != nil {
			break
		}
		select {
		case <-dctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		if !errors.Is(err, kerr.GroupIDNotFound) {
			g.log.Warn("could not describe the group on its new home; members an earlier move left there are not removed", "group", group, "cluster", to, "error", err)
		}
		return nil
	}
	if len(d.Members) == 0 {
		return nil
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	for _, m := range d.Members {
		if !relayed(m.MemberID) {
			return fmt.Errorf("the group has %d member(s) on %s, and %s (client %q at %s) did not join through kproxy: a consumer connected to %s directly", len(d.Members), to, m.MemberID, m.ClientID, m.ClientHost, to)
		}
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID, lm.InstanceID = m.MemberID, m.InstanceID
		reason := "kproxy group move: a member left behind by an earlier move"
		lm.Reason = &reason
		req.Members = append(req.Members, lm)
	}
	cl, err := g.admins.client(cfg, to)
	if err != nil {
		return err
	}
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		return fmt.Errorf("removing %d member(s) left on %s by an earlier move: %w", len(req.Members), to, err)
	}
	for _, m := range resp.Members {
		if e := kerr.ErrorForCode(m.ErrorCode); e != nil && !errors.Is(e, kerr.UnknownMemberID) {
			return fmt.Errorf("removing member %s left on %s by an earlier move: %w", m.MemberID, to, e)
		}
	}
	g.log.Info("removed group members left on the new home by an earlier move", "group", group, "cluster", to, "members", len(req.Members))
	return nil
}

// commitWhenEmpty is the admin commit of offs to group, retried while the
// coordinator still finishes the rebalance that removing leftover members
// started (REBALANCE_IN_PROGRESS, or UNKNOWN_MEMBER_ID while it is not yet
// empty), until ctx (the move's max_hold) ends.
func (g *groupMoves) commitWhenEmpty(ctx context.Context, dst *kadm.Client, group string, offs kadm.Offsets) (kadm.OffsetResponses, error) {
	for {
		committed, err := dst.CommitOffsets(ctx, group, offs)
		if err != nil {
			return nil, err
		}
		retry := false
		committed.Each(func(r kadm.OffsetResponse) {
			retry = retry || errors.Is(r.Err, kerr.RebalanceInProgress) || errors.Is(r.Err, kerr.UnknownMemberID)
		})
		if !retry {
			return committed, nil
		}
		select {
		case <-ctx.Done():
			return committed, nil // the caller reports the per-partition errors
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// list is every group move, for /status.
func (g *groupMoves) list() []GroupMoveStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]GroupMoveStatus, 0, len(g.status))
	for _, st := range g.status {
		s := *st
		if s.State == groupHolding || s.State == groupCopying {
			s.Held = g.srv.GroupHeldCount(s.Group)
			s.HoldMillis = time.Since(s.StartedAt).Milliseconds()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// wait blocks until no move or listing runs (tests; Close).
func (g *groupMoves) wait() { g.wg.Wait() }

func sortedGroupKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
