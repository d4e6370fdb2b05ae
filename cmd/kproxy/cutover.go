package main

// The cutover controller: turns a reload that moves a replicated topic's
// produce route from source to target into hold -> drain -> flip -> release,
// bounded by cutover.max_hold (abort: release to the source, route kept).
// Consumers-first (fetch: target while producing to source) needs no hold:
// reads go through the live offset map. Producers-first and rollback (back to
// the source after a flip) need reverse replication, which kproxy does not
// have yet: such a reload keeps the topic where it is and says why.
//
// A flip is durable: the topic's offset maps are sealed (the map ends at the
// flip; later target records continue the virtual offsets) and a marker in
// state_dir/cutover/ keeps the topic on the target across restarts.

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
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
)

// cutoverStatus is one topic's cutover, for /status and `kproxy status`.
type cutoverStatus struct {
	Topic      string    `json:"topic"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	State      string    `json:"state"` // holding, draining, flipped, aborted, refused
	Reason     string    `json:"reason,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FlippedAt  time.Time `json:"flipped_at,omitempty"`
	HoldMillis int64     `json:"hold_ms"`
	Held       int       `json:"held_requests"`
}

type cutoverMarker struct {
	Topic      string    `json:"topic"`
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
	flips    prometheus.Counter
	aborts   prometheus.Counter

	mu      sync.Mutex // guards the fields below
	status  map[string]*cutoverStatus
	pins    map[string]string // topic -> cluster its produce and fetch stay on
	flipped map[string]*cutoverMarker
	table   *routing.Table // the config's table, under the overlay
}

