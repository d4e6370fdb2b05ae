package control

// Instance is one serving kproxy: the proxy server, the control plane
// (Controller), the admin HTTP server and the config generation they serve.
// `kproxy run` and the demo (cmd/kproxy-demo) both start one with Start.

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/membership"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/statefile"
)

// Instance is one running kproxy.
type Instance struct {
	log     hclog.Logger
	srv     *proxy.Server
	ctrl    *Controller
	admin   *adminServer
	metrics *adminServer // admin.metrics_address: /metrics alone
	mu      sync.Mutex   // guards cfg; serialises Apply
	cfg     *config.Config
	gen     atomic.Int64
	lastErr atomic.Pointer[string]
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec
	lastOK  prometheus.Gauge
	locks   []*statefile.Lock // the state directories this instance owns
	// insts is this instance's membership (config control:); nil when it
	// serves alone.
	insts *instances
	// coord runs group moves (control:) and cutovers (control: and
	// replicate) through the control topic; nil otherwise.
	coord *coordFlips
	// sessions shares idempotent producers' upstream sessions through
	// the control topic (control:); nil otherwise.
	sessions *sharedSessions
	closed   atomic.Bool // Close began: not ready
	// lastPlan is the last POST /plan's answer, for the status page.
	lastPlan atomic.Pointer[LastPlan]

	// gateRecheck: a loop re-measures cutovers refused by cutover.require
	// (plan.go); gateRecheckEvery is its period.
	gateRecheck      atomic.Bool
	gateRecheckEvery time.Duration
	// recheckCtx ends the re-measure loop; Close cancels it and waits on
	// recheckDone before the controller closes the admin clients the loop
	// measures with.
	recheckCtx    context.Context
	recheckCancel context.CancelFunc
	recheckDone   sync.WaitGroup
}

// Start builds and starts an instance from a valid config.
func Start(ctx context.Context, cfg *config.Config, log hclog.Logger) (*Instance, error) {
	table, err := routing.NewTable(cfg)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts, err := proxyOptions(cfg)
	if err != nil {
		return nil, err
	}
	// Own the state directories before anything reads or writes them: a
	// second kproxy on the same ones (a rolling update's overlap, two
	// replicas on one volume) would copy the same batches into the target
	// twice and overwrite the other's decisions.
	locks, err := lockStateDirs(cfg)
	if err != nil {
		return nil, err
	}
	release := func() {
		for _, l := range locks {
			l.Release()
		}
	}
	if opts.Listeners, err = proxyListeners(cfg, log.Named("tls")); err != nil {
		release()
		return nil, err
	}
	opts.Router = proxy.NewTableRouter(table)
	opts.Logger = log.Named("proxy")
	opts.Registerer = reg
	srv, err := proxy.New(opts)
	if err != nil {
		release()
		return nil, err
	}
	srv.SetPolicy(proxyPolicy(cfg))
	// Clients wait until ctrl.Start pinned every replicated topic to its
	// home (proxy.Server.DeferClients says why).
	srv.DeferClients()
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		release()
		return nil, err
	}
	var sessions *sharedSessions
	var insts *instances
	if cfg.Control != nil {
		// Idempotent producers' sessions move with their partitions
		// between instances (sessions.go): read to the control topic's
		// end before any client is accepted, and shared before the
		// first membership view (which would otherwise give gained
		// partitions sessions of this instance's own).
		if sessions, err = openSharedSessions(ctx, cfg, log); err != nil {
			srv.Close()
			release()
			return nil, err
		}
		srv.ShareProducerSessions(sessions)
		// After Start: the advertised addresses other instances list are
		// the listeners' own (a port 0 is known only once listening).
		if insts, err = joinInstances(cfg, srv, log); err != nil {
			srv.Close()
			sessions.close()
			release()
			return nil, err
		}
	}
	ctrl, err := NewController(log, srv, cfg, reg)
	if err != nil {
		if insts != nil {
			insts.leave()
		}
		srv.Close()
		sessions.close()
		release()
		return nil, err
	}
	if insts != nil {
		insts.setOnView(ctrl.repl.reassign)
	}
	var coord *coordFlips
	if insts != nil {
		// Flips and group moves go through the control topic, read to
		// its end before any client is accepted (a flip or move decided
		// while this instance was down, or one in its hold, is known
		// first).
		if coord, err = openCoordFlips(ctx, cfg, log, insts, ctrl.cuts, ctrl.groups, table.Replicated); err != nil {
			ctrl.Close()
			insts.leave()
			srv.Close()
			sessions.close()
			release()
			return nil, err
		}
	}
	inst := &Instance{log: log, srv: srv, ctrl: ctrl, cfg: cfg, reg: reg, locks: locks, insts: insts, coord: coord, sessions: sessions, gateRecheckEvery: defaultGateRecheck}
	inst.recheckCtx, inst.recheckCancel = context.WithCancel(context.Background())
	ctrl.Start(cfg, table)
	if coord != nil {
		coord.start()
	}
	srv.AcceptClients()
	inst.gen.Store(1)
	inst.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_config_reloads_total", Help: "Config reloads by result (applied, rejected)."}, []string{"result"})
	inst.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kproxy_config_last_reload_success_timestamp_seconds", Help: "When the config was last loaded successfully."})
	inst.lastOK.SetToCurrentTime()
	reg.MustRegister(inst.reloads, inst.lastOK)
	if cfg.Admin != "" {
		a, err := startAdmin(cfg.Admin, inst)
		if err != nil {
			ctrl.Close()
			srv.Close()
			sessions.close()
			release()
			return nil, err
		}
		inst.admin = a
	}
	if addr := cfg.AdminHTTP.MetricsAddress; addr != "" {
		m, err := startMetrics(addr, inst)
		if err != nil {
			if inst.admin != nil {
				inst.admin.Close()
			}
			ctrl.Close()
			srv.Close()
			sessions.close()
			release()
			return nil, err
		}
		inst.metrics = m
	}
	return inst, nil
}

