// Package membership tells each kproxy instance which instances of its
// virtual cluster are alive, through a Kafka group on the control cluster
// (docs/ha.md). Kafka's group coordinator does the failure detection
// (session timeouts), the agreement (one generation, one leader) and the
// fencing of stale members (generation checks); this package only speaks
// the classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup)
// under its own protocol type, so the group is not mistaken for a consumer
// group by tools and brokers never try to assign it partitions.
//
// Every member of a generation receives the same View: the leader, elected
// by the coordinator, sends each member the full sorted member list. What an
// instance derives from a View (virtual brokers, partition leaders, the
// owner of each replicated partition: Owner) is therefore the same on every
// instance for the same generation.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProtocolType is the group's protocol type. A group id used by consumers
// (protocol type "consumer") cannot be joined by kproxy and vice versa: the
// coordinator refuses mixed types with INCONSISTENT_GROUP_PROTOCOL.
const ProtocolType = "kproxy"

// protocolName versions the member metadata and assignment encoding.
const protocolName = "view-v1"

// Member is one kproxy instance as the others see it.
type Member struct {
	ID        string `json:"id"`        // instance.id: stable across restarts (a StatefulSet pod name)
	Advertise string `json:"advertise"` // the address clients are told to dial for it
	NodeID    int32  `json:"node_id"`   // its virtual broker id (NodeID)
	// Listeners are the addresses of its named listeners (name -> host:port)
	// when it has more than one: the clients of a TLS listener must be sent
	// to the other instances' TLS listeners. Instances of one virtual
	// cluster name their listeners alike (they share one config).
	Listeners []Listener `json:"listeners,omitempty"`
}

// Listener is one named listener's advertised address.
type Listener struct {
	Name      string `json:"name"`
	Advertise string `json:"advertise"`
}

// Equal says whether m and o describe the same instance the same way.
func (m Member) Equal(o Member) bool {
	return m.ID == o.ID && m.Advertise == o.Advertise && m.NodeID == o.NodeID && slices.Equal(m.Listeners, o.Listeners)
}

// View is one generation's membership, the same on every member.
type View struct {
	Generation int32
	LeaderID   string   // the instance id of the generation's leader
	Members    []Member // sorted by ID
}

// Config configures Join.
type Config struct {
	Group string // the group id, e.g. "_kproxy-<cluster_id>"
	Self  Member

	// SessionTimeout is how long the coordinator waits for a heartbeat
	// before it drops a member (a crashed or paused instance): the time an
	// instance's partitions stay unserved after it dies without leaving.
	// Default 10s; brokers bound it by group.min/max.session.timeout.ms.
	SessionTimeout time.Duration
	// RebalanceTimeout is how long a rebalance waits for members to rejoin.
	// Default 30s.
	RebalanceTimeout time.Duration
	// Heartbeat is the interval between heartbeats. Default SessionTimeout/3.
	Heartbeat time.Duration

	Logger hclog.Logger
}

// Group is this instance's membership in the group. Its methods are safe
// for concurrent use.
type Group struct {
	cl  *kgo.Client
	cfg Config
	log hclog.Logger

	mu      sync.Mutex
	view    View
	has     bool
	changed chan struct{} // closed when view changes, then replaced

	memberID string // only the loop goroutine touches it

	cancel context.CancelFunc
	done   chan struct{}
}

