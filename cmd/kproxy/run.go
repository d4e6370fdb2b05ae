package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("c", "kproxy.yaml", "config file")
	fs.StringVar(path, "config", "kproxy.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	log := newLogger(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	inst, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer inst.Close()
	go func() {
		if err := config.NewReloader(*path, cfg, log.Named("config"), inst.Apply).Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("config watcher stopped; reloads are off until restart", "error", err)
		}
	}()
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

func newLogger(cfg *config.Config, out *os.File) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "kproxy",
		Level:      hclog.LevelFromString(cfg.Log.Level),
		JSONFormat: cfg.Log.JSON,
		Output:     out,
	})
}

// instance is one running kproxy: proxy, admin server, and the config
// generation they serve.
type instance struct {
	log     hclog.Logger
	srv     *proxy.Server
	admin   *adminServer
	mu      sync.Mutex // guards cfg
	cfg     *config.Config
	gen     atomic.Int64
	lastErr atomic.Pointer[string]
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec
	lastOK  prometheus.Gauge
	repl    *replication
	cuts    *cutovers
	groups  *groupMoves
	table   *routing.Table // the applied config's routes (cuts overlays pins)
}

// start builds and starts an instance from a valid config.
func start(ctx context.Context, cfg *config.Config, log hclog.Logger) (*instance, error) {
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
	opts.Router = proxy.NewTableRouter(table)
	opts.Logger = log.Named("proxy")
	opts.Registerer = reg
	srv, err := proxy.New(opts)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return nil, err
	}
	inst := &instance{log: log, srv: srv, cfg: cfg, reg: reg, repl: newReplication(log.Named("replicator")), table: table}
	inst.repl.setConfig(cfg)
	cuts, err := newCutovers(log.Named("cutover"), srv, inst.repl, cfg.StateDir, reg)
	if err != nil {
		srv.Close()
		return nil, err
	}
	inst.cuts = cuts
	inst.groups = newGroupMoves(log.Named("groups"), srv, reg, cuts.refreshRouter)
	inst.groups.admins = cuts.admins // one client per cluster for both controllers
	cuts.routerChange = inst.groups.wrap
	srv.SetOffsetMaps(inst.repl)
	// Replication first: which copies run decides where routes may point.
	if err := inst.repl.apply(cfg); err != nil {
		// Clients are served either way; /status and the log say why
		// replication is not running.
		log.Error("replication not started", "error", err)
	}
	// A groups change made while kproxy was down moves those groups now.
	lastGroups, err := inst.groups.restore(cfg)
	if err != nil {
		log.Error("group homes from the last run not restored; groups are served from the config's homes", "error", err)
	}
	inst.groups.apply(cfg, lastGroups, table)
	// Every replicated topic is considered, not only the flipped ones: a
	// config edited while kproxy was down may route a topic away from its
	// home, and that takes a cutover (hold, drain, flip), never a switch.
	cuts.apply(cfg, nil, table, inst.repl.resolvedTopics())
	inst.gen.Store(1)
	inst.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_config_reloads_total", Help: "Config reloads by result (applied, rejected)."}, []string{"result"})
	inst.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kproxy_config_last_reload_success_timestamp_seconds", Help: "When the config was last loaded successfully."})
	inst.lastOK.SetToCurrentTime()
	reg.MustRegister(inst.reloads, inst.lastOK)
	if cfg.Admin != "" {
		a, err := startAdmin(cfg.Admin, inst)
		if err != nil {
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
	host, portS, err := net.SplitHostPort(adv)
	if err != nil {
		return proxy.Options{}, fmt.Errorf("advertise %q: %w", adv, err)
	}
	port, _ := strconv.Atoi(portS)
	clusters := map[string][]string{}
	if cfg.Clusters.Source != nil {
		clusters[proxy.Source] = cfg.Clusters.Source.Bootstrap
	}
	if cfg.Clusters.Target != nil {
		clusters[proxy.Target] = cfg.Clusters.Target.Bootstrap
	}
	return proxy.Options{
		Listen:        cfg.Listen,
		AdvertiseHost: host,
		AdvertisePort: int32(port),
		ClusterID:     cfg.ClusterID,
		NodeID:        cfg.NodeID,
		Clusters:      clusters,
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
func (inst *instance) Apply(next *config.Config) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	prev := inst.cfg
	if r := config.RestartRequired(prev, next); len(r) > 0 {
		msg := fmt.Sprintf("these settings need a restart: %v", r)
		inst.lastErr.Store(&msg)
		inst.reloads.WithLabelValues("rejected").Inc()
		inst.log.Error("config reload rejected; keeping the last good config", "reason", msg)
		return
	}
	table, err := routing.NewTable(next)
	if err != nil {
		msg := err.Error()
		inst.lastErr.Store(&msg)
		inst.reloads.WithLabelValues("rejected").Inc()
		inst.log.Error("config reload rejected; keeping the last good config", "error", err)
		return
	}
	if err := inst.repl.apply(next); err != nil {
		inst.log.Error("replication not (re)started after reload", "error", err)
	}
	// Group pins first, so the router that serves the new table already
	// keeps a moving group on its old home until its offsets are copied.
	inst.groups.apply(next, inst.table, table)
	// Replicated topics count even if no client has used them yet: their
	// route change is a cutover too.
	inst.cuts.apply(next, inst.table, table, append(inst.srv.KnownTopics(), inst.repl.resolvedTopics()...))
	inst.table = table
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

func (inst *instance) config() *config.Config {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.cfg
}

// Close stops the admin server and the proxy.
func (inst *instance) Close() {
	if inst.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		inst.admin.Shutdown(ctx)
		cancel()
	}
	inst.repl.stop()
	inst.srv.Close()
	inst.groups.wait()
	inst.cuts.close()
}
