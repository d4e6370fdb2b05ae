package control

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
	"github.com/kproxy/kproxy/secure"
)

// adminServer serves /metrics, /healthz, /readyz, /status and, when
// admin.pprof is set, /debug/pprof. Off loopback it requires a bearer token
// (admin.token_file) unless admin.insecure says otherwise (config checks
// this; docs/security.md).
type adminServer struct {
	*http.Server
	ln net.Listener
}

// StatusDoc is the /status document; `kproxy status` renders it.
type StatusDoc struct {
	Generation    int64              `json:"config_generation"`
	LastReloadErr string             `json:"last_reload_error,omitempty"`
	Ready         bool               `json:"ready"`
	NotReady      string             `json:"not_ready,omitempty"` // why not, when not ready
	Needed        []string           `json:"needed_clusters"`     // the clusters readiness requires (readiness.go)
	Proxy         proxy.Status       `json:"proxy"`
	RoutesDefault string             `json:"routes_default"`
	Routes        []routing.RuleView `json:"routes"`
	Topics        []TopicStatus      `json:"topics"`
	Replication   ReplicationStatus  `json:"replication"`
	Cutovers      []CutoverStatus    `json:"cutovers"`
	GroupMoves    []GroupMoveStatus  `json:"group_moves"`
	Bypass        BypassStatus       `json:"bypass"`
	// Instances is the membership of the virtual cluster, with control:
	// (docs/ha.md); absent when this instance serves alone.
	Instances *InstancesStatus `json:"instances,omitempty"`
}

// TopicStatus is one topic's effective routes (the rule that applies, and
// where its produce and fetch requests go).
type TopicStatus struct {
	Topic string           `json:"topic"`
	Rule  routing.RuleView `json:"rule"`
}

// Admin HTTP bounds: a slow or hostile client cannot hold a connection
// open by trickling headers, nor send large bodies.
const (
	adminReadHeaderTimeout = 10 * time.Second
	adminReadTimeout       = 30 * time.Second
	adminIdleTimeout       = 2 * time.Minute
	adminMaxHeaderBytes    = 64 << 10
	adminMaxBodyBytes      = 1 << 20
)

func startAdmin(addr string, inst *Instance) (*adminServer, error) {
	sec := inst.Config().AdminHTTP
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{inst.reg, inst.ctrl.repl}, promhttp.HandlerOpts{}))
	if sec.Pprof {
		// Go profiles, for finding where a proxy's CPU goes under real
		// load. Off by default: a profile or trace costs CPU and shows
		// the process's internals.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := inst.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(inst.Status())
	})
	// The cockpit: what a candidate config would do (plan.go).
	mux.HandleFunc("POST /plan", inst.servePlan)
	mux.HandleFunc("/clients", inst.serveClients)
	mux.HandleFunc("GET /{$}", inst.serveWeb)
	mux.HandleFunc("GET /kproxy.css", serveCSS)
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, adminMaxBodyBytes)
		mux.ServeHTTP(w, r)
	})
	if sec.TokenFile != "" {
		tok, err := secure.NewBearerToken(sec.TokenFile)
		if err != nil {
			return nil, err
		}
		handler = tok.Wrap(handler, "/healthz", "/readyz")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener on %s: %w", addr, err)
	}
	mtls := sec.TLS != nil && sec.TLS.ClientCAFile != ""
	if host, _, _ := net.SplitHostPort(addr); !config.IsLoopback(host) && sec.TokenFile == "" && !mtls {
		inst.log.Warn("admin http is reachable from other machines without a token (admin.insecure: true): anyone who can connect reads /status and /metrics", "addr", addr)
	}
	if sec.TLS != nil {
		tc, err := secure.ServerTLS(sec.TLS, inst.log.Named("admin-tls"))
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("admin tls: %w", err)
		}
		ln = tls.NewListener(ln, tc)
	}
	a := &adminServer{Server: &http.Server{Handler: handler, ReadHeaderTimeout: adminReadHeaderTimeout, ReadTimeout: adminReadTimeout,
		IdleTimeout: adminIdleTimeout, MaxHeaderBytes: adminMaxHeaderBytes}, ln: ln}
	go func() { _ = a.Serve(ln) }()
	inst.log.Info("admin http listening", "addr", ln.Addr().String(), "tls", sec.TLS != nil, "token", sec.TokenFile != "", "pprof", sec.Pprof)
	return a, nil
}

// startMetrics serves /metrics alone on addr (admin.metrics_address): no
// token, so a scraper needs none while the admin address is protected.
func startMetrics(addr string, inst *Instance) (*adminServer, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{inst.reg, inst.ctrl.repl}, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	a := &adminServer{Server: &http.Server{Handler: mux, ReadHeaderTimeout: adminReadHeaderTimeout, ReadTimeout: adminReadTimeout,
		IdleTimeout: adminIdleTimeout, MaxHeaderBytes: adminMaxHeaderBytes}, ln: ln}
	go func() { _ = a.Serve(ln) }()
	inst.log.Info("metrics http listening (/metrics only, no token)", "addr", ln.Addr().String())
	return a, nil
}

// MetricsAddr is where admin.metrics_address listens, or nil.
func (inst *Instance) MetricsAddr() net.Addr {
	if inst.metrics == nil {
		return nil
	}
	return inst.metrics.ln.Addr()
}

// Status is the /status document.
func (inst *Instance) Status() StatusDoc {
	cfg := inst.Config()
	d := StatusDoc{Generation: inst.gen.Load(), Proxy: inst.srv.Status(), RoutesDefault: string(cfg.Routes.Default),
		LastReloadErr: inst.LastReloadError()}
	d.Replication = inst.ctrl.Replication()
	d.Cutovers = inst.ctrl.Cutovers()
	d.Needed = neededClusters(cfg, d.Cutovers)
	d.Ready, d.NotReady = inst.Ready()
	d.GroupMoves = inst.ctrl.GroupMoves()
	d.Bypass = inst.ctrl.Bypass()
	if inst.insts != nil {
		d.Instances = inst.insts.status()
	}
	if t, err := routing.NewTable(cfg); err == nil {
		d.Routes = t.Rules()
		for _, name := range inst.srv.KnownTopics() {
			d.Topics = append(d.Topics, TopicStatus{Topic: name, Rule: t.TopicRule(name)})
		}
	}
	return d
}
