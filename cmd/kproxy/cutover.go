package main

// The cutover controller. A reload that moves a replicated topic's produce
// route off its home cluster starts a cutover, driven by routing.Step:
// hold the topic's produce requests -> wait for those in flight (and open
// transactions on the topic) -> note the home's end offsets -> wait until
// the copy has every record below them -> flip -> release. cutover.max_hold
// bounds the hold; on timeout or error the attempt aborts and the held
// requests go to the home (nothing is lost either way).
//
// Both directions are the same operation: a flip makes the other cluster the
// topic's home and starts copying the topic back (reverse_after_cutover),
// so moving the route back (a rollback) is again hold -> drain -> flip.
// Producers-first (produce moves, fetch stays) is a flip whose consumers
// then read the copy back. Fetch routes move without a hold, onto any
// cluster that holds the topic's records with a map: its home, or the
// cluster it is copied to (consumers-first reads the copy, current to the
// replication lag). A fetch route onto a cluster nothing copies to is held
// on the home, and status says why.
//
// A flip is durable: the new home's maps are sealed (later records continue
// the virtual offsets) and a marker in state_dir/cutover/ records the home
// across restarts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

// cutoverStatus is one topic's cutover, for /status and `kproxy status`.
type cutoverStatus struct {
	Topic string `json:"topic"`
	From  string `json:"from"`
	To    string `json:"to"`
	// Home is where the topic's producers write now.
	Home       string    `json:"home"`
	State      string    `json:"state"` // steady, holding, draining, flipped, aborted, refused
	Reason     string    `json:"reason,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FlippedAt  time.Time `json:"flipped_at,omitempty"`
	HoldMillis int64     `json:"hold_ms"`
	Held       int       `json:"held_requests"`
	// Progress is a one-line account of a drain: how far the copy is from
	// the frozen end offsets.
	Progress string `json:"progress,omitempty"`
	// FetchNote says why the topic's fetches are not where the config says.
	FetchNote string `json:"fetch_note,omitempty"`

	cut routing.Cutover // the state machine's value (holding, draining)
}

type cutoverMarker struct {
	Topic      string    `json:"topic"`
	Home       string    `json:"home"` // empty in markers written before rollback existed: target
	FlippedAt  time.Time `json:"flipped_at"`
	Partitions int32     `json:"partitions"`
}

// cutovers owns per-topic cutover state and the routing overlay that pins
// topics whose route may not (yet) change.
type cutovers struct {
	log  hclog.Logger
	srv  *proxy.Server
	repl *replication
	dir  string // state_dir/cutover

	holdHist prometheus.Histogram
	flips    *prometheus.CounterVec
	aborts   prometheus.Counter

	mu           sync.Mutex // guards the fields below
	status       map[string]*cutoverStatus
	producePins  map[string]string // topic -> cluster its produce stays on
	fetchPins    map[string]string // topic -> cluster its fetches stay on
	markers      map[string]*cutoverMarker
	table        *routing.Table // the config's table, under the overlay
	routerChange func(proxy.Router) proxy.Router

	// admins is shared with the group mover (run.go).
	admins *clusterAdmins
}

func newCutovers(log hclog.Logger, srv *proxy.Server, repl *replication, stateDir string, reg prometheus.Registerer) (*cutovers, error) {
	c := &cutovers{
		log: log, srv: srv, repl: repl, dir: filepath.Join(stateDir, "cutover"),
		admins: &clusterAdmins{},
		status: map[string]*cutoverStatus{}, producePins: map[string]string{}, fetchPins: map[string]string{}, markers: map[string]*cutoverMarker{},
		holdHist: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kproxy_cutover_hold_seconds", Help: "How long produce requests of a topic were held during a cutover.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		flips:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_cutover_flips_total", Help: "Topics flipped, by the cluster they flipped to."}, []string{"to"}),
		aborts:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_cutover_aborts_total", Help: "Cutovers aborted (the topic stayed on its cluster)."}),
	}
	reg.MustRegister(c.holdHist, c.flips, c.aborts)
	if stateDir == "" {
		return c, nil
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var m cutoverMarker
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		if m.Home == "" {
			m.Home = proxy.Target
		}
		c.markers[m.Topic] = &m
		c.status[m.Topic] = &cutoverStatus{Topic: m.Topic, From: other(m.Home), To: m.Home, Home: m.Home, State: "flipped", FlippedAt: m.FlippedAt}
		if err := repl.loadHome(m.Topic, m.Home, m.Partitions); err != nil {
			return nil, fmt.Errorf("flipped topic %s: %w", m.Topic, err)
		}
	}
	return c, nil
}

// routerLocked is the proxy's router: the config's table under the pins.
func (c *cutovers) routerLocked() proxy.Router {
	clone := func(m map[string]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	var r proxy.Router = pinnedRouter{proxy.NewTableRouter(c.table), clone(c.producePins), clone(c.fetchPins)}
	if c.routerChange != nil {
		r = c.routerChange(r)
	}
	return r
}

// refreshRouter installs the router again (a group move changed its pins).
func (c *cutovers) refreshRouter() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.table != nil {
		c.srv.SetRouter(c.routerLocked())
	}
}

// pinnedRouter keeps pinned topics' produce and fetch on one cluster.
type pinnedRouter struct {
	proxy.Router
	produce, fetch map[string]string
}

func (r pinnedRouter) ProduceCluster(topic, clientID string) string {
	if c, ok := r.produce[topic]; ok {
		return c
	}
	return r.Router.ProduceCluster(topic, clientID)
}

func (r pinnedRouter) FetchCluster(topic, clientID, group string) string {
	if c, ok := r.fetch[topic]; ok {
		return c
	}
	return r.Router.FetchCluster(topic, clientID, group)
}

// apply installs a new config's routes, starting cutovers for replicated
// topics whose produce route leaves their home.
func (c *cutovers) apply(cfg *config.Config, prev, next *routing.Table, topics []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.table = next
	policy := routing.PolicyOf(cfg)
	seen := map[string]bool{}
	for t := range c.markers {
		topics = append(topics, t)
	}
	var start []routing.Cutover
	for _, t := range topics {
		if seen[t] {
			continue
		}
		seen[t] = true
		if !next.Replicated(t) && c.markers[t] == nil && (prev == nil || !prev.Replicated(t)) {
			continue
		}
		home := c.repl.home(t)
		np, nf := string(next.Route(t, routing.Produce, "", "")), string(next.Route(t, routing.Fetch, "", ""))
		st := c.status[t]
		if st != nil && (st.State == "holding" || st.State == "draining") {
			continue // the running attempt finishes or aborts first
		}
		c.producePins[t] = home
		c.fetchPins[t] = home
		var fetchNote string
		switch {
		case nf == home:
			delete(c.fetchPins, t)
		case c.repl.copiesInto(t, nf):
			delete(c.fetchPins, t) // reads the copy through its map
		default:
			fetchNote = fmt.Sprintf("fetch stays on the %s (the topic's home): nothing copies the topic into the %s (replication.reverse_after_cutover is off, or the topic is not replicated)", home, nf)
		}
		switch {
		case np == home:
			if c.markers[t] == nil {
				delete(c.producePins, t) // never flipped: the table is right
			}
			if st != nil && st.State != "flipped" {
				delete(c.status, t)
				st = nil
			}
		case !c.repl.copiesInto(t, np):
			reason := fmt.Sprintf("produce stays on the %s (the topic's home): nothing copies the topic into the %s, so a flip there would lose records", home, np)
			if np == proxy.Source && !cfg.Replication.ReverseAfterCutover {
				reason = fmt.Sprintf("produce stays on the %s: moving back to the source needs replication.reverse_after_cutover, which is off", home)
			}
			if st == nil || st.Reason != reason {
				c.log.Error("cutover refused; the topic keeps its route", "topic", t, "reason", reason)
			}
			st = &cutoverStatus{Topic: t, From: home, To: np, Home: home, State: "refused", Reason: reason, StartedAt: time.Now()}
			c.status[t] = st
		default:
			cut := routing.Cutover{Topic: t, From: config.Cluster(home), To: config.Cluster(np), Scope: routing.ScopeProduce, Other: config.Cluster(nf)}
			cut, acts, err := routing.Step(cut, routing.RouteChanged{}, time.Now(), policy)
			if err != nil {
				c.log.Error("cutover not started", "topic", t, "error", err)
				continue
			}
			// Fetches stay on the home for the hold: it has every record.
			c.fetchPins[t] = home
			st = &cutoverStatus{Topic: t, From: home, To: np, Home: home, State: cut.State.String(), StartedAt: cut.StartedAt, cut: cut}
			c.status[t] = st
			c.log.Info("cutover "+cut.State.String(), "topic", t, "from", home, "to", np, "max_hold", cfg.Cutover.MaxHold, "actions", fmt.Sprint(acts))
			start = append(start, cut)
		}
		if st != nil {
			st.FetchNote = fetchNote
		} else if fetchNote != "" {
			c.status[t] = &cutoverStatus{Topic: t, From: home, To: home, Home: home, State: "steady", FetchNote: fetchNote}
		}
	}
	c.srv.SetRouter(c.routerLocked())
	for _, cut := range start {
		go c.run(cut, cfg, policy)
	}
}

// step applies one event to a topic's running cutover and logs the
// transition as one line.
func (c *cutovers) step(topic string, ev routing.Event, policy routing.Policy, kv ...any) routing.Cutover {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status[topic]
	next, acts, err := routing.Step(st.cut, ev, time.Now(), policy)
	if err != nil {
		c.log.Error("cutover state machine refused an event", "topic", topic, "event", fmt.Sprint(ev), "error", err)
		return st.cut
	}
	st.cut = next
	st.State = next.State.String()
	args := append([]any{"topic", topic, "from", string(next.From), "to", string(next.To), "event", fmt.Sprint(ev), "actions", fmt.Sprint(acts)}, kv...)
	if next.State == routing.Aborted {
		args = append(args, "reason", next.Reason)
	}
	c.log.Info("cutover "+next.State.String(), args...)
	return next
}

// run is one topic's hold -> drain -> flip -> release.
func (c *cutovers) run(cut routing.Cutover, cfg *config.Config, policy routing.Policy) {
	topic, from, to := cut.Topic, string(cut.From), string(cut.To)
	deadline, _ := cut.Deadline(policy)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c.srv.HoldProduce(topic)
	phases := newPhaseTimer()

	ends, err := c.drainInFlight(ctx, cfg, topic, from, phases)
	var pl *flipPlan
	if err == nil {
		c.step(topic, routing.InFlightDrained{Ends: ends}, policy)
		pl, err = c.drainAndPlan(ctx, cfg, topic, from, to, ends, phases)
	}
	if err == nil {
		err = c.commit(cfg, pl)
		phases.mark("commit")
	}
	if err != nil && ctx.Err() != nil {
		// Past max_hold: the Tick at the deadline is what aborts.
		next := c.step(topic, routing.Tick{}, policy, "error", err.Error())
		if next.State != routing.Aborted {
			c.step(topic, routing.Failed{Reason: err.Error()}, policy)
		}
	} else if err != nil {
		c.step(topic, routing.Failed{Reason: err.Error()}, policy)
	}
	if err == nil {
		c.step(topic, routing.Replicated{}, policy)
	}

	c.mu.Lock()
	st := c.status[topic]
	held := st.cut.HoldDuration
	st.HoldMillis = held.Milliseconds()
	st.Held = c.srv.HeldCount(topic)
	st.Progress = ""
	if err != nil {
		st.Reason = err.Error()
		c.producePins[topic] = from // the route stays
		c.fetchPins[topic] = from
		c.aborts.Inc()
	} else {
		st.FlippedAt, st.Home = st.cut.FlippedAt, to
		c.producePins[topic] = to
		c.fetchPins[topic] = to
		if nf := string(c.table.Route(topic, routing.Fetch, "", "")); nf == to || (nf == from && cfg.Replication.ReverseAfterCutover) {
			delete(c.fetchPins, topic) // the copy back serves a fetch route left on `from`
		}
		c.flips.WithLabelValues(to).Inc()
	}
	c.holdHist.Observe(held.Seconds())
	c.srv.SetRouter(c.routerLocked())
	c.mu.Unlock()
	// Release after the router names the cluster the held requests go to.
	c.srv.ReleaseProduce(topic)
	if err != nil {
		c.log.Error("cutover aborted; held produce requests released to the "+from, "topic", topic, "hold", held, "phases", phases.String(), "error", err)
		if !c.repl.copiesInto(topic, to) {
			// The copy was stopped for the flip: resume it.
			if rerr := c.repl.startCopy(topic, to); rerr != nil {
				c.log.Error("replication not resumed after an aborted flip", "topic", topic, "error", rerr)
			}
		}
		return
	}
	c.log.Info("cutover released held produce requests to the "+to, "topic", topic, "hold", held, "phases", phases.String())
	if from == proxy.Target || cfg.Replication.ReverseAfterCutover {
		if err := c.repl.startCopy(topic, from); err != nil {
			c.log.Error("the copy back to the cluster the topic left did not start", "topic", topic, "to", from, "error", err)
		}
	}
}

// drainInFlight waits until no produce request and no transaction for the
// topic is in flight, then returns the home's end offsets: every
// acknowledged record lies below them.
func (c *cutovers) drainInFlight(ctx context.Context, cfg *config.Config, topic, from string, phases *phaseTimer) (map[int32]int64, error) {
	if err := c.srv.WaitProduceIdle(ctx, topic); err != nil {
		return nil, fmt.Errorf("waiting for in-flight produce requests: %w", err)
	}
	phases.mark("in-flight")
	// An open transaction on the topic finishes on the home first: its
	// marker must lie below the end offsets the drain waits for.
	if err := c.srv.WaitTxnIdle(ctx, topic); err != nil {
		return nil, fmt.Errorf("waiting for open transactions on the topic: %w", err)
	}
	phases.mark("transactions")
	defer phases.mark("ends")
	// EndTxn answers once the coordinator decided; the transaction's
	// markers reach the partitions a moment later, and each moves the log
	// end. Wait until every partition's last stable offset is its end (no
	// marker pending), so the ends frozen here are final.
	for {
		ends, err := c.endOffsets(ctx, cfg, from, topic)
		if err != nil {
			return nil, err
		}
		stable, err := c.stableOffsets(ctx, cfg, from, topic)
		if err != nil {
			return nil, err
		}
		settled := true
		for p, e := range ends {
			if stable[p] != e {
				settled = false
			}
		}
		if settled {
			return ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for transaction markers on the %s: %w", from, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// phaseTimer measures a hold's phases, for the log line that ends it.
type phaseTimer struct {
	last  time.Time
	parts []string
}

func newPhaseTimer() *phaseTimer { return &phaseTimer{last: time.Now()} }

func (p *phaseTimer) mark(name string) {
	now := time.Now()
	p.parts = append(p.parts, fmt.Sprintf("%s=%s", name, now.Sub(p.last).Round(100*time.Microsecond)))
	p.last = now
}

func (p *phaseTimer) String() string { return fmt.Sprint(p.parts) }

// close releases the controller's clients.
func (c *cutovers) close() { c.admins.close() }

// endOffsets lists a topic's end offsets on a cluster.
func (c *cutovers) endOffsets(ctx context.Context, cfg *config.Config, cluster, topic string) (map[int32]int64, error) {
	return c.listOffsets(ctx, cfg, cluster, topic, false)
}

// stableOffsets lists a topic's last stable offsets (read_committed ends).
func (c *cutovers) stableOffsets(ctx context.Context, cfg *config.Config, cluster, topic string) (map[int32]int64, error) {
	return c.listOffsets(ctx, cfg, cluster, topic, true)
}

func (c *cutovers) listOffsets(ctx context.Context, cfg *config.Config, cluster, topic string, stable bool) (map[int32]int64, error) {
	adm, err := c.admins.get(cfg, cluster)
	if err != nil {
		return nil, err
	}
	list := adm.ListEndOffsets
	if stable {
		list = adm.ListCommittedOffsets
	}
	listed, err := list(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("%s end offsets: %w", cluster, err)
	}
	ends := map[int32]int64{}
	var lerr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && lerr == nil {
			lerr = fmt.Errorf("%s end offset of partition %d: %w", cluster, o.Partition, o.Err)
		}
		ends[o.Partition] = o.Offset
	})
	if lerr == nil && len(ends) == 0 {
		lerr = fmt.Errorf("the %s lists no partitions of %s", cluster, topic)
	}
	return ends, lerr
}

// drainAndPlan waits until the copy into `to` has every record below ends,
// stops it and plans the flip: the new home's sealed maps, checked against
// its log, and the maps of the copy back.
func (c *cutovers) drainAndPlan(ctx context.Context, cfg *config.Config, topic, from, to string, ends map[int32]int64, phases *phaseTimer) (*flipPlan, error) {
	r := c.repl.copyInto(to)
	if r == nil {
		return nil, fmt.Errorf("nothing copies the topic into the %s", to)
	}
	if err := r.TopicErr(topic); err != nil {
		return nil, fmt.Errorf("replication of the topic failed: %w", err)
	}
	for p, end := range ends {
		if err := r.WaitCopied(ctx, topic, p, end); err != nil {
			return nil, fmt.Errorf("partition %d not copied up to %d within the hold: %w", p, end, err)
		}
	}
	phases.mark("copy")
	final, err := c.repl.stopCopy(topic, to)
	if err != nil {
		return nil, err
	}
	phases.mark("stop")
	// Any failure from here on resumes the copy (run does). Both logs are
	// still now (produce held, copy stopped): list both ends at once.
	var toEnds map[int32]int64
	var toErr error
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		toEnds, toErr = c.endOffsets(ctx, cfg, to, topic)
	}()
	fromEnds, err := c.endOffsets(ctx, cfg, from, topic)
	<-listed
	if err != nil {
		return nil, err
	}
	for p, e := range fromEnds {
		if e != ends[p] {
			return nil, fmt.Errorf("partition %d: the %s's log moved from %d to %d while produce was held: something writes to it around kproxy", p, from, ends[p], e)
		}
	}
	pl, err := c.repl.planFlip(topic, from, to, final, fromEnds)
	if err != nil {
		return nil, err
	}
	// The sealed maps must end exactly where the new home's log ends: a
	// record there the map does not account for would shift every later
	// virtual offset.
	if toErr != nil {
		return nil, toErr
	}
	for p, e := range toEnds {
		f := pl.sealed[p]
		if f == nil {
			return nil, fmt.Errorf("partition %d has no offset map on the %s", p, to)
		}
		if _, te := f.FlipPoint(); te != e {
			return nil, fmt.Errorf("partition %d: the offset map ends at %s offset %d but its log ends at %d", p, to, te, e)
		}
	}
	phases.mark("check")
	return pl, nil
}

// commit makes the flip durable: the copy back's maps, then the marker.
func (c *cutovers) commit(cfg *config.Config, pl *flipPlan) error {
	if cfg.StateDir == "" {
		return errors.New("a flip needs state_dir to record it")
	}
	if err := c.repl.saveCopyBack(pl); err != nil {
		return err
	}
	m := cutoverMarker{Topic: pl.topic, Home: pl.to, FlippedAt: time.Now(), Partitions: int32(len(pl.sealed))}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, pl.topic+".json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, pl.topic+".json")); err != nil {
		return err
	}
	c.repl.adoptFlip(pl)
	c.mu.Lock()
	c.markers[pl.topic] = &m
	c.mu.Unlock()
	return nil
}

func (c *cutovers) list() []cutoverStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]cutoverStatus, 0, len(c.status))
	for _, st := range c.status {
		s := *st
		if s.State == "holding" || s.State == "draining" {
			s.Held = c.srv.HeldCount(s.Topic)
			s.HoldMillis = time.Since(s.StartedAt).Milliseconds()
			s.Progress = c.progressLocked(st)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// progressLocked describes a running cutover's drain.
func (c *cutovers) progressLocked(st *cutoverStatus) string {
	if st.State == "holding" {
		return "waiting for in-flight produce requests and open transactions"
	}
	r := c.repl.copyInto(string(st.cut.To))
	if r == nil {
		return ""
	}
	done, left := 0, int64(0)
	for p, end := range st.cut.FrozenEnds {
		copied := r.CopiedThrough(st.Topic, p)
		if copied >= end {
			done++
		} else {
			left += end - max(copied, 0)
		}
	}
	return fmt.Sprintf("%d of %d partitions copied to the frozen end, %d offsets to go", done, len(st.cut.FrozenEnds), left)
}
