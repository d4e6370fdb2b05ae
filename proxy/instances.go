package proxy

// Instances: several kproxy instances serving one virtual cluster
// (config `control:`, docs/ha.md). The control plane feeds the live
// membership in (SetInstances); from it every instance derives the same
// answers for the same view, with no further coordination:
//
//   - the virtual brokers: one per live instance, its node id and its
//     advertised address on the listener the client came in on
//     (Metadata, DescribeCluster; virt_nodes.go is where they are written);
//   - the leader of each partition and the coordinator of each group or
//     transactional id: mbr.Owner (rendezvous hashing) over the live
//     instances, so a membership change moves only the keys of the
//     instance that left or joined;
//   - the controller: the membership group's leader.
//
// A produce or fetch for a partition this instance does not lead is
// answered NOT_LEADER_OR_FOLLOWER (leadsHere), as a real broker answers
// after a leadership move: the client refreshes Metadata and moves. Likewise
// a group or transaction request (JoinGroup, SyncGroup, Heartbeat,
// LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete,
// ConsumerGroupHeartbeat, TxnOffsetCommit; InitProducerId with a
// transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn) for a
// group or transactional id another instance coordinates is answered
// NOT_COORDINATOR (notCoordinator): the client asks FindCoordinator again.
// Admin requests about groups (DescribeGroups, DeleteGroups, ...) are
// served by any instance.
//
// Without SetInstances (one instance) nothing here changes an answer:
// this instance is the only broker and leads everything.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	mbr "github.com/kproxy/kproxy/membership"
)

// Instances is one membership view as the proxy needs it.
type Instances struct {
	Self     string       // this instance's id
	LeaderID string       // the membership group leader's id: the virtual controller
	Members  []mbr.Member // the live instances, sorted by id
	// Leaving is a member still listed as a broker that leads and
	// coordinates nothing: this instance while it hands over after leaving
	// the membership. Dropping it from the brokers at once made a
	// transactional franz-go producer fail its batches buffered for this
	// broker with "unknown broker" (its metadata lost the broker before
	// the partitions moved); a broker under controlled shutdown likewise
	// stays listed while it leads nothing.
	Leaving string
}

// instanceView is Instances with every address parsed once.
type instanceView struct {
	self       string
	controller int32               // -1: no leader known
	members    []mbr.Member        // listed as brokers
	owners     []mbr.Member        // lead and coordinate: members but the leaving one
	eps        []instanceEndpoints // by members index
}

type instanceEndpoints struct {
	host       string
	port       int32
	byListener map[string]hostPort // by listener name
}

type hostPort struct {
	host string
	port int32
}

// SetInstances installs a membership view (nil: this instance serves
// alone). A view whose addresses do not parse is refused as a whole.
func (s *Server) SetInstances(in *Instances) error {
	if in == nil {
		if s.insts.Swap(nil) != nil {
			s.viewGen.Add(1)
			s.instancesChanged()
		}
		return nil
	}
	v := &instanceView{self: in.Self, controller: -1, members: in.Members, owners: in.Members}
	if in.Leaving != "" {
		v.owners = slices.DeleteFunc(slices.Clone(in.Members), func(m mbr.Member) bool { return m.ID == in.Leaving })
	}
	for _, m := range in.Members {
		var ep instanceEndpoints
		var err error
		if ep.host, ep.port, err = splitHostPort(m.Advertise); err != nil {
			return fmt.Errorf("instance %s: %w", m.ID, err)
		}
		for _, l := range m.Listeners {
			h, p, err := splitHostPort(l.Advertise)
			if err != nil {
				return fmt.Errorf("instance %s listener %s: %w", m.ID, l.Name, err)
			}
			if ep.byListener == nil {
				ep.byListener = map[string]hostPort{}
			}
			ep.byListener[l.Name] = hostPort{h, p}
		}
		v.eps = append(v.eps, ep)
		if m.ID == in.LeaderID {
			v.controller = m.NodeID
		}
	}
	old := s.insts.Swap(v)
	s.viewGen.Add(1)
	s.freshSessionsForGains(old, v)
	s.instancesChanged()
	return nil
}

// ViewGeneration counts the membership views installed: equal before and
// after a stretch of time, no partition changed leader here in between
// (the bypass check compares only such stretches).
func (s *Server) ViewGeneration() uint64 { return s.viewGen.Load() }

// freshSessionsForGains gives the idempotent producers of every topic with
// a partition this instance gained in v fresh upstream sessions
// (moveTopic, as after a cutover). A partition that comes back to an
// instance that wrote it before (a restart, a member that left and
// returned) would otherwise reach an upstream session whose sequence for
// it stopped where the partition left: the broker would refuse the
// client's current sequence as out of order. A fresh session accepts it.
// old nil (the first view) counts every partition as gained: sessions
// restored from state_dir predate the time this instance was away.
// With shared sessions (ShareProducerSessions) none of this: the gained
// partition is written with the session every instance used for it, whose
// sequence the broker kept where the client left it, so the broker itself
// refuses a gap (a later batch that overtook an earlier one) as a real new
// leader would; a fresh session would take it and the earlier batch, still
// to come, would be lost to the client.
func (s *Server) freshSessionsForGains(old, v *instanceView) {
	if s.pids.sharer() != nil {
		return
	}
	for _, topic := range s.KnownTopics() {
		n := 0
		for _, uc := range s.clusters {
			n = max(n, uc.partitionCount(topic))
		}
		for p := range int32(n) {
			k := partitionKey(topic, p)
			now := v.owner(k)
			if now < 0 || v.members[now].ID != v.self {
				continue
			}
			if old != nil {
				if was := old.owner(k); was >= 0 && old.members[was].ID == old.self {
					continue
				}
			}
			s.pids.moveTopic(topic)
			break
		}
	}
}

