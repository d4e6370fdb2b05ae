package control

// The cutover controller. A reload that moves a replicated topic's produce
// route off its home cluster starts a cutover. routing.Step decides every
// transition and the controller executes the actions it returns, in order,
// and nothing else (execute): hold the topic's produce requests -> wait for
// those in flight (and open transactions on the topic) and note the home's
// end offsets -> wait until the copy has every record below them, seal the
// new home's maps and record the flip -> flip the route -> release the held
// requests -> start the copy back. cutover.max_hold bounds the hold; on
// timeout or error the attempt aborts and the held requests go to the home
// (nothing is lost either way).
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
// A reload that arrives while an attempt runs: a route back to the home
// cancels the attempt (routing.RouteReverted; if the flip is already
// recorded it completes), and whatever the reload asked, the controller
// compares the topic with the config again once the attempt ends and starts
// the move the config now asks for. The config wins eventually: a topic is
// never left pinned against it by a reload it missed (decision 006).
//
// A flip is durable: the new home's maps are sealed (later records continue
// the virtual offsets) and a marker (markerStore, state_dir/cutover/)
// records the home across restarts.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
)

// CutoverStatus is one topic's cutover, for /status and `kproxy status`.
type CutoverStatus struct {
	Topic string `json:"topic"`
	From  string `json:"from"`
	To    string `json:"to"`
	// Home is where the topic's producers write now.
	Home string `json:"home"`
	// State is routing.State's name (steady, holding, draining, flipped,
	// aborted), or "refused" when the config asks for a move that would
	// lose records.
	State      string    `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FlippedAt  time.Time `json:"flipped_at,omitempty"`
	HoldMillis int64     `json:"hold_ms"`
	Held       int       `json:"held_requests"`
	// Progress is a one-line account of a drain: how far the copy is from
	// the frozen end offsets.
	Progress string `json:"progress,omitempty"`
	// DrainPartitions and DrainCopied count, while draining, the
	// partitions with frozen end offsets and those copied up to them (the
	// status page's progress bar).
	DrainPartitions int `json:"drain_partitions,omitempty"`
	DrainCopied     int `json:"drain_copied,omitempty"`
	// FetchNote says why the topic's fetches are not where the config says.
	FetchNote string `json:"fetch_note,omitempty"`
}

// StateRefused is CutoverStatus.State of a move the controller refuses.
const StateRefused = "refused"

// cutoverEntry is the controller's record of one topic.
type cutoverEntry struct {
	st      CutoverStatus
	cut     routing.Cutover // the state machine's value; the truth for State
	refused bool            // the config asks for a move that would lose records
	// running: an attempt's goroutine owns the topic until it ends.
	running bool
	// cancel cancels the running attempt (route reverted, shutdown).
	cancel context.CancelCauseFunc
	// reconsider: a reload arrived while the attempt ran; compare the topic
	// with the config again when it ends.
	reconsider bool
	// approaching: the attempt lets the copy catch up before it holds
	// (approach); produce is not held yet.
	approaching bool
}

func (e *cutoverEntry) view() CutoverStatus {
	s := e.st
	s.State = e.cut.State.String()
	if e.refused {
		s.State = StateRefused
	}
	return s
}

// errRouteReverted is the cause of an attempt cancelled by a reload that
// routes the topic back to its home.
var errRouteReverted = errors.New("a reload routed the topic back to its home")

// The cutover controller's ports: what it drives. Production wires the
// proxy server, the replication (replicationPort), the admin clients
// (adminOffsets) and state_dir/cutover (fileMarkers); the unit test wires
// fakes.

// produceGate holds and releases a topic's produce requests
// (proxy/cutover_hold.go).
type produceGate interface {
	HoldProduce(topic string)
	ReleaseProduce(topic string)
	HeldCount(topic string) int
	WaitProduceIdle(ctx context.Context, topic string) error
	WaitTxnIdle(ctx context.Context, topic string) error
	// KeepOldHomeProducers persists the producer state of the home at
	// the frozen ends, for the move the drain leads to (nil: none).
	KeepOldHomeProducers(topic, from string, parts map[int32][]proxy.ProducerState) error
	// CapFetch caps reads of the home at the frozen ends until the hold
	// is released (proxy/cutover_fetch_cap.go).
	CapFetch(topic, from string, ends map[int32]int64)
}

// endOffsets lists a topic's end offsets on a cluster: the log ends, or
// with stable the last stable offsets (read_committed ends).
type endOffsets interface {
	Ends(ctx context.Context, cluster, topic string, stable bool) (map[int32]int64, error)
	// Producers is each partition's producer state on cluster: upstream
	// producer id, epoch, last sequence (DescribeProducers).
	Producers(ctx context.Context, cluster, topic string) (map[int32][]proxy.ProducerState, error)
}

// topicCopies is the replication's side of a cutover.
type topicCopies interface {
	// Home is the cluster the topic's producers write to.
	Home(topic string) string
	// CopiesInto says whether the topic is (to be) copied into cluster to.
	CopiesInto(topic, to string) bool
	// WaitCopied waits until the copy into to has every record of the
	// topic below ends (per partition, the home's offsets).
	WaitCopied(ctx context.Context, topic, to string, ends map[int32]int64) error
	// CopiedThrough is how far the copy into to has copied a partition.
	CopiedThrough(topic, to string, partition int32) int64
	// Urge gives the copy of topic into to its own lane until release
	// (replicator.Urge): a cutover approaches and holds it.
	Urge(topic, to string) (release func())
	// SealFlip stops the copy into to and plans the flip: the new home's
	// sealed maps, checked against both logs (from must still end at ends).
	// On error the caller resumes the copy (StartCopy).
	SealFlip(ctx context.Context, topic, from, to string, ends map[int32]int64) (*flipPlan, error)
	// SaveCopyBack persists the maps the copy back starts from (before the
	// marker); AdoptFlip makes the plan's cluster the topic's home (after).
	SaveCopyBack(pl *flipPlan) error
	AdoptFlip(pl *flipPlan)
	// PlanPoints builds a coordinated flip's plan for every partition
	// from its members' flip points (left: the maps of from when the
	// topic last left it; nil, this instance's own); SaveFlip persists
	// its maps but those of skip.
	PlanPoints(topic, from, to string, points map[int32]flipPoint, left map[int32]*replicator.FlippedMap) (*flipPlan, error)
	SaveFlip(pl *flipPlan, skip map[int32]bool) error
	// StartCopy starts copying the topic into to.
	StartCopy(topic, to string) error
	// LoadHome restores a flipped topic's home from its maps at start-up.
	LoadHome(topic, cluster string, partitions int32) error
}

// markerStore keeps one marker per flipped topic.
type markerStore interface {
	Load() ([]cutoverMarker, error)
	Save(cutoverMarker) error
}

type cutoverMarker struct {
	Topic      string    `json:"topic"`
	Home       string    `json:"home"` // empty in markers written before rollback existed: target
	FlippedAt  time.Time `json:"flipped_at"`
	Partitions int32     `json:"partitions"`
	// Gen is the coordinated flip's gen in the control topic (0: a
	// single instance's flip).
	Gen int64 `json:"gen,omitempty"`
}

// cutovers owns per-topic cutover state and the topic pins of the router
// overlay: topics whose route may not (yet) follow the table.
type cutovers struct {
	log     hclog.Logger
	gate    produceGate
	ends    endOffsets
	copies  topicCopies
	markers markerStore
	overlay *overlay
	ctx     context.Context // the controller's lifetime; Close cancels it
	wg      sync.WaitGroup  // running attempts

	holdHist prometheus.Histogram
	flips    *prometheus.CounterVec
	aborts   prometheus.Counter

	mu          sync.Mutex // guards the fields below
	entries     map[string]*cutoverEntry
	producePins map[string]string // topic -> cluster its produce stays on
	fetchPins   map[string]string // topic -> cluster its fetches stay on
	flipped     map[string]*cutoverMarker
	cfg         *config.Config // the applied config
	table       *routing.Table // its table, under the pins
	history     []CutoverEvent // ended attempts, oldest first, at most cutoverHistory
	// gateRefusals: topics whose cutover failed a gate cutover.require
	// names, with the reason (plan.go measures them per reload).
	gateRefusals map[string]string

	// With several instances (config control: and replicate): coord
	// runs every flip through the control topic (coordflip.go) and owns
	// says which partitions this instance leads and copies; its drain
	// freezes and waits for those alone. nil with one instance.
	coord *coordFlips
	owns  func(topic string, partition int32) bool
	// coordPlans: the sealed flip each prepared coordinated flip waits
	// to commit (coordlocal.go).
	coordPlans map[string]*flipPlan
	// applying: considerLocked runs for a reload (apply), which retries
	// a coordinated flip that aborted.
	applying bool
	// prepareHook, set by tests, runs first in coordPrepare.
	prepareHook func(ctx context.Context) error
}

// gateRefusalsNow is the installed required-gate failures.
func (c *cutovers) gateRefusalsNow() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gateRefusals
}

// CutoverEvent is one ended cutover attempt, for the status page's flip
// history.
type CutoverEvent struct {
	Topic      string    `json:"topic"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Outcome    string    `json:"outcome"` // flipped or aborted
	Reason     string    `json:"reason,omitempty"`
	At         time.Time `json:"at"`
	HoldMillis int64     `json:"hold_ms"`
}

