package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/secure"
)

// VirtualNodeID is the node id kproxy shows clients. Every partition leader,
// coordinator and controller a client sees is this instance. Negative values
// are protocol sentinels (-1 "no leader") and pass through unchanged.
type VirtualNodeID int32

// Options configure a Server. Fields are read once at New, except the
// router, which SetRouter swaps.
type Options struct {
	// Listen is the host:port to accept plaintext clients on, used when
	// Listeners is empty.
	Listen string
	// AdvertiseHost and AdvertisePort are what Listen's clients are told to
	// connect to; empty means the listener's address.
	AdvertiseHost string
	AdvertisePort int32
	// Listeners, when set, replace Listen: every address to accept clients
	// on, each with its own TLS, SASL and advertised address.
	Listeners []Listener
	// Upstream says how to reach each cluster (TLS, SASL), by name; a
	// cluster not listed is reached in plaintext without SASL.
	Upstream map[string]secure.Upstream
	// ClusterID is the one virtual cluster id clients ever see.
	ClusterID string
	// NodeID is this instance's virtual node id.
	NodeID int32
	// StateDir holds kproxy's durable state (virtual topic ids); "" keeps
	// it in memory.
	StateDir string
	// Clusters maps "source"/"target" to bootstrap addresses.
	Clusters map[string][]string
	// MaxFrameBytes bounds a single request or response frame.
	MaxFrameBytes int32
	// MaxInflight bounds pipelined requests per client connection.
	MaxInflight int
	// Limits bound connections, buffered bytes and timeouts (limits.go);
	// zero fields take the defaults.
	Limits Limits
	// Router decides where requests go.
	Router Router
	// Logger is the proxy's logger (named "proxy" by the caller).
	Logger hclog.Logger
	// Registerer receives the proxy's metrics; nil means a private registry.
	Registerer prometheus.Registerer
	// Instances says this instance is one of several serving one virtual
	// cluster (config control:, instances.go): transactional ids are then
	// served with the brokers' own producer sessions (txn_instances.go).
	// Fixed for the process's life, unlike the membership view, so that
	// every session a client holds was made the same way.
	Instances bool
	// Capture, when set, is called with every response frame sent to a
	// client (after rewriting). Tests use it to prove nothing upstream leaks.
	Capture func(key, version int16, frame []byte)
}

// Server is one kproxy instance: a listener, the client connections, and the
// upstream clusters.
type Server struct {
	opts    Options
	log     hclog.Logger
	metrics *metrics
	topics  *topicCounters // per-topic traffic and source writes (topic_stats.go)

	clusters     map[string]*upstreamCluster
	clusterNames []string              // sorted
	refreshers   map[string]*refresher // background metadata refreshes, by cluster (refresh.go)
	// Metadata listings from views (metadata_view.go): viewsOff when a
	// cluster is passthrough; shared holds encoded answers.
	viewsOff atomic.Bool
	shared   sharedAnswers
	topicIDs *topicIDs

	// idResolveMu serializes resolveTopicID and guards idResolveAt, when
	// it last listed every cluster's topics.
	idResolveMu sync.Mutex
	idResolveAt time.Time

	pids producerIDs
	maps atomic.Pointer[mapsBox]

	// fetchCaps: topic -> *fetchCap, reads of an old home capped at the
	// ends a cutover's drain froze (cutover_fetch_cap.go); capGen counts
	// the caps set, so that an answer planned before one is translated
	// again (replanAfterCap)
	fetchCaps sync.Map
	capGen    atomic.Uint64

	holds    holds
	gholds   groupHolds // group moves (group_hold.go)
	router   atomic.Pointer[routerBox]
	insts    atomic.Pointer[instanceView] // nil: this instance serves alone (instances.go)
	viewGen  atomic.Uint64                // membership views installed (ViewGeneration)
	policy   atomic.Pointer[Policy]       // nil: no policy (policy.go)
	versions atomic.Pointer[map[int16]versionRange]
	// versionsMu serializes updateVersions; connected signals Start as
	// each cluster connects.
	versionsMu sync.Mutex
	connected  chan struct{}

	budget  *byteBudget // buffered client request and response bytes
	connLim connLimiter // open client connections, total and per IP
	dialer  *dialer     // upstream dials and per-broker backoff
	// acceptErr is the listener's last accept error, nil once an accept
	// succeeds again; Ready is false while it is set.
	acceptErr atomic.Pointer[error]
	listening atomic.Bool // set once Start has a listener
	// clientsGate, when DeferClients made it, keeps the listeners from
	// accepting until AcceptClients closes it: the control plane first
	// pins every replicated topic to its home (see DeferClients).
	clientsGate     chan struct{}
	clientsGateOnce sync.Once
	// listen opens the client listener (net.Listen; tests replace it).
	listen func(network, addr string) (net.Listener, error)

	lns     []*listener  // open listeners, in Options order
	ln      net.Listener // the first listener's (Addr)
	advHost string       // the first listener's advertised address
	advPort int32

	// members ties client instances to the groups they joined, for canary
	// rules that select by group (group_membership.go).
	members *memberships
	// relayed is the group member ids handed out through kproxy, for group
	// moves (group_members.go).
	relayed relayedMembers

	inventory inventory // who is connected (inventory.go)

	stop    chan struct{} // closed by Close, for background loops
	connID  atomic.Uint64
	mu      sync.Mutex // guards conns
	conns   map[*clientConn]struct{}
	wg      sync.WaitGroup
	closing atomic.Bool
}