func splitHostPort(addr string) (string, int32, error) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("advertised address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("advertised address %q: bad port", addr)
	}
	return h, int32(p), nil
}

// AdvertisedListeners is this instance's advertised address (the first
// listener's) and every named listener's, as the other instances must
// list them. Valid after Start.
func (s *Server) AdvertisedListeners() (string, []mbr.Listener) {
	var ls []mbr.Listener
	for _, l := range s.lns {
		ls = append(ls, mbr.Listener{Name: l.opts.Name, Advertise: net.JoinHostPort(l.advHost, strconv.Itoa(int(l.advPort)))})
	}
	return net.JoinHostPort(s.advHost, strconv.Itoa(int(s.advPort))), ls
}

// endpoint is member i's address for the clients of listener l.
func (v *instanceView) endpoint(i int, l *listener) (string, int32) {
	ep := v.eps[i]
	if l != nil {
		if hp, ok := ep.byListener[l.opts.Name]; ok {
			return hp.host, hp.port
		}
	}
	return ep.host, ep.port
}

// owner is the index in v.members of the instance that owns key; -1 when
// there are no members.
func (v *instanceView) owner(key string) int {
	m, ok := mbr.Owner(key, v.owners)
	if !ok {
		return -1
	}
	for i := range v.members {
		if v.members[i].ID == m.ID {
			return i
		}
	}
	return -1
}

// partitionKey is the rendezvous key of a partition. Every instance must
// build it alike: changing it moves every partition at the next upgrade.
func partitionKey(topic string, partition int32) string {
	return "p/" + topic + "/" + strconv.Itoa(int(partition))
}

// coordinatorKey is the rendezvous key of a group (typ 0) or a
// transactional id (typ 1).
func coordinatorKey(typ int8, key string) string {
	return "c/" + strconv.Itoa(int(typ)) + "/" + key
}

// partitionLeader is the virtual node id that leads topic's partition.
func (s *Server) partitionLeader(topic string, partition int32) int32 {
	v := s.insts.Load()
	if v == nil {
		return s.self()
	}
	if i := v.owner(partitionKey(topic, partition)); i >= 0 {
		return v.members[i].NodeID
	}
	return s.self()
}

// leadsHere says whether this instance leads topic's partition: 0, or
// NOT_LEADER_OR_FOLLOWER for a partition another live instance leads (the
// client refreshes Metadata and goes there). The produce and fetch
// handlers ask it once per partition, before anything is forwarded.
func (s *Server) leadsHere(topic string, partition int32) int16 {
	v := s.insts.Load()
	if v == nil {
		return 0
	}
	if i := v.owner(partitionKey(topic, partition)); i >= 0 && v.members[i].ID != v.self {
		return kerr.NotLeaderForPartition.Code
	}
	return 0
}

// LeadsInView says whether this instance leads topic's partition in the
// installed membership view, false before any view (and for a leaving
// instance, which leads nothing). The copy with several instances runs a
// partition where it is led (control/replication.go), so the offset map
// that translates the partition is on the instance that serves it.
func (s *Server) LeadsInView(topic string, partition int32) bool {
	v := s.insts.Load()
	if v == nil {
		return false
	}
	i := v.owner(partitionKey(topic, partition))
	return i >= 0 && v.members[i].ID == v.self
}

// coordinatorEndpoint is the virtual broker that coordinates key (a group
// for typ 0, a transactional id for typ 1), as listener l's clients reach it.
func (s *Server) coordinatorEndpoint(l *listener, typ int8, key string) (int32, string, int32) {
	v := s.insts.Load()
	if v == nil {
		return s.selfEndpoint(l)
	}
	i := v.owner(coordinatorKey(typ, key))
	if i < 0 {
		return s.selfEndpoint(l)
	}
	h, p := v.endpoint(i, l)
	return v.members[i].NodeID, h, p
}

// notCoordinator answers a request about key (a group for typ 0, a
// transactional id for typ 1) that another live instance coordinates:
// NOT_COORDINATOR in every error field, as a broker answers after the
// coordinator moved, so the client looks the coordinator up again
// (FindCoordinator names the owner) and retries there. nil: this instance
// coordinates key (or serves alone) and the caller goes on. The state a
// coordinator instance keeps per group (members, holds, moves) and per
// transactional id is then only ever on one instance.
func (s *Server) notCoordinator(typ int8, key string, req kmsg.Request) kmsg.Response {
	v := s.insts.Load()
	if v == nil {
		return nil
	}
	if i := v.owner(coordinatorKey(typ, key)); i < 0 || v.members[i].ID == v.self {
		return nil
	}
	return errorResponse(req, kerr.NotCoordinator.Code)
}

// controllerID is the virtual controller: the membership leader, else this
// instance.
func (s *Server) controllerID() int32 {
	if v := s.insts.Load(); v != nil && v.controller >= 0 {
		return v.controller
	}
	return s.self()
}

// brokerEndpoints calls f with every virtual broker, as listener l's
// clients reach it.
func (s *Server) brokerEndpoints(l *listener, f func(node int32, host string, port int32)) {
	v := s.insts.Load()
	if v == nil || len(v.members) == 0 {
		f(s.selfEndpoint(l))
		return
	}
	for i, m := range v.members {
		h, p := v.endpoint(i, l)
		f(m.NodeID, h, p)
	}
}

// Drain waits, until ctx ends, for the requests this instance has read to
// be answered: called once the instance has left the membership (it leads
// nothing, so new produce and fetch requests are refused), so that a
// request written upstream is answered here rather than retried
// elsewhere after the connection closes.
func (s *Server) Drain(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		var n int64
		s.mu.Lock()
		for cc := range s.conns {
			n += cc.outstanding.Load()
		}
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