// cutoverHistory bounds the flip history kept in memory.
const cutoverHistory = 50

// historyList is the flip history, newest first.
func (c *cutovers) historyList() []CutoverEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.history)
	slices.Reverse(out)
	return out
}

// setGateRefusals installs the required-gate failures of the reload
// about to be applied.
func (c *cutovers) setGateRefusals(m map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gateRefusals = m
}

func newCutovers(ctx context.Context, log hclog.Logger, gate produceGate, ends endOffsets, copies topicCopies, markers markerStore, ov *overlay, reg prometheus.Registerer) (*cutovers, error) {
	c := &cutovers{
		log: log, gate: gate, ends: ends, copies: copies, markers: markers, overlay: ov, ctx: ctx,
		entries: map[string]*cutoverEntry{}, producePins: map[string]string{}, fetchPins: map[string]string{}, flipped: map[string]*cutoverMarker{},
		holdHist: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kproxy_cutover_hold_seconds", Help: "How long produce requests of a topic were held during a cutover.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		flips:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_cutover_flips_total", Help: "Topics flipped, by the cluster they flipped to."}, []string{"to"}),
		aborts:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_cutover_aborts_total", Help: "Cutovers aborted (the topic stayed on its cluster)."}),
	}
	reg.MustRegister(c.holdHist, c.flips, c.aborts)
	ms, err := markers.Load()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Home == "" {
			m.Home = proxy.Target
		}
		c.flipped[m.Topic] = &m
		from := other(m.Home)
		c.entries[m.Topic] = &cutoverEntry{
			st:  CutoverStatus{Topic: m.Topic, From: from, To: m.Home, Home: m.Home, FlippedAt: m.FlippedAt},
			cut: routing.Cutover{Topic: m.Topic, From: config.Cluster(from), To: config.Cluster(m.Home), State: routing.Flipped, FlippedAt: m.FlippedAt},
		}
		if err := copies.LoadHome(m.Topic, m.Home, m.Partitions); err != nil {
			return nil, fmt.Errorf("flipped topic %s: %w", m.Topic, err)
		}
	}
	return c, nil
}