// routerBox is one router as installed; since is when (views fetched
// before it answer no listing, metadata_view.go).
type routerBox struct {
	r     Router
	since time.Time
}

// New builds a server; Start connects upstreams and begins listening.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 100 << 20
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 128
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "kproxy-virtual-cluster"
	}
	opts.Limits = opts.Limits.withDefaults()
	if opts.Router == nil {
		return nil, errors.New("proxy: Options.Router is required")
	}
	if len(opts.Clusters) == 0 {
		return nil, errors.New("proxy: at least one upstream cluster is required")
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger,
		clusters:   map[string]*upstreamCluster{},
		refreshers: map[string]*refresher{},
		conns:      map[*clientConn]struct{}{},
		stop:       make(chan struct{}),
	}
	s.metrics = newMetrics(opts.Registerer)
	s.metrics.setLimits(opts)
	s.topics = newTopicCounters(opts.Registerer)
	// Every configured cluster's error counters exist from the start, at 0:
	// a dashboard then shows "no errors", not "no data".
	for name := range opts.Clusters {
		s.metrics.upstreamErrors.WithLabelValues(name)
		s.metrics.dialFailures.WithLabelValues(name)
	}
	for _, limit := range []string{"total", "per_ip"} {
		s.metrics.refused.WithLabelValues(limit)
	}
	s.members = newMemberships(opts.Limits.GroupMembershipGrace, s.metrics.stateEntries.WithLabelValues(stateGroupMemberships).Set)
	// Likewise the SASL failures of every mechanism a listener offers.
	for _, l := range opts.Listeners {
		if l.SASL != nil {
			for _, mech := range l.SASL.Mechanisms() {
				s.metrics.saslFailures.WithLabelValues(mech)
			}
		}
	}
	s.budget = newByteBudget(opts.Limits.BufferBytes, s.metrics.bufferedBytes.Set)
	s.connLim = connLimiter{max: opts.Limits.MaxConnections, maxPerIP: opts.Limits.MaxConnectionsPerIP}
	s.dialer = newDialer(opts.Limits, opts.MaxFrameBytes, func(cluster string) {
		s.metrics.dialFailures.WithLabelValues(cluster).Inc()
	})
	s.dialer.sec = opts.Upstream
	ids, err := loadTopicIDs(opts.StateDir, s.log)
	if err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		s.log.Warn("state_dir is not set: virtual topic ids live in memory only, and a restart after the source is gone would show clients new ids")
	}
	ids.resolve = s.resolveTopicID
	s.topicIDs = ids
	s.pids.m = map[pidKey]upstreamPID{}
	s.pids.used = map[pidKey]time.Time{}
	s.pids.idle = opts.Limits.ProducerIdle
	if opts.StateDir != "" {
		// Upstream producer sessions survive a restart (ident_pid_store.go).
		if s.pids.store, err = openPIDStore(opts.StateDir, &s.pids, s.log); err != nil {
			return nil, err
		}
	}
	s.holds.held = map[string]*topicHold{}
	s.holds.onUnanswered = s.noteUnanswered
	s.router.Store(&routerBox{opts.Router, time.Time{}})
	for name, boot := range opts.Clusters {
		uc, err := newUpstreamCluster(name, boot, opts.Upstream[name], s.log)
		if err != nil {
			s.closeClusters()
			return nil, err
		}
		s.clusters[name] = uc
		s.refreshers[name] = newRefresher(uc)
		s.clusterNames = append(s.clusterNames, name)
		uc.view.translate = s.virtMetadataTopic
		uc.view.prepare = s.assignTopicIDs
		uc.view.refresh = func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = uc.refresh(ctx, nil)
		}
	}
	sort.Strings(s.clusterNames)
	// A passthrough cluster answers each client as itself: no answer
	// built from kproxy's own view may stand for it.
	s.viewsOff.Store(len(s.passthroughClusters()) > 0)
	return s, nil
}

