package control

// The status page at the admin address's "/": one server-rendered HTML
// page (html/template, an embedded stylesheet, a meta refresh; no
// JavaScript) over the same data as /status and /clients: per-cluster
// health, every topic's route, home, cutover state, replication lag and
// catch-up estimate, last flip and hold, a progress bar while a drain runs;
// groups and their homes; the client inventory. Elements carry ids and
// data-state attributes so tests (and scripts) can read the page.

import (
	"embed"
	"fmt"
	"html/template"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
)

//go:embed web/status.html web/kproxy.css
var webFiles embed.FS

var statusPage = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"join": func(s []string) string {
		if len(s) == 0 {
			return "–"
		}
		return strings.Join(s, ", ")
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		d := now.Sub(t)
		if d < time.Second {
			return "now"
		}
		if d < time.Minute {
			return d.Round(time.Second).String() + " ago"
		}
		return d.Round(time.Minute).String() + " ago"
	},
	"ms":    func(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() },
	"bytes": humanBytes,
}).ParseFS(webFiles, "web/status.html"))

// webView is what the page shows.
type webView struct {
	Status   StatusDoc
	Now      time.Time
	Refresh  int
	Topics   []webTopic
	Groups   []webGroup
	Clients  []webClient
	Clusters []webCluster
	Flips    []CutoverEvent // newest first
	// Plan is the last POST /plan (nil: none since start); PlanApplied
	// says the running config is its candidate.
	Plan        *LastPlan
	PlanApplied bool
	// ShowInternal is ?internal=1: the clusters' internal topics are
	// listed too. Otherwise they are left out of Topics and named in
	// HiddenInternal (an operator migrates their own topics; the
	// internal ones are never routed or replicated).
	ShowInternal   bool
	HiddenInternal []string
}

// webClient is one client.id on the page: its connections merged (a
// client opens several; the operator asks which applications, not which
// sockets). /clients keeps one entry per connection.
type webClient struct {
	ClientID, Software                                 string
	Hosts, Produced, Fetched, Groups, TxnIDs, Clusters []string
	Open, Conns                                        int
	FirstSeen, LastSeen                                time.Time
}

type webCluster struct {
	Name, State, LastError string
	Brokers                []string
	Topics                 int
}

// webTopic is one row of the topics table.
type webTopic struct {
	Name, Produce, Fetch, Canary, Rule string
	Home, State, Note                  string
	Replicated                         bool
	LagRecords, LagBytes               int64
	CatchUp                            string // the copy's ETA, "" when caught up or not copied
	catchUpMillis                      int64  // the slowest partition's ETA; -1 not catching up
	RetentionRisk                      bool
	FlippedAt                          time.Time
	HoldMillis                         int64
	Draining                           bool
	DrainCopied, DrainPartitions       int
}

type webGroup struct {
	Group, Home, Move, State, Reason string
}

func (inst *Instance) serveWeb(w http.ResponseWriter, r *http.Request) {
	refresh := 2
	if n, err := strconv.Atoi(r.URL.Query().Get("refresh")); err == nil && n >= 0 {
		refresh = n
	}
	v := inst.webView(refresh, r.URL.Query().Get("internal") == "1")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, v); err != nil {
		inst.log.Error("status page not rendered", "error", err)
	}
}