// publishLocked hands the overlay the table and the topic pins.
func (c *cutovers) publishLocked() {
	if c.table != nil {
		c.overlay.setTopics(c.table, c.producePins, c.fetchPins)
	}
}

// attempt is a cutover ready to run: its first actions from routing.Step.
type attempt struct {
	cut    routing.Cutover
	acts   []routing.Action
	ctx    context.Context
	policy routing.Policy
}

// apply installs a new config's routes (prev is the table it replaces, nil
// at start-up), starting cutovers for replicated topics whose produce route
// leaves their home.
func (c *cutovers) apply(cfg *config.Config, prev, next *routing.Table, topics []string) {
	c.warm(next, topics)
	c.mu.Lock()
	c.cfg, c.table = cfg, next
	c.applying = true
	seen := map[string]bool{}
	for t := range c.flipped {
		topics = append(topics, t)
	}
	var start []attempt
	for _, t := range topics {
		if seen[t] {
			continue
		}
		seen[t] = true
		if !next.Replicated(t) && c.flipped[t] == nil && (prev == nil || !prev.Replicated(t)) {
			continue
		}
		if a := c.considerLocked(t); a != nil {
			start = append(start, *a)
		}
	}
	c.applying = false
	c.publishLocked()
	c.mu.Unlock()
	c.launch(start)
}

// endsWarmer is an endOffsets that can learn what its lookups need ahead
// of a hold (adminOffsets: the partition leaders).
type endsWarmer interface {
	Warm(ctx context.Context, cluster string, topics []string)
}

// warm prepares the end-offset lookups of the cutovers this table is about
// to start (replicated topics whose produce route leaves their home), on
// both clusters, before any of them holds produce: the hold then spends no
// round trip on metadata.
func (c *cutovers) warm(next *routing.Table, topics []string) {
	w, ok := c.ends.(endsWarmer)
	if !ok || next == nil {
		return
	}
	c.mu.Lock()
	all := slices.Clone(topics)
	flipped := map[string]bool{}
	for t := range c.flipped {
		all = append(all, t) // a rollback (apply considers them too)
		flipped[t] = true
	}
	c.mu.Unlock()
	moving := map[string][]string{} // cluster -> topics
	seen := map[string]bool{}
	for _, t := range all {
		if seen[t] || (!next.Replicated(t) && !flipped[t]) {
			continue
		}
		seen[t] = true
		home, to := c.copies.Home(t), string(next.Route(t, routing.Produce, "", ""))
		if home == "" || to == home {
			continue
		}
		moving[home] = append(moving[home], t)
		moving[to] = append(moving[to], t)
	}
	if len(moving) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for cluster, ts := range moving {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Warm(ctx, cluster, ts)
		}()
	}
	wg.Wait()
}

// launch runs attempts, each in its own tracked goroutine.
func (c *cutovers) launch(as []attempt) {
	for _, a := range as {
		go c.run(a)
	}
}

