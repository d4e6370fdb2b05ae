package control

// Instance is one serving kproxy: the proxy server, the control plane
// (Controller), the admin HTTP server and the config generation they serve.
// `kproxy run` and the demo (cmd/kproxy-demo) both start one with Start.

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
	"github.com/kproxy/kproxy/secure"
)

// Instance is one running kproxy.
type Instance struct {
	log     hclog.Logger
	srv     *proxy.Server
	ctrl    *Controller
	admin   *adminServer
	mu      sync.Mutex // guards cfg; serialises Apply
	cfg     *config.Config
	gen     atomic.Int64
	lastErr atomic.Pointer[string]
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec
	lastOK  prometheus.Gauge
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
	if opts.Listeners, err = proxyListeners(cfg, log.Named("tls")); err != nil {
		return nil, err
	}
	opts.Router = proxy.NewTableRouter(table)
	opts.Logger = log.Named("proxy")
	opts.Registerer = reg
	srv, err := proxy.New(opts)
	if err != nil {
		return nil, err
	}
	srv.SetPolicy(proxyPolicy(cfg))
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return nil, err
	}
	ctrl, err := NewController(log, srv, cfg, reg)
	if err != nil {
		srv.Close()
		return nil, err
	}
	inst := &Instance{log: log, srv: srv, ctrl: ctrl, cfg: cfg, reg: reg}
	ctrl.Start(cfg, table)
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
			return nil, err
		}
		inst.admin = a
	}
	return inst, nil
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
		upstream[string(name)] = u
	}
	return proxy.Options{
		Listen:        cfg.Listen,
		AdvertiseHost: host,
		AdvertisePort: int32(port),
		ClusterID:     cfg.ClusterID,
		NodeID:        cfg.NodeID,
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
		},
		StateDir: cfg.StateDir,
	}, nil
}

// Apply installs a new valid config: routes change for new requests without
// touching connections. Settings that need a restart are logged and kept.
func (inst *Instance) Apply(next *config.Config) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	prev := inst.cfg
	if r := config.RestartRequired(prev, next); len(r) > 0 {
		inst.reject(fmt.Sprintf("these settings need a restart: %v", r))
		return
	}
	table, err := routing.NewTable(next)
	if err != nil {
		inst.reject(err.Error())
		return
	}
	inst.ctrl.Apply(next, table)
	inst.srv.SetPolicy(proxyPolicy(next))
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
// cutovers and group moves) and the proxy.
func (inst *Instance) Close() {
	if inst.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		inst.admin.Shutdown(ctx)
		cancel()
	}
	inst.ctrl.Close()
	inst.srv.Close()
}