func serveCSS(w http.ResponseWriter, _ *http.Request) {
	b, _ := webFiles.ReadFile("web/kproxy.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(b)
}

func (inst *Instance) webView(refresh int, showInternal bool) webView {
	d := inst.Status()
	clients := inst.Clients()
	v := webView{Status: d, Now: time.Now(), Refresh: refresh, Clients: webClients(clients), ShowInternal: showInternal}
	for _, c := range d.Proxy.Clusters {
		state := "reachable"
		if !c.Reachable {
			state = "unreachable"
		}
		v.Clusters = append(v.Clusters, webCluster{Name: c.Name, State: state, LastError: c.LastError, Brokers: c.Brokers, Topics: c.Topics})
	}
	v.Topics = webTopics(d)
	v.hideInternal()
	v.Groups = inst.webGroups(d, clients)
	v.Flips = inst.ctrl.cuts.historyList()
	if p := inst.lastPlan.Load(); p != nil {
		v.Plan = p
		v.PlanApplied = inst.Config().Hash() == p.Candidate
	}
	return v
}

// hideInternal moves the internal topics out of Topics into
// HiddenInternal, unless ShowInternal.
func (v *webView) hideInternal() {
	if v.ShowInternal {
		return
	}
	shown := v.Topics[:0]
	for _, t := range v.Topics {
		if internalTopic(t.Name) {
			v.HiddenInternal = append(v.HiddenInternal, t.Name)
			continue
		}
		shown = append(shown, t)
	}
	v.Topics = shown
}

// webTopics joins routes, cutovers and replication per topic.
func webTopics(d StatusDoc) []webTopic {
	rows := map[string]*webTopic{}
	row := func(name string) *webTopic {
		if t := rows[name]; t != nil {
			return t
		}
		t := &webTopic{Name: name, Home: "source", State: "steady", Produce: d.RoutesDefault, Fetch: d.RoutesDefault, Rule: "(default)"}
		rows[name] = t
		return t
	}
	for _, ts := range d.Topics {
		t := row(ts.Topic)
		t.Produce, t.Fetch, t.Canary = string(ts.Rule.Produce), string(ts.Rule.Fetch), canaryOf(ts.Rule)
		if ts.Rule.Pattern != "" {
			t.Rule = ts.Rule.Pattern
		}
		t.Home = t.Produce
	}
	copies := func(parts []replicator.PartitionStatus) {
		for _, p := range parts {
			if p.Partition < 0 {
				continue
			}
			t := row(p.Topic)
			t.Replicated = true
			t.LagRecords += p.LagRecords
			t.LagBytes += p.LagBytes
			t.RetentionRisk = t.RetentionRisk || p.RetentionAtRisk
			// The topic catches up when its slowest partition does.
			switch {
			case p.CatchUpMillis < 0:
				t.catchUpMillis = -1
				t.CatchUp = "not catching up"
			case t.catchUpMillis >= 0 && p.CatchUpMillis > t.catchUpMillis:
				t.catchUpMillis = p.CatchUpMillis
				t.CatchUp = (time.Duration(p.CatchUpMillis) * time.Millisecond).Round(time.Second).String()
			}
		}
	}
	copies(d.Replication.Partitions)
	copies(d.Replication.ToSource)
	for _, name := range d.Replication.Topics {
		row(name).Replicated = true
	}
	for _, c := range d.Cutovers {
		t := row(c.Topic)
		t.Home, t.State, t.FlippedAt, t.HoldMillis = c.Home, c.State, c.FlippedAt, c.HoldMillis
		t.Note = c.Progress
		if c.Reason != "" {
			t.Note = c.Reason
		}
		if c.FetchNote != "" {
			t.Note = strings.TrimSpace(t.Note + " " + c.FetchNote)
		}
		t.Draining = c.State == routing.Draining.String()
		t.DrainCopied, t.DrainPartitions = c.DrainCopied, c.DrainPartitions
	}
	out := make([]webTopic, 0, len(rows))
	for _, name := range slices.Sorted(maps.Keys(rows)) {
		out = append(out, *rows[name])
	}
	return out
}

func canaryOf(r routing.RuleView) string {
	if r.Canary == nil {
		return ""
	}
	return canaryText(r.Canary)
}

// webGroups lists the groups the config names, the groups clients use and
// the groups that moved, each with its home.
func (inst *Instance) webGroups(d StatusDoc, clients []proxy.ClientInfo) []webGroup {
	cfg := inst.Config()
	table, err := routing.NewTable(cfg)
	if err != nil {
		return nil
	}
	names := map[string]bool{}
	for g := range cfg.Groups.Homes {
		if !strings.ContainsAny(g, "*?[") {
			names[g] = true
		}
	}
	for _, c := range clients {
		for _, g := range c.Groups {
			names[g] = true
		}
	}
	moves := map[string]GroupMoveStatus{}
	for _, m := range d.GroupMoves {
		names[m.Group] = true
		moves[m.Group] = m
	}
	var out []webGroup
	for _, g := range slices.Sorted(maps.Keys(names)) {
		row := webGroup{Group: g, Home: string(table.GroupHome(g)), State: "steady"}
		if m, ok := moves[g]; ok {
			row.Move, row.State, row.Reason = fmt.Sprintf("%s → %s", m.From, m.To), string(m.State), m.Reason
			if m.State != groupMoved {
				row.Home = m.From
			}
		}
		out = append(out, row)
	}
	return out
}

// webClients merges connections by client.id.
func webClients(cs []proxy.ClientInfo) []webClient {
	by := map[string]*webClient{}
	add := func(dst *[]string, names ...string) {
		for _, n := range names {
			if n != "" && !slices.Contains(*dst, n) {
				*dst = append(*dst, n)
			}
		}
	}
	for _, c := range cs {
		w := by[c.ClientID]
		if w == nil {
			w = &webClient{ClientID: c.ClientID, FirstSeen: c.FirstSeen}
			by[c.ClientID] = w
		}
		w.Conns++
		if c.Open {
			w.Open++
		}
		if c.Software != "" {
			w.Software = strings.TrimSpace(c.Software + " " + c.SoftwareVersion)
		}
		if host, _, err := net.SplitHostPort(c.Remote); err == nil {
			add(&w.Hosts, host)
		}
		add(&w.Produced, c.Produced...)
		add(&w.Fetched, c.Fetched...)
		add(&w.Groups, c.Groups...)
		add(&w.TxnIDs, c.TransactionalID...)
		add(&w.Clusters, c.Clusters...)
		if c.FirstSeen.Before(w.FirstSeen) {
			w.FirstSeen = c.FirstSeen
		}
		if c.LastSeen.After(w.LastSeen) {
			w.LastSeen = c.LastSeen
		}
	}
	out := make([]webClient, 0, len(by))
	for _, id := range slices.Sorted(maps.Keys(by)) {
		w := by[id]
		for _, l := range [][]string{w.Hosts, w.Produced, w.Fetched, w.Groups, w.TxnIDs, w.Clusters} {
			slices.Sort(l)
		}
		out = append(out, *w)
	}
	return out
}