// considerLocked compares one topic's home with the applied config: it
// sets the topic's pins and returns the attempt to start, if any. For a
// topic whose attempt is running it only notes the reload (and cancels the
// attempt when the config routes the topic back to its home): the attempt
// looks again when it ends.
func (c *cutovers) considerLocked(t string) *attempt {
	cfg, next := c.cfg, c.table
	np, nf := string(next.Route(t, routing.Produce, "", "")), string(next.Route(t, routing.Fetch, "", ""))
	e := c.entries[t]
	if e != nil && e.running {
		e.reconsider = true
		if np == string(e.cut.From) {
			e.cancel(errRouteReverted)
		}
		return nil
	}
	home := c.copies.Home(t)
	if c.coord != nil {
		if ch := c.coord.home(t).Cluster; ch != "" && ch != home {
			// The control topic records a flip this instance's state
			// lacks (it was down): the topic stays where the others
			// serve it, never on the cluster it left.
			c.producePins[t], c.fetchPins[t] = ch, ch
			if e == nil || e.st.Home != ch {
				c.log.Error("the control topic homes the topic on another cluster than this instance's state; it is served there, without offset maps for a flip this instance did not take part in", "topic", t, "home", ch, "local", home)
				c.entries[t] = &cutoverEntry{
					st:  CutoverStatus{Topic: t, From: home, To: ch, Home: ch, Reason: "flipped while this instance was down"},
					cut: routing.Cutover{Topic: t, From: config.Cluster(home), To: config.Cluster(ch), State: routing.Flipped}}
			}
			return nil
		}
	}
	c.producePins[t] = home
	c.fetchPins[t] = home
	var fetchNote string
	switch {
	case nf == home:
		delete(c.fetchPins, t)
	case c.coord != nil:
		// Several instances: a read of the copy is not coordinated (a
		// partition's copy map lives with the instance copying it, and
		// moves with it, rebuilt from the logs), so fetch follows the
		// home, and moves with the flip.
		fetchNote = fmt.Sprintf("fetch stays on the %s (the topic's home): with several instances the copy in the %s is read only once the topic flipped there", home, nf)
	case c.copies.CopiesInto(t, nf):
		delete(c.fetchPins, t) // reads the copy through its map
	default:
		fetchNote = fmt.Sprintf("fetch stays on the %s (the topic's home): nothing copies the topic into the %s (replication.reverse_after_cutover is off, or the topic is not replicated)", home, nf)
	}
	var start *attempt
	switch {
	case np == home:
		if c.coord != nil {
			c.coord.want(t, home, home, false)
		}
		if c.flipped[t] == nil {
			delete(c.producePins, t) // never flipped: the table is right
		}
		// Config and traffic agree: only a flip is worth keeping in the
		// status (an aborted or refused attempt is over).
		if e != nil && (e.refused || e.cut.State != routing.Flipped) {
			delete(c.entries, t)
			e = nil
		}
	case !c.copies.CopiesInto(t, np):
		reason := fmt.Sprintf("produce stays on the %s (the topic's home): nothing copies the topic into the %s, so a flip there would lose records", home, np)
		if np == proxy.Source && !cfg.Replication.ReverseAfterCutover {
			reason = fmt.Sprintf("produce stays on the %s: moving back to the source needs replication.reverse_after_cutover, which is off", home)
		}
		if e == nil || e.st.Reason != reason {
			c.log.Error("cutover refused; the topic keeps its route", "topic", t, "reason", reason)
		}
		e = &cutoverEntry{refused: true,
			st:  CutoverStatus{Topic: t, From: home, To: np, Home: home, Reason: reason, StartedAt: time.Now()},
			cut: routing.Cutover{Topic: t, From: config.Cluster(home), To: config.Cluster(np), State: routing.Steady}}
		c.entries[t] = e
	case c.gateRefusals[t] != "":
		reason := c.gateRefusals[t]
		if e == nil || e.st.Reason != reason {
			c.log.Error("cutover refused by a required gate; the topic keeps its home", "topic", t, "to", np, "reason", reason)
		}
		e = &cutoverEntry{refused: true,
			st:  CutoverStatus{Topic: t, From: home, To: np, Home: home, Reason: reason, StartedAt: time.Now()},
			cut: routing.Cutover{Topic: t, From: config.Cluster(home), To: config.Cluster(np), State: routing.Steady}}
		c.entries[t] = e
	case c.ctx.Err() != nil:
		// Shutting down: no new attempt; the pins keep the home.
	case c.coord != nil:
		// Several instances: the driver runs the flip through the
		// control topic (coordflip.go); this instance follows it, and
		// meanwhile produce and fetch stay pinned on the home whatever
		// its own config says.
		c.coord.want(t, home, np, c.applying)
	default:
		policy := c.policy(cfg, np)
		cut := routing.Cutover{Topic: t, From: config.Cluster(home), To: config.Cluster(np)}
		cut, acts, err := routing.Step(cut, routing.RouteChanged{}, time.Now(), policy)
		if err != nil {
			c.log.Error("cutover not started", "topic", t, "error", err)
			break
		}
		// Fetches stay on the home for the hold: it has every record.
		c.fetchPins[t] = home
		ctx, cancel := context.WithCancelCause(c.ctx)
		e = &cutoverEntry{running: true, cancel: cancel, cut: cut,
			st: CutoverStatus{Topic: t, From: home, To: np, Home: home, StartedAt: cut.StartedAt}}
		c.entries[t] = e
		c.log.Info("cutover "+cut.State.String(), "topic", t, "from", home, "to", np, "max_hold", policy.MaxHold, "actions", fmt.Sprint(acts))
		c.wg.Add(1)
		start = &attempt{cut: cut, acts: acts, ctx: ctx, policy: policy}
	}
	if e != nil {
		e.st.FetchNote = fetchNote
	} else if fetchNote != "" {
		c.entries[t] = &cutoverEntry{
			st:  CutoverStatus{Topic: t, From: home, To: home, Home: home, FetchNote: fetchNote},
			cut: routing.Cutover{Topic: t, From: config.Cluster(home), To: config.Cluster(home), State: routing.Steady}}
	}
	return start
}

