package control

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

// adminServer serves /metrics, /healthz, /readyz, /status and /debug/pprof.
type adminServer struct {
	*http.Server
	ln net.Listener
}

// StatusDoc is the /status document; `kproxy status` renders it.
type StatusDoc struct {
	Generation    int64              `json:"config_generation"`
	LastReloadErr string             `json:"last_reload_error,omitempty"`
	Ready         bool               `json:"ready"`
	Proxy         proxy.Status       `json:"proxy"`
	RoutesDefault string             `json:"routes_default"`
	Routes        []routing.RuleView `json:"routes"`
	Topics        []TopicStatus      `json:"topics"`
	Replication   ReplicationStatus  `json:"replication"`
	Cutovers      []CutoverStatus    `json:"cutovers"`
	GroupMoves    []GroupMoveStatus  `json:"group_moves"`
}

// TopicStatus is one topic's effective routes (the rule that applies, and
// where its produce and fetch requests go).
type TopicStatus struct {
	Topic string           `json:"topic"`
	Rule  routing.RuleView `json:"rule"`
}

func startAdmin(addr string, inst *Instance) (*adminServer, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{inst.reg, inst.ctrl.repl}, promhttp.HandlerOpts{}))
	// Go profiles, for finding where a proxy's CPU goes under real load.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !inst.srv.Ready() {
			http.Error(w, "upstream clusters not reachable", http.StatusServiceUnavailable)
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
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener on %s: %w", addr, err)
	}
	a := &adminServer{Server: &http.Server{Handler: mux}, ln: ln}
	go func() { _ = a.Serve(ln) }()
	inst.log.Info("admin http listening", "addr", ln.Addr().String())
	return a, nil
}

// Status is the /status document.
func (inst *Instance) Status() StatusDoc {
	cfg := inst.Config()
	d := StatusDoc{Generation: inst.gen.Load(), Ready: inst.srv.Ready(), Proxy: inst.srv.Status(), RoutesDefault: string(cfg.Routes.Default),
		LastReloadErr: inst.LastReloadError()}
	d.Replication = inst.ctrl.Replication()
	d.Cutovers = inst.ctrl.Cutovers()
	d.GroupMoves = inst.ctrl.GroupMoves()
	if t, err := routing.NewTable(cfg); err == nil {
		d.Routes = t.Rules()
		for _, name := range inst.srv.KnownTopics() {
			d.Topics = append(d.Topics, TopicStatus{Topic: name, Rule: t.TopicRule(name)})
		}
	}
	return d
}