// SetRouter swaps the routing decisions for new requests; requests already
// dispatched keep the router they started with.
func (s *Server) SetRouter(r Router) { s.router.Store(&routerBox{r, time.Now()}) }

func (s *Server) routes() Router { return s.router.Load().r }

// Start connects to the upstream clusters and listens once every cluster
// answered, or once Limits.StartGrace passed and at least one did (a proxy
// that cannot tell clients which API versions work must not accept them;
// the versions of a cluster that answers later narrow them then). It fails
// when ctx ends first. Clusters that have not answered keep being retried
// until Close, which the caller must call also when Start fails.
func (s *Server) Start(ctx context.Context) error {
	// Every cluster is connected by a loop of its own that retries until
	// it works (or Close). Start listens once all have answered, or once
	// StartGrace has passed and at least one has: a cluster that is down
	// during a restart must not take down the topics served by the other
	// (their clients get retriable errors for the missing cluster's
	// topics until it appears; see clusterConnected).
	s.connected = make(chan struct{}, len(s.clusters))
	s.wg.Add(1)
	go s.expireLoop() // idle per-client state (state_expiry.go)
	for _, uc := range s.clusters {
		s.wg.Add(1)
		go s.connectLoop(uc)
	}
	grace := time.NewTimer(s.opts.Limits.StartGrace)
	defer grace.Stop()
	graceOver := false
	for n := 0; n < len(s.clusters); {
		if graceOver && n > 0 {
			s.log.Warn("listening without every upstream cluster; the missing ones are picked up when they answer", "connected", n, "clusters", len(s.clusters))
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connecting to the upstream clusters: %w", ctx.Err())
		case <-s.connected:
			n++
		case <-grace.C:
			graceOver = true
		}
	}
	s.updateVersions()

	listen := s.listen
	if listen == nil {
		listen = net.Listen
	}
	lopts := s.opts.Listeners
	if len(lopts) == 0 {
		lopts = []Listener{{Name: "plaintext", Listen: s.opts.Listen, AdvertiseHost: s.opts.AdvertiseHost, AdvertisePort: s.opts.AdvertisePort}}
	}
	for _, lo := range lopts {
		l, err := s.openListener(lo, listen)
		if err != nil {
			for _, open := range s.lns {
				open.ln.Close()
			}
			s.lns = nil
			return err
		}
		s.lns = append(s.lns, l)
		s.log.Info("listening for kafka clients", "listener", lo.Name, "security", l.kind(), "addr", l.ln.Addr().String(), "advertise", net.JoinHostPort(l.advHost, strconv.Itoa(int(l.advPort))), "node_id", s.opts.NodeID, "cluster_id", s.opts.ClusterID)
	}
	s.ln, s.advHost, s.advPort = s.lns[0].ln, s.lns[0].advHost, s.lns[0].advPort
	s.listening.Store(true)
	s.wg.Add(1 + len(s.lns))
	for _, l := range s.lns {
		go s.acceptLoop(l)
	}
	go s.watchClusters()
	return nil
}

// DeferClients, called before Start, makes the listeners accept no client
// connection until AcceptClients: connections wait in the listen backlog.
// The router kproxy starts with is the config's table, which routes a
// replicated topic by the config even where its home differs (a restart
// while the config moves the topic: its cutover has not run yet, or was
// cut short by the crash). Until the control plane pinned such a topic to
// its home, a produce went straight to the other cluster, beside the copy:
// the copy then stopped ("target offset N does not hold source offset N's
// record"), and the producer's next batch on the home was refused with
// OUT_OF_ORDER_SEQUENCE_NUMBER (the fault test's kill while draining, on a
// loaded machine).
func (s *Server) DeferClients() { s.clientsGate = make(chan struct{}) }