// policy is the policy of an attempt onto cluster to under cfg. A flip
// onto the source always starts the copy source -> target again: that is
// the configured replication, not reverse_after_cutover's copy back.
func (c *cutovers) policy(cfg *config.Config, to string) routing.Policy {
	p := routing.PolicyOf(cfg)
	if to == proxy.Source {
		p.ReverseReplication = true
	}
	return p
}

// step applies one event to a topic's running attempt, logs the transition
// as one line and returns the actions to execute.
func (c *cutovers) step(topic string, ev routing.Event, policy routing.Policy, kv ...any) (routing.Cutover, []routing.Action) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[topic]
	next, acts, err := routing.Step(e.cut, ev, time.Now(), policy)
	if err != nil {
		c.log.Error("cutover state machine refused an event", "topic", topic, "event", fmt.Sprint(ev), "error", err)
		return e.cut, nil
	}
	e.cut = next
	if next.State == routing.Flipped || next.State == routing.Aborted {
		// The hold ends with this step: its length and the requests it
		// queued (released by the actions that follow).
		e.st.HoldMillis = next.HoldDuration.Milliseconds()
		e.st.Held = c.gate.HeldCount(topic)
	}
	args := append([]any{"topic", topic, "from", string(next.From), "to", string(next.To), "event", fmt.Sprint(ev), "actions", fmt.Sprint(acts)}, kv...)
	if next.State == routing.Aborted {
		args = append(args, "reason", next.Reason)
		e.st.Reason = next.Reason
	}
	c.log.Info("cutover "+next.State.String(), args...)
	return next, acts
}

// run executes one attempt: the actions Step returns, in order, feeding
// each action's outcome back to Step as the next event.
func (c *cutovers) run(a attempt) {
	defer c.wg.Done()
	cut, acts, policy := a.cut, a.acts, a.policy
	topic := cut.Topic
	ex := &execution{topic: topic, phases: newPhaseTimer(), unurge: func() {}}
	defer func() { ex.unurge() }()
	if len(acts) > 0 {
		if _, holds := acts[0].(routing.ActionHoldProduce); holds {
			// The copy's own lane from the approach until the drain
			// has every record (copyAndCommit): what it copies right
			// before and in the hold does not queue behind the other
			// topics' copies.
			ex.unurge = c.copies.Urge(topic, string(cut.To))
			c.approach(a.ctx, topic, string(cut.From), string(cut.To))
			cut = c.holdFromNow(topic)
			ex.phases = newPhaseTimer()
		}
	}
	ctx, cancel := a.ctx, context.CancelFunc(func() {})
	if deadline, ok := cut.Deadline(policy); ok {
		ctx, cancel = context.WithDeadline(a.ctx, deadline)
	}
	defer cancel()
	for len(acts) > 0 {
		act := acts[0]
		acts = acts[1:]
		ev, err := c.execute(ctx, ex, cut, act, policy)
		if ev == nil {
			continue
		}
		var kv []any
		if err != nil {
			kv = []any{"error", err.Error()}
		}
		var more []routing.Action
		cut, more = c.step(topic, ev, policy, kv...)
		if _, tick := ev.(routing.Tick); tick && cut.State != routing.Aborted {
			// The deadline passed by the context's clock, not yet by
			// Step's: fail the attempt with the same error.
			cut, more = c.step(topic, routing.Failed{Reason: err.Error()}, policy)
		}
		acts = append(acts, more...)
	}
	c.finish(cut, ex)
}

// approachBudget bounds how long an attempt lets the copy catch up before
// it holds produce (approach); a copy further behind than that is held
// for anyway and gets max_hold to finish, as before the approach existed.
const approachBudget = 10 * time.Second