// Join starts taking part in the group through cl (a client of the control
// cluster) and returns at once; View reports the first generation once the
// group has formed. Cancelling ctx stops without leaving the group, as a
// crash would (the coordinator drops the member after SessionTimeout);
// Close leaves it, so the others take over at once.
func Join(ctx context.Context, cl *kgo.Client, cfg Config) (*Group, error) {
	if cfg.Group == "" || cfg.Self.ID == "" {
		return nil, errors.New("membership: the group id and this instance's id are required")
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = 30 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.SessionTimeout / 3
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(ctx)
	g := &Group{
		cl: cl, cfg: cfg, log: cfg.Logger.Named("membership"),
		changed: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
	}
	go g.run(ctx)
	return g, nil
}

// View returns the current generation's membership; false until the first
// generation has formed.
func (g *Group) View() (View, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.view, g.has
}

// Changed returns a channel closed at the next change of View.
func (g *Group) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// Close leaves the group (so that the coordinator rebalances the others at
// once instead of after the session timeout) and stops.
func (g *Group) Close(ctx context.Context) error {
	g.cancel()
	<-g.done
	if g.memberID == "" {
		return nil
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = g.cfg.Group
	req.MemberID = g.memberID
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = g.memberID
	req.Members = []kmsg.LeaveGroupRequestMember{m}
	resp, err := req.RequestWith(ctx, g.cl)
	if err != nil {
		return fmt.Errorf("leaving group %s: %w", g.cfg.Group, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownMemberID) {
		return fmt.Errorf("leaving group %s: %w", g.cfg.Group, err)
	}
	return nil
}

func (g *Group) publish(v View) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.has && v.Generation == g.view.Generation && slices.EqualFunc(v.Members, g.view.Members, Member.Equal) && v.LeaderID == g.view.LeaderID {
		return
	}
	g.view, g.has = v, true
	close(g.changed)
	g.changed = make(chan struct{})
}

// run joins, syncs and heartbeats until ctx ends, rejoining whenever the
// coordinator says a rebalance is under way or this member is unknown.
func (g *Group) run(ctx context.Context) {
	defer close(g.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		v, err := g.joinAndSync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrConflict) {
				// A misconfiguration an operator must fix: say it loudly.
				g.log.Error("the membership group cannot form; retrying", "group", g.cfg.Group, "error", err, "backoff", backoff)
			} else {
				g.log.Debug("joining the membership group failed; retrying", "group", g.cfg.Group, "error", err, "backoff", backoff)
			}
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		g.publish(v)
		g.log.Info("membership", "group", g.cfg.Group, "generation", v.Generation, "members", len(v.Members), "leader", v.LeaderID)
		if err := g.heartbeat(ctx, v.Generation); err != nil && ctx.Err() == nil {
			g.log.Debug("rejoining the membership group", "group", g.cfg.Group, "reason", err)
		}
	}
}

// ErrConflict is the leader's refusal to form a generation in which two
// instances would be one virtual broker (one instance id, or two ids with
// one derived node id).
var ErrConflict = errors.New("instance identity conflict")

// errRejoin says the current generation ended and this member must join
// again (a rebalance, or the coordinator no longer knows it).
var errRejoin = errors.New("rejoin")

func (g *Group) joinAndSync(ctx context.Context) (View, error) {
	meta, err := json.Marshal(g.cfg.Self)
	if err != nil {
		return View{}, err
	}
	for {
		join := kmsg.NewPtrJoinGroupRequest()
		join.Group = g.cfg.Group
		join.SessionTimeoutMillis = int32(g.cfg.SessionTimeout / time.Millisecond)
		join.RebalanceTimeoutMillis = int32(g.cfg.RebalanceTimeout / time.Millisecond)
		join.MemberID = g.memberID
		join.ProtocolType = ProtocolType
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = protocolName, meta
		join.Protocols = []kmsg.JoinGroupRequestProtocol{p}
		resp, err := join.RequestWith(ctx, g.cl)
		if err != nil {
			return View{}, err
		}
		switch err := kerr.ErrorForCode(resp.ErrorCode); {
		case errors.Is(err, kerr.MemberIDRequired):
			// KIP-394: the coordinator hands out the id first; join again with it.
			g.memberID = resp.MemberID
			continue
		case errors.Is(err, kerr.UnknownMemberID):
			g.memberID = ""
			continue
		case err != nil:
			return View{}, fmt.Errorf("JoinGroup: %w", err)
		}
		g.memberID = resp.MemberID

		sync := kmsg.NewPtrSyncGroupRequest()
		sync.Group = g.cfg.Group
		sync.Generation = resp.Generation
		sync.MemberID = g.memberID
		sync.ProtocolType = kmsg.StringPtr(ProtocolType)
		sync.Protocol = kmsg.StringPtr(protocolName)
		if resp.LeaderID == resp.MemberID {
			assignments, err := leaderAssign(resp)
			if err != nil {
				return View{}, err
			}
			sync.GroupAssignment = assignments
		}
		sresp, err := sync.RequestWith(ctx, g.cl)
		if err != nil {
			return View{}, err
		}
		switch err := kerr.ErrorForCode(sresp.ErrorCode); {
		case errors.Is(err, kerr.UnknownMemberID):
			g.memberID = ""
			continue
		case errors.Is(err, kerr.RebalanceInProgress), errors.Is(err, kerr.IllegalGeneration):
			continue
		case err != nil:
			return View{}, fmt.Errorf("SyncGroup: %w", err)
		}
		var v View
		if err := json.Unmarshal(sresp.MemberAssignment, &v); err != nil {
			return View{}, fmt.Errorf("decoding the leader's view: %w", err)
		}
		if v.Generation != resp.Generation {
			continue
		}
		return v, nil
	}
}

// leaderAssign is the leader's work: every member gets the same view, the
// members' metadata sorted by instance id. Two live members claiming one
// instance id is a misconfiguration (two pods with one identity) that would
// make them derive the same virtual broker: refuse the generation loudly.
func leaderAssign(resp *kmsg.JoinGroupResponse) ([]kmsg.SyncGroupRequestGroupAssignment, error) {
	v := View{Generation: resp.Generation}
	seen := map[string]bool{}
	nodes := map[int32]string{}
	for _, m := range resp.Members {
		var mem Member
		if err := json.Unmarshal(m.ProtocolMetadata, &mem); err != nil {
			return nil, fmt.Errorf("member %s sent metadata kproxy cannot read: %w", m.MemberID, err)
		}
		if seen[mem.ID] {
			return nil, fmt.Errorf("%w: two members claim instance id %q: give each instance its own instance.id", ErrConflict, mem.ID)
		}
		seen[mem.ID] = true
		if other, dup := nodes[mem.NodeID]; dup {
			return nil, fmt.Errorf("%w: instances %q and %q derive the same virtual broker id %d: rename one", ErrConflict, other, mem.ID, mem.NodeID)
		}
		nodes[mem.NodeID] = mem.ID
		if m.MemberID == resp.LeaderID {
			v.LeaderID = mem.ID
		}
		v.Members = append(v.Members, mem)
	}
	slices.SortFunc(v.Members, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]kmsg.SyncGroupRequestGroupAssignment, 0, len(resp.Members))
	for _, m := range resp.Members {
		a := kmsg.NewSyncGroupRequestGroupAssignment()
		a.MemberID, a.MemberAssignment = m.MemberID, data
		out = append(out, a)
	}
	return out, nil
}

// heartbeat keeps the generation alive until it ends (errRejoin) or ctx ends.
func (g *Group) heartbeat(ctx context.Context, generation int32) error {
	t := time.NewTicker(g.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group = g.cfg.Group
		req.Generation = generation
		req.MemberID = g.memberID
		resp, err := req.RequestWith(ctx, g.cl)
		if err != nil {
			// A transient failure: the session timeout, not one lost
			// heartbeat, decides whether this member is gone.
			g.log.Debug("heartbeat failed", "group", g.cfg.Group, "error", err)
			continue
		}
		switch err := kerr.ErrorForCode(resp.ErrorCode); {
		case err == nil:
		case errors.Is(err, kerr.UnknownMemberID):
			g.memberID = ""
			return fmt.Errorf("%w: %v", errRejoin, err)
		case errors.Is(err, kerr.RebalanceInProgress), errors.Is(err, kerr.IllegalGeneration):
			return fmt.Errorf("%w: %v", errRejoin, err)
		default:
			g.log.Debug("heartbeat refused", "group", g.cfg.Group, "error", err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