// AcceptClients lets the listeners accept (after DeferClients).
func (s *Server) AcceptClients() {
	if s.clientsGate != nil {
		s.clientsGateOnce.Do(func() { close(s.clientsGate) })
	}
}

// connectLoop connects one upstream cluster, retrying every second until it
// works or the server closes.
func (s *Server) connectLoop(uc *upstreamCluster) {
	defer s.wg.Done()
	ctx := context.Context(chanContext(s.stop))
	for attempt := 1; ; attempt++ {
		err := uc.connect(ctx)
		if err == nil {
			break
		}
		if attempt == 1 || attempt%30 == 0 {
			s.log.Warn("upstream cluster not reachable yet; retrying", "cluster", uc.name, "attempt", attempt, "error", err)
		}
		select {
		case <-s.stop:
			return
		case <-time.After(time.Second):
		}
	}
	s.log.Info("upstream cluster connected", "cluster", uc.name, "brokers", len(uc.allBrokers()))
	s.clusterConnected(uc.name)
	s.connected <- struct{}{}
}

// clusterConnected takes in a cluster that answered. When it answered only
// after kproxy began advertising versions, its versions narrow what kproxy
// advertises, and clients that negotiated against the wider set are
// disconnected so that they ask again (a request at a version the new
// cluster lacks would fail there).
func (s *Server) clusterConnected(name string) {
	if !s.updateVersions() {
		return
	}
	s.mu.Lock()
	n := len(s.conns)
	for cc := range s.conns {
		cc.nc.Close()
	}
	s.mu.Unlock()
	s.log.Warn("advertised API versions narrowed by a cluster that joined late; client connections closed to renegotiate", "cluster", name, "connections", n)
}

// updateVersions advertises the versions every connected cluster supports
// and reports whether that changed an earlier set.
func (s *Server) updateVersions() (changed bool) {
	s.versionsMu.Lock()
	defer s.versionsMu.Unlock()
	var all []map[int16]versionRange
	for _, uc := range s.clusters {
		if v := uc.apiVersions(); v != nil {
			all = append(all, v)
		}
	}
	v := advertisedVersions(all)
	old := s.versions.Swap(&v)
	return old != nil && !maps.Equal(*old, v)
}

// Addr is the listener's address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// acceptLoop accepts client connections until Close. An accept error
// (EMFILE, ENFILE, ECONNABORTED...) is retried with a backoff from 5 ms to
// 1 s: running out of file descriptors is usually transient, and a listener
// that stops for good would leave kproxy up but unreachable. While accepts
// fail, Ready reports false.
func (s *Server) acceptLoop(l *listener) {
	defer s.wg.Done()
	if s.clientsGate != nil {
		select {
		case <-s.clientsGate:
		case <-s.stop:
			return
		}
	}
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				// Closed by something other than Close: nothing to
				// retry, and not ready.
				s.acceptErr.Store(&err)
				s.log.Error("listener closed; no longer accepting client connections", "error", err)
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.acceptErr.Store(&err)
			s.metrics.acceptErrors.Inc()
			s.log.Error("accept failed; retrying", "error", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.acceptErr.Load() != nil {
			s.acceptErr.Store(nil)
			s.log.Info("accepting client connections again")
		}
		ip := remoteIP(nc)
		if ok, reason := s.connLim.admit(ip); !ok {
			s.metrics.refused.WithLabelValues(reason).Inc()
			s.log.Warn("refusing client connection: connection limit reached", "remote", nc.RemoteAddr().String(), "limit", reason)
			nc.Close()
			continue
		}
		if l.opts.TLS != nil {
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			nc = tls.Server(nc, l.opts.TLS) // the handshake runs in serve
		}
		cc := newClientConn(s, nc, s.connID.Add(1))
		cc.lst = l
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			s.connLim.leave(ip)
			nc.Close()
			return
		}
		s.conns[cc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			cc.serve()
			s.mu.Lock()
			delete(s.conns, cc)
			s.mu.Unlock()
			s.connLim.leave(ip)
		}()
	}
}

// Close stops listening, closes every client connection and upstream
// connection, and waits for their goroutines.
func (s *Server) Close() {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	close(s.stop)
	for _, l := range s.lns {
		l.ln.Close()
	}
	s.mu.Lock()
	for cc := range s.conns {
		cc.nc.Close()
		cc.finish() // also ends a read loop waiting for a slot or the budget
	}
	s.mu.Unlock()
	s.wg.Wait()
	defer s.pids.store.close()
	s.closeClusters()
}