// approach lets the copy into to catch up with the topic's home before
// the hold, so that the hold waits only for what arrives while it holds,
// not for a backlog the copy had when the route changed (the copy runs
// behind by its fetch and produce round trips, more on a busy machine:
// the cutover benchmark's first flips at 20,000 records/s held 1 s, of
// which 1 s was copy). It reads the home's ends and waits until the copy
// has read past them, up to three times, and stops early once a round
// finds the copy keeping up. Nothing is held meanwhile; errors end the
// approach quietly, and the hold's own checks decide.
func (c *cutovers) approach(ctx context.Context, topic, from, to string) {
	if !c.copies.CopiesInto(topic, to) {
		return
	}
	c.setApproaching(topic, true)
	defer c.setApproaching(topic, false)
	start := time.Now()
	deadline := start.Add(approachBudget)
	for round := 0; round < 3; round++ {
		ends, err := c.ends.Ends(ctx, from, topic, false)
		if err != nil {
			return
		}
		roundStart := time.Now()
		for !c.copiedPast(topic, to, ends) {
			if time.Now().After(deadline) {
				c.log.Info("cutover holds before the copy caught up", "topic", topic, "approach", time.Since(start).Round(time.Millisecond))
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		if time.Since(roundStart) < 10*time.Millisecond {
			break // the copy keeps up: what is left is one round trip
		}
	}
	if d := time.Since(start); d >= 10*time.Millisecond {
		c.log.Info("cutover approached: the copy caught up before the hold", "topic", topic, "approach", d.Round(time.Millisecond))
	}
}

// copiedPast says whether the copy into to has read every partition of
// topic up to ends.
func (c *cutovers) copiedPast(topic, to string, ends map[int32]int64) bool {
	for p, e := range ends {
		if c.copies.CopiedThrough(topic, to, p) < e {
			return false
		}
	}
	return true
}

func (c *cutovers) setApproaching(topic string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[topic]; e != nil {
		e.approaching = on
	}
}

// holdFromNow starts the attempt's hold clock now, after the approach
// (which held nothing), so max_hold bounds the hold alone.
func (c *cutovers) holdFromNow(topic string) routing.Cutover {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[topic]
	e.cut = e.cut.HeldFrom(time.Now())
	return e.cut
}

// execution is what one attempt's actions pass on to later ones.
type execution struct {
	topic  string
	phases *phaseTimer
	err    error // why the attempt failed, for the final log line
	// unurge releases the copy's urgency (Urge), once the drain has every
	// record or the attempt ends; idempotent.
	unurge func()
}

// execute performs one action and returns the event it leads to (nil: none).
func (c *cutovers) execute(ctx context.Context, ex *execution, cut routing.Cutover, act routing.Action, policy routing.Policy) (routing.Event, error) {
	topic := ex.topic
	switch a := act.(type) {
	case routing.ActionHoldProduce:
		c.gate.HoldProduce(topic)
		return nil, nil
	case routing.ActionDrainInFlight:
		ends, err := c.drainInFlight(ctx, topic, string(a.From), ex.phases)
		if err != nil {
			return c.failure(ctx, ex, err), err
		}
		return routing.InFlightDrained{Ends: ends}, nil
	case routing.ActionWaitReplicated:
		if err := c.copyAndCommit(ctx, topic, string(a.From), string(a.To), a.Ends, ex); err != nil {
			return c.failure(ctx, ex, err), err
		}
		return routing.Replicated{}, nil
	case routing.ActionFlipRoute:
		to := string(a.To)
		c.mu.Lock()
		e := c.entries[topic]
		e.st.FlippedAt, e.st.Home = cut.FlippedAt, to
		c.producePins[topic] = to
		c.fetchPins[topic] = to
		if nf := string(c.table.Route(topic, routing.Fetch, "", "")); nf == to || (nf == string(cut.From) && policy.ReverseReplication) {
			delete(c.fetchPins, topic) // the copy back serves a fetch route left on From
		}
		c.publishLocked()
		c.mu.Unlock()
		c.flips.WithLabelValues(to).Inc()
		return nil, nil
	case routing.ActionReleaseHeld:
		// The router names a.To already: a flip's route changed just
		// before, an abort's never left From.
		c.gate.ReleaseProduce(topic)
		return nil, nil
	case routing.ActionStartReverseReplication:
		if err := c.copies.StartCopy(topic, string(a.Dst)); err != nil {
			c.log.Error("the copy back to the cluster the topic left did not start", "topic", topic, "to", string(a.Dst), "error", err)
		}
		return nil, nil
	case routing.ActionKeepRoute:
		c.mu.Lock()
		c.producePins[topic] = string(a.Cluster)
		c.fetchPins[topic] = string(a.Cluster)
		c.publishLocked()
		c.mu.Unlock()
		c.aborts.Inc()
		return nil, nil
	}
	err := fmt.Errorf("cutover controller cannot execute %v", act)
	c.log.Error("cutover action not executed", "topic", topic, "error", err)
	return routing.Failed{Reason: err.Error()}, err
}

// failure is the event of an action that failed with err: RouteReverted
// when a reload cancelled the attempt, Tick when max_hold passed (Step
// aborts on it), Failed otherwise.
func (c *cutovers) failure(ctx context.Context, ex *execution, err error) routing.Event {
	ex.err = err
	switch {
	case errors.Is(context.Cause(ctx), errRouteReverted):
		return routing.RouteReverted{}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return routing.Tick{}
	}
	return routing.Failed{Reason: err.Error()}
}

// finish records an ended attempt and, if a reload arrived meanwhile,
// compares the topic with the config again.
func (c *cutovers) finish(cut routing.Cutover, ex *execution) {
	topic := cut.Topic
	c.mu.Lock()
	e := c.entries[topic]
	e.running = false
	e.cancel(nil)
	e.st.Progress = ""
	c.holdHist.Observe(cut.HoldDuration.Seconds())
	c.history = append(c.history, CutoverEvent{Topic: topic, From: string(cut.From), To: string(cut.To), Outcome: cut.State.String(),
		Reason: cut.Reason, At: time.Now(), HoldMillis: cut.HoldDuration.Milliseconds()})
	if len(c.history) > cutoverHistory {
		c.history = slices.Delete(c.history, 0, len(c.history)-cutoverHistory)
	}
	if cut.State == routing.Aborted {
		c.log.Error("cutover aborted; held produce requests released to the "+string(cut.From), "topic", topic, "hold", cut.HoldDuration, "phases", ex.phases.String(), "reason", cut.Reason)
	} else {
		c.log.Info("cutover released held produce requests to the "+string(cut.To), "topic", topic, "hold", cut.HoldDuration, "phases", ex.phases.String())
	}
	var again *attempt
	if e.reconsider {
		e.reconsider = false
		again = c.considerLocked(topic)
		c.publishLocked()
	}
	c.mu.Unlock()
	if again != nil {
		c.log.Info("a reload arrived during the cutover; the topic follows the config again", "topic", topic, "from", string(again.cut.From), "to", string(again.cut.To))
		c.launch([]attempt{*again})
	}
}

// drainInFlight waits until no produce request and no transaction for the
// topic is in flight, then returns the home's end offsets: every
// acknowledged record lies below them.
func (c *cutovers) drainInFlight(ctx context.Context, topic, from string, phases *phaseTimer) (map[int32]int64, error) {
	ends, _, err := c.drainEnds(ctx, topic, from, phases)
	return ends, err
}

// drainEnds is drainInFlight, also returning the topic's partition count
// (with several instances the ends name only this instance's partitions).
func (c *cutovers) drainEnds(ctx context.Context, topic, from string, phases *phaseTimer) (map[int32]int64, int32, error) {
	if err := c.gate.WaitProduceIdle(ctx, topic); err != nil {
		return nil, 0, fmt.Errorf("waiting for in-flight produce requests: %w", err)
	}
	phases.mark("in-flight")
	// An open transaction on the topic finishes on the home first: its
	// marker must lie below the end offsets the drain waits for.
	if err := c.gate.WaitTxnIdle(ctx, topic); err != nil {
		return nil, 0, fmt.Errorf("waiting for open transactions on the topic: %w", err)
	}
	phases.mark("transactions")
	defer phases.mark("ends")
	// EndTxn answers once the coordinator decided; the transaction's
	// markers reach the partitions a moment later, and each moves the log
	// end. Wait until every partition's last stable offset is its end (no
	// marker pending), so the ends frozen here are final.
	fz, _ := c.ends.(endsFreezer)
	freezes := 0
	defer func() {
		// How the ends were frozen, for the hold's log line: one
		// freeze is one round trip; "separate" is the fallback.
		if fz == nil {
			phases.note("ends-separately")
		} else if freezes != 1 {
			phases.note(fmt.Sprintf("freezes=%d", freezes))
		}
	}()
	for {
		if fz != nil {
			// All of it in one round trip (freeze.go); the same checks
			// as the separate lookups below.
			freezes++
			fh, err := fz.Freeze(ctx, from, topic)
			if err == nil {
				total := int32(len(fh.ends))
				ends, stable, after := c.ownedOnly(topic, fh.ends), c.ownedOnly(topic, fh.stable), c.ownedOnly(topic, fh.after)
				if maps.Equal(ends, stable) {
					if !maps.Equal(after, ends) {
						continue // a record landed around the producers: freeze again
					}
					if err := c.gate.KeepOldHomeProducers(topic, from, fh.producers); err != nil {
						return nil, 0, err
					}
					c.gate.CapFetch(topic, from, ends)
					return ends, total, nil
				}
				if err := waitForMarkers(ctx, from); err != nil {
					return nil, 0, err
				}
				continue
			}
			if ctx.Err() != nil {
				return nil, 0, err
			}
			if !errors.Is(err, errNoFreeze) {
				c.log.Debug("the drain's one-round-trip freeze failed; looking the ends up one after the other", "topic", topic, "home", from, "error", err)
			}
			fz = nil
		}
		// Both lookups at once: the hold waits for the slower, not the
		// sum (each is a metadata and a ListOffsets round trip).
		var stable map[int32]int64
		var serr error
		listed := make(chan struct{})
		go func() {
			defer close(listed)
			stable, serr = c.ends.Ends(ctx, from, topic, true)
		}()
		ends, err := c.ends.Ends(ctx, from, topic, false)
		<-listed
		if err != nil {
			return nil, 0, err
		}
		if serr != nil {
			return nil, 0, serr
		}
		total := int32(len(ends))
		ends, stable = c.ownedOnly(topic, ends), c.ownedOnly(topic, stable)
		settled := true
		for p, e := range ends {
			if stable[p] != e {
				settled = false
			}
		}
		if settled {
			again, err := c.noteOldHomeProducers(ctx, topic, from, ends)
			if err != nil {
				return nil, 0, err
			}
			if again {
				continue
			}
			// A record landing on the home from now on (a dead
			// process's late write) lies past the flip point: no
			// consumer may read it there.
			c.gate.CapFetch(topic, from, ends)
			return ends, total, nil
		}
		if err := waitForMarkers(ctx, from); err != nil {
			return nil, 0, err
		}
	}
}

// waitForMarkers waits a moment before the ends are frozen again: a
// transaction's markers were still on their way (stable ends short of the
// ends) on the home from.
func waitForMarkers(ctx context.Context, from string) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for transaction markers on the %s: %w", from, ctx.Err())
	case <-time.After(5 * time.Millisecond):
		return nil
	}
}