func newCutovers(log hclog.Logger, srv *proxy.Server, repl *replication, stateDir string, reg prometheus.Registerer) (*cutovers, error) {
	c := &cutovers{
		log: log, srv: srv, repl: repl, dir: filepath.Join(stateDir, "cutover"),
		status: map[string]*cutoverStatus{}, pins: map[string]string{}, flipped: map[string]*cutoverMarker{},
		holdHist: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kproxy_cutover_hold_seconds", Help: "How long produce requests of a topic were held during a cutover.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		flips:    prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_cutover_flips_total", Help: "Topics flipped to the target."}),
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
		b, err := os.ReadFile(filepath.Join(c.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var m cutoverMarker
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		c.flipped[m.Topic] = &m
		c.pins[m.Topic] = proxy.Target
		c.status[m.Topic] = &cutoverStatus{Topic: m.Topic, From: proxy.Source, To: proxy.Target, State: "flipped", FlippedAt: m.FlippedAt}
		if err := repl.sealTopic(m.Topic, m.Partitions); err != nil {
			return nil, fmt.Errorf("flipped topic %s: %w", m.Topic, err)
		}
	}
	return c, nil
}

// router is the proxy's router: the config's table under the pins.
func (c *cutovers) routerLocked() proxy.Router {
	pins := make(map[string]string, len(c.pins))
	for k, v := range c.pins {
		pins[k] = v
	}
	return pinnedRouter{proxy.NewTableRouter(c.table), pins}
}

// pinnedRouter keeps pinned topics on one cluster for produce and fetch.
type pinnedRouter struct {
	proxy.Router
	pins map[string]string
}

func (r pinnedRouter) ProduceCluster(topic, clientID string) string {
	if c, ok := r.pins[topic]; ok {
		return c
	}
	return r.Router.ProduceCluster(topic, clientID)
}

func (r pinnedRouter) FetchCluster(topic, clientID, group string) string {
	if c, ok := r.pins[topic]; ok {
		return c
	}
	return r.Router.FetchCluster(topic, clientID, group)
}

// apply installs a new config's routes, starting cutovers for replicated
// topics whose produce route moves to the target.
func (c *cutovers) apply(cfg *config.Config, prev, next *routing.Table, topics []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.table = next
	var start []string
	for _, t := range topics {
		if prev == nil {
			break
		}
		if !prev.Replicated(t) && !next.Replicated(t) {
			continue
		}
		// Where the topic's produce requests go now: its pin (held,
		// aborted, refused or flipped) or the previous config's route.
		now := prev.Route(t, routing.Produce, "", "")
		if pin, ok := c.pins[t]; ok {
			now = config.Cluster(pin)
		}
		np, nf := next.Route(t, routing.Produce, "", ""), next.Route(t, routing.Fetch, "", "")
		_, isFlipped := c.flipped[t]
		st := c.status[t]
		busy := st != nil && (st.State == "holding" || st.State == "draining")
		switch {
		case busy:
		case isFlipped && (np != config.Target || nf != config.Target):
			c.refuse(t, "rollback to the source needs reverse replication, which kproxy does not have yet; the topic stays on the target")
		case isFlipped:
		case now == config.Source && np == config.Target && nf != config.Target:
			c.refuse(t, "producers-first (produce: target while consumers read the source) needs reverse replication, which kproxy does not have yet; flip fetch first, or both together")
		case now == config.Source && np == config.Target:
			c.pins[t] = proxy.Source
			c.status[t] = &cutoverStatus{Topic: t, From: proxy.Source, To: proxy.Target, State: "holding", StartedAt: time.Now()}
			start = append(start, t)
		default:
			// The config keeps the topic where it is (or moves only its
			// fetch route, which needs no hold): no pin.
			delete(c.pins, t)
			if st != nil && st.State != "flipped" {
				delete(c.status, t)
			}
		}
	}
	c.srv.SetRouter(c.routerLocked())
	for _, t := range start {
		go c.run(t, cfg)
	}
}

func (c *cutovers) refuse(topic, reason string) {
	if st := c.status[topic]; st == nil || st.Reason != reason {
		c.log.Error("cutover refused; the topic keeps its route", "topic", topic, "reason", reason)
	}
	pin := proxy.Source
	if _, ok := c.flipped[topic]; ok {
		pin = proxy.Target
	}
	c.pins[topic] = pin
	c.status[topic] = &cutoverStatus{Topic: topic, State: "refused", Reason: reason, StartedAt: time.Now()}
	if _, ok := c.flipped[topic]; ok {
		c.status[topic].State = "flipped"
	}
}

func (c *cutovers) setState(topic, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.status[topic]; st != nil {
		st.State = state
	}
	c.log.Info("cutover "+state, "topic", topic)
}

// run is one topic's hold -> drain -> flip -> release.
func (c *cutovers) run(topic string, cfg *config.Config) {
	maxHold := cfg.Cutover.MaxHold
	ctx, cancel := context.WithTimeout(context.Background(), maxHold)
	defer cancel()
	start := time.Now()
	c.srv.HoldProduce(topic)
	c.log.Info("cutover holding produce", "topic", topic, "max_hold", maxHold)

	partitions, err := c.drain(ctx, cfg, topic)
	if err == nil {
		err = c.flip(ctx, cfg, topic, partitions)
	}
	held := time.Since(start)
	c.holdHist.Observe(held.Seconds())

	c.mu.Lock()
	st := c.status[topic]
	st.HoldMillis = held.Milliseconds()
	st.Held = c.srv.HeldCount(topic)
	if err != nil {
		st.State, st.Reason = "aborted", err.Error()
		c.pins[topic] = proxy.Source // the route stays
		c.aborts.Inc()
	} else {
		st.State, st.FlippedAt = "flipped", time.Now()
		c.pins[topic] = proxy.Target
		c.flips.Inc()
	}
	c.srv.SetRouter(c.routerLocked())
	c.mu.Unlock()
	// Release after the router names the cluster the held requests go to.
	c.srv.ReleaseProduce(topic)
	if err != nil {
		c.log.Error("cutover aborted; held produce requests released to the source", "topic", topic, "hold", held, "error", err)
		return
	}
	c.log.Info("cutover flipped; held produce requests released to the target", "topic", topic, "hold", held)
}

// drain waits until no produce for topic is in flight and the replicator has
// copied every partition up to the source end offsets that leaves.
func (c *cutovers) drain(ctx context.Context, cfg *config.Config, topic string) (int32, error) {
	if err := c.srv.WaitProduceIdle(ctx, topic); err != nil {
		return 0, fmt.Errorf("waiting for in-flight produce requests: %w", err)
	}
	c.setState(topic, "draining")
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Clusters.Source.Bootstrap...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("source end offsets: %w", err)
	}
	r := c.repl.current()
	if r == nil {
		return 0, errors.New("replication is not running")
	}
	if err := r.TopicErr(topic); err != nil {
		return 0, fmt.Errorf("replication of the topic failed: %w", err)
	}
	var n int32
	var werr error
	ends.Each(func(o kadm.ListedOffset) {
		n++
		if werr == nil && o.Err == nil {
			if err := r.WaitCopied(ctx, topic, o.Partition, o.Offset); err != nil {
				werr = fmt.Errorf("partition %d not copied up to %d within the hold: %w", o.Partition, o.Offset, err)
			}
		} else if o.Err != nil && werr == nil {
			werr = o.Err
		}
	})
	return n, werr
}

// flip seals the topic's maps and persists the flip.
func (c *cutovers) flip(ctx context.Context, cfg *config.Config, topic string, partitions int32) error {
	if err := c.repl.stopTopic(topic); err != nil {
		return err
	}
	if err := c.repl.sealTopic(topic, partitions); err != nil {
		return err
	}
	// The sealed maps must end exactly where the target's log ends: a
	// record on the target the map does not account for would shift every
	// later virtual offset. On a mismatch the flip is aborted (and the
	// replicator resumes the topic, reconciling its tail).
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Clusters.Target.Bootstrap...))
	if err != nil {
		return err
	}
	defer cl.Close()
	tends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("target end offsets: %w", err)
	}
	var mismatch error
	tends.Each(func(o kadm.ListedOffset) {
		m := c.repl.sealedMap(topic, o.Partition)
		if m == nil {
			mismatch = fmt.Errorf("partition %d has no sealed offset map", o.Partition)
			return
		}
		if _, te := m.FlipPoint(); te != o.Offset && mismatch == nil {
			mismatch = fmt.Errorf("partition %d: the offset map ends at target offset %d but the target log ends at %d", o.Partition, te, o.Offset)
		}
	})
	if mismatch != nil {
		c.repl.unsealTopic(topic)
		return mismatch
	}
	m := cutoverMarker{Topic: topic, FlippedAt: time.Now(), Partitions: partitions}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, topic+".json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, topic+".json")); err != nil {
		return err
	}
	c.mu.Lock()
	c.flipped[topic] = &m
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
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// flippedTopics lists topics the replicator must no longer copy.
func (c *cutovers) flippedTopics() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for t := range c.flipped {
		out[t] = true
	}
	return out
}

var _ = replicator.Flipped