func (s *Server) closeClusters() {
	for _, uc := range s.clusters {
		uc.close()
	}
}

func (s *Server) cluster(name string) (*upstreamCluster, bool) {
	uc, ok := s.clusters[name]
	return uc, ok
}

func (s *Server) advertised() map[int16]versionRange { return *s.versions.Load() }

// Status is what /status reports about the proxy.
type Status struct {
	Listen      string `json:"listen"`
	Advertise   string `json:"advertise"`
	ClusterID   string `json:"cluster_id"`
	NodeID      int32  `json:"node_id"`
	Connections int    `json:"connections"`
	// AcceptError is the listener's last accept error while accepts fail.
	AcceptError string `json:"accept_error,omitempty"`
	// BufferedBytes is what the buffer budget has handed out.
	BufferedBytes int64           `json:"buffered_bytes"`
	Clusters      []clusterStatus `json:"clusters"`
	// Listeners are every client listener (Listen is the first).
	Listeners []ListenerStatus `json:"listeners"`
}

// Status reports connections and upstream reachability.
func (s *Server) Status() Status {
	st := Status{ClusterID: s.opts.ClusterID, NodeID: s.opts.NodeID}
	if s.ln != nil {
		st.Listen = s.ln.Addr().String()
		st.Advertise = net.JoinHostPort(s.advHost, strconv.Itoa(int(s.advPort)))
	}
	for _, l := range s.lns {
		st.Listeners = append(st.Listeners, ListenerStatus{Name: l.opts.Name, Addr: l.ln.Addr().String(),
			Advertise: net.JoinHostPort(l.advHost, strconv.Itoa(int(l.advPort))), Security: l.kind()})
	}
	s.mu.Lock()
	st.Connections = len(s.conns)
	s.mu.Unlock()
	if e := s.acceptErr.Load(); e != nil {
		st.AcceptError = (*e).Error()
	}
	st.BufferedBytes = s.budget.inUse()
	for _, name := range []string{Source, Target} {
		if uc, ok := s.clusters[name]; ok {
			st.Clusters = append(st.Clusters, uc.status())
		}
	}
	return st
}

// acceptingClients is false between DeferClients and AcceptClients.
func (s *Server) acceptingClients() bool {
	if s.clientsGate == nil {
		return true
	}
	select {
	case <-s.clientsGate:
		return true
	default:
		return false
	}
}

// Ready reports whether the listener accepts connections and every
// upstream cluster is reachable.
func (s *Server) Ready() bool {
	names := make([]string, 0, len(s.clusters))
	for name := range s.clusters {
		names = append(names, name)
	}
	ok, _ := s.ReadyFor(names)
	return ok
}

// ReadyFor reports whether the listener accepts connections and each of the
// named clusters is reachable; when not, why. The control plane names the
// clusters its current routes need, so an outage of a cluster no route
// uses (the source once every topic has moved) leaves kproxy ready. A name
// kproxy has no connection for is not ready.
func (s *Server) ReadyFor(clusters []string) (bool, string) {
	switch {
	case s.versions.Load() == nil:
		return false, "no cluster has answered yet"
	case !s.listening.Load():
		return false, "not listening for clients"
	case !s.acceptingClients():
		return false, "not accepting clients yet: the routes of replicated topics are being pinned to their homes"
	case s.closing.Load():
		return false, "shutting down"
	}
	if e := s.acceptErr.Load(); e != nil {
		return false, "accepting clients fails: " + (*e).Error()
	}
	for _, name := range clusters {
		uc, ok := s.clusters[name]
		if !ok {
			return false, "no connection for cluster " + name
		}
		uc.mu.RLock()
		ok, last := uc.reachable, uc.lastErr
		uc.mu.RUnlock()
		if !ok {
			if last == "" {
				last = "has not answered yet"
			}
			return false, "cluster " + name + " is not reachable: " + last
		}
	}
	return true, ""
}

// keyName is a short name for logs and metric labels.
func keyName(key int16) string { return kmsg.NameForKey(key) }

// KnownTopics lists every topic kproxy has seen on any cluster, sorted.
func (s *Server) KnownTopics() []string {
	seen := map[string]bool{}
	for _, uc := range s.clusters {
		uc.mu.RLock()
		for t := range uc.leaders {
			seen[t] = true
		}
		uc.mu.RUnlock()
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