// noteOldHomeProducers notes the producer state of the home at the ends
// just frozen, for batches resent across the flip (decision 008,
// proxy/ident_pid_resend.go): the producers, then the ends again. again
// says a record landed in between (the state may not match the ends: a
// request of a killed kproxy still on its way, since everything of this
// process is drained), so the ends must be frozen again. A cluster that
// cannot describe its producers (before Kafka 2.8, or an error) flips
// without a note, and resends across this flip are not checked.
func (c *cutovers) noteOldHomeProducers(ctx context.Context, topic, from string, ends map[int32]int64) (again bool, err error) {
	parts, perr := c.ends.Producers(ctx, from, topic)
	if perr == nil {
		now, err := c.ends.Ends(ctx, from, topic, false)
		if err != nil {
			return false, err
		}
		now = c.ownedOnly(topic, now)
		if !maps.Equal(now, ends) {
			return true, nil
		}
	} else {
		c.log.Warn("the producers on the topic's home could not be described; batches resent across this flip are not checked for duplicates", "topic", topic, "home", from, "error", perr)
		parts = nil
	}
	if err := c.gate.KeepOldHomeProducers(topic, from, parts); err != nil {
		return false, err
	}
	return false, nil
}

// copyAndCommit waits until the copy into to has every record below ends,
// seals the flip and makes it durable: the copy back's maps, then the
// marker, then the new home. On an error after the copy stopped it resumes
// the copy (unless kproxy is shutting down), so an aborted attempt leaves
// replication as it was.
func (c *cutovers) copyAndCommit(ctx context.Context, topic, from, to string, ends map[int32]int64, ex *execution) error {
	phases := ex.phases
	if err := c.copies.WaitCopied(ctx, topic, to, ends); err != nil {
		return err
	}
	ex.unurge()
	phases.mark("copy")
	pl, err := c.copies.SealFlip(ctx, topic, from, to, ends)
	if err == nil {
		phases.mark("seal")
		err = c.commit(pl)
		phases.mark("commit")
	}
	if err != nil && c.ctx.Err() == nil && !c.copies.CopiesInto(topic, to) {
		if rerr := c.copies.StartCopy(topic, to); rerr != nil {
			c.log.Error("replication not resumed after an aborted flip", "topic", topic, "error", rerr)
		}
	}
	return err
}