// lockStateDirs takes the lock of state_dir, and of replication.state_dir
// when it lies outside state_dir (the copy back's maps sit next to it and
// are covered by its lock).
func lockStateDirs(cfg *config.Config) ([]*statefile.Lock, error) {
	var dirs []string
	if cfg.StateDir != "" {
		dirs = append(dirs, cfg.StateDir)
	}
	if r := cfg.Replication.StateDir; r != "" && !within(cfg.StateDir, r) {
		dirs = append(dirs, r)
	}
	var locks []*statefile.Lock
	for _, d := range dirs {
		l, err := statefile.LockDir(d)
		if err != nil {
			for _, l := range locks {
				l.Release()
			}
			return nil, err
		}
		locks = append(locks, l)
	}
	return locks, nil
}

// within says whether dir is base or lies under it.
func within(base, dir string) bool {
	if base == "" {
		return false
	}
	b, err1 := filepath.Abs(base)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(b, d)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func proxyOptions(cfg *config.Config) (proxy.Options, error) {
	adv := cfg.Advertise
	if adv == "" {
		adv = cfg.Listen
	}
	var host string
	var port int
	if adv != "" { // "" when only listeners: are configured (control/listeners.go)
		h, portS, err := net.SplitHostPort(adv)
		if err != nil {
			return proxy.Options{}, fmt.Errorf("advertise %q: %w", adv, err)
		}
		host = h
		port, _ = strconv.Atoi(portS)
	}
	clusters := map[string][]string{}
	upstream := map[string]secure.Upstream{}
	for _, name := range []config.Cluster{config.Source, config.Target} {
		cc := cfg.Clusters.Get(name)
		if cc == nil {
			continue
		}
		clusters[string(name)] = cc.Bootstrap
		u, err := secure.UpstreamFor(cc)
		if err != nil {
			return proxy.Options{}, fmt.Errorf("%s cluster: %w", name, err)
		}
		if cc.IsPassthrough() {
			if u.Passthrough, err = secure.NewPassthrough(string(name), cc.Passthrough); err != nil {
				return proxy.Options{}, err
			}
		}
		upstream[string(name)] = u
	}
	return proxy.Options{
		Listen:        cfg.Listen,
		AdvertiseHost: host,
		AdvertisePort: int32(port),
		ClusterID:     cfg.ClusterID,
		NodeID:        nodeID(cfg),
		Instances:     cfg.Control != nil,
		Clusters:      clusters,
		Upstream:      upstream,
		MaxFrameBytes: cfg.Limits.MaxFrameBytes,
		MaxInflight:   cfg.Limits.MaxInflightPerConn,
		Limits: proxy.Limits{
			MaxConnections:       cfg.Limits.MaxConnections,
			MaxConnectionsPerIP:  cfg.Limits.MaxConnectionsPerIP,
			BufferBytes:          cfg.Limits.BufferBytes,
			IdleTimeout:          cfg.Limits.IdleTimeout,
			ReadTimeout:          cfg.Limits.ReadTimeout,
			WriteTimeout:         cfg.Limits.WriteTimeout,
			DialTimeout:          cfg.Limits.DialTimeout,
			UpstreamWriteTimeout: cfg.Limits.UpstreamWriteTimeout,
			DialBackoffMin:       cfg.Limits.DialBackoffMin,
			DialBackoffMax:       cfg.Limits.DialBackoffMax,
			StartGrace:           cfg.Limits.StartGrace,
			ProducerIdle:         cfg.Limits.ProducerIdle,
			TransactionalIdle:    cfg.Limits.TransactionalIdle,
			GroupMembershipGrace: cfg.Limits.GroupMembershipGrace,
		},
		StateDir: cfg.StateDir,
	}, nil
}

// nodeID is this instance's virtual broker id: node_id alone, or derived
// from instance.id among several instances (membership.NodeID).
func nodeID(cfg *config.Config) int32 {
	if cfg.Control != nil {
		return membership.NodeID(cfg.Instance.ID)
	}
	return cfg.NodeID
}

// Apply installs a new valid config: routes change for new requests without
// touching connections. A config that changes settings only a restart can
// apply (config.RestartRequired: listen, clusters, limits...) is refused as
// a whole with a *config.RestartError naming them, and one the routing
// table refuses with that error: the running config stays either way, and
// the error says so to the caller (config.Reloader, which then does not
// count the reload as applied).
func (inst *Instance) Apply(next *config.Config) error {
	// cutover.require's gates ask both clusters: measured before the lock,
	// so /status stays answerable meanwhile (reloads come one at a time).
	refusals := inst.requiredGateRefusals(inst.ctrl.ctx, next)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	prev := inst.cfg
	if r := config.RestartRequired(prev, next); len(r) > 0 {
		err := &config.RestartError{Lines: r}
		inst.reject(err.Error())
		return err
	}
	table, err := routing.NewTable(next)
	if err != nil {
		inst.reject(err.Error())
		return err
	}
	inst.ctrl.cuts.setGateRefusals(refusals)
	inst.ctrl.Apply(next, table)
	inst.srv.SetPolicy(proxyPolicy(next))
	if len(refusals) > 0 {
		inst.startGateRecheck()
	}
	inst.cfg = next
	gen := inst.gen.Add(1)
	inst.lastErr.Store(nil)
	inst.reloads.WithLabelValues("applied").Inc()
	inst.lastOK.SetToCurrentTime()
	diff := config.Diff(prev, next)
	if len(diff) == 0 {
		diff = []string{"no route changes"}
	}
	inst.log.Info("config reloaded", "generation", gen, "changes", diff)
	return nil
}

func (inst *Instance) reject(msg string) {
	inst.lastErr.Store(&msg)
	inst.reloads.WithLabelValues("rejected").Inc()
	inst.log.Error("config reload rejected; keeping the last good config", "reason", msg)
}

// Config is the config the instance serves.
func (inst *Instance) Config() *config.Config {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.cfg
}

// Addr is the address clients connect to.
func (inst *Instance) Addr() net.Addr { return inst.srv.Addr() }

// Generation counts the configs applied (1: the first).
func (inst *Instance) Generation() int64 { return inst.gen.Load() }

// LastReloadError is why the last reload was rejected ("" if it was not).
func (inst *Instance) LastReloadError() string {
	if e := inst.lastErr.Load(); e != nil {
		return *e
	}
	return ""
}

// Cutovers is every topic's cutover.
func (inst *Instance) Cutovers() []CutoverStatus { return inst.ctrl.Cutovers() }

// Close stops the admin server, the control plane (awaiting running
// cutovers and group moves) and the proxy, and then gives up the state
// directories.
func (inst *Instance) Close() {
	inst.closed.Store(true)
	if inst.coord != nil {
		// A flip this instance holds and that is not decided yet: the
		// others abort it once this instance left their view. Its held
		// requests are refused (retriable), never released on a cluster
		// it cannot know is still the home; the leave's drain below
		// then does not wait for them.
		inst.coord.close()
	}
	if inst.insts != nil {
		// First, while still serving: the others take over this
		// instance's partitions at once, and what it already read is
		// answered here.
		inst.insts.leave()
	}
	for _, a := range []*adminServer{inst.admin, inst.metrics} {
		if a != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			a.Shutdown(ctx)
			cancel()
		}
	}
	inst.recheckCancel()
	inst.recheckDone.Wait()
	inst.ctrl.Close()
	inst.srv.Close()
	inst.sessions.close()
	for _, l := range inst.locks {
		l.Release()
	}
}