// commit makes the flip durable: the copy back's maps, then the marker.
func (c *cutovers) commit(pl *flipPlan) error {
	if err := c.copies.SaveCopyBack(pl); err != nil {
		return err
	}
	m := cutoverMarker{Topic: pl.topic, Home: pl.to, FlippedAt: time.Now(), Partitions: int32(len(pl.sealed))}
	if err := c.markers.Save(m); err != nil {
		return err
	}
	c.copies.AdoptFlip(pl)
	c.mu.Lock()
	c.flipped[pl.topic] = &m
	c.mu.Unlock()
	return nil
}

// wait blocks until no attempt runs (Close cancels them first).
func (c *cutovers) wait() { c.wg.Wait() }

// list is every topic's cutover, for /status.
func (c *cutovers) list() []CutoverStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CutoverStatus, 0, len(c.entries))
	for _, e := range c.entries {
		s := e.view()
		if e.cut.HoldsProduce() {
			s.Held = c.gate.HeldCount(s.Topic)
			s.HoldMillis = 0 // the approach holds nothing
			if !e.approaching {
				s.HoldMillis = time.Since(e.cut.HeldSince).Milliseconds()
			}
			s.Progress, s.DrainCopied, s.DrainPartitions = c.progressLocked(e)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// progressLocked describes a running cutover's drain, and counts the
// partitions copied to their frozen ends.
func (c *cutovers) progressLocked(e *cutoverEntry) (line string, copied, partitions int) {
	if e.approaching {
		return "produce not held yet: the copy is catching up with the home before the hold", 0, 0
	}
	if e.cut.State == routing.Holding {
		return "waiting for in-flight produce requests and open transactions", 0, 0
	}
	done, left := 0, int64(0)
	for p, end := range e.cut.FrozenEnds {
		copied := c.copies.CopiedThrough(e.st.Topic, string(e.cut.To), p)
		if copied >= end {
			done++
		} else {
			left += end - max(copied, 0)
		}
	}
	return fmt.Sprintf("%d of %d partitions copied to the frozen end, %d offsets to go", done, len(e.cut.FrozenEnds), left), done, len(e.cut.FrozenEnds)
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

// note adds a remark to the log line, between the phases.
func (p *phaseTimer) note(s string) { p.parts = append(p.parts, s) }

func (p *phaseTimer) String() string { return fmt.Sprint(p.parts) }
