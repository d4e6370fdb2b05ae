package control

// Replication in both directions. A replicated topic has a home: the cluster
// its producers write to (the source until its first cutover). One
// replicator copies the topics homed on the source to the target (the
// config's replicate patterns), a second one copies the topics homed on the
// target back to the source (replication.reverse_after_cutover), so the
// cluster a topic left stays complete and a rollback is the same flip in
// the other direction.
//
// Every cluster's offsets of a topic have virtual offsets: the home's are
// the virtual ones on the first home, and after a flip the new home's
// records continue them at a fixed distance (a sealed map, extended past
// the flip). The other cluster is read through the map its copy keeps.
// Maps for the target live in <replication state dir>, maps for the source
// in <replication state dir>.to-source.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/secure"
)

// replication runs both copies and gives the proxy its offset maps.
type replication struct {
	log    hclog.Logger
	ctx    context.Context // the instance's lifetime, not the start-up's
	cancel context.CancelFunc

	syncMu sync.Mutex // serializes sync

	mu      sync.Mutex // guards the fields below
	cfg     *config.Config
	err     string
	copies  map[string]*copier         // by the cluster copied to
	homes   map[string]*topicHome      // topics that have flipped at least once
	initial map[tpKey]*initialMap      // a copy's starting map until it publishes its own
	topics  map[string][]string        // resolved topics by the cluster copied to
	copied  map[string]map[string]bool // the same as sets, for Map (per fetched partition)
	regs    map[string]*prometheus.Registry
	// caughtUp: topics whose copy into the target has caught up with the
	// source at least once (sync.go sets them; a topic loses it when its
	// replication stops or its partitions grow).
	caughtUp map[string]bool
	// flipping: topics whose copy a cutover stopped to seal it, until the
	// flip is adopted or the copy resumes. The topic is then in no copy
	// and has no new home yet, and the source watcher must not take it
	// for a new topic and copy it again into the cluster it is flipping
	// to (a clean-clone run: the copy restarted mid-flip and wrote 12
	// records twice into the target).
	flipping map[string]bool

	// ready is what the router reads on every request, without rp.mu:
	// the topics whose fetches the target may serve (targetReady).
	ready atomic.Pointer[map[string]bool]
	// onReady is called (under mu) when ready changed: the router's
	// answers changed without a new router, and the proxy keys shared
	// Metadata answers by router (overlay.reinstall).
	onReady func()

	// owns, with several instances (config control:), says whether this
	// instance copies a partition: the one that leads it in the
	// membership view, so the map that translates a partition is where
	// the partition is served. nil: one instance copies everything.
	owns func(topic string, partition int32) bool
}

// copier is one direction's replicator.
type copier struct {
	to     string // cluster copied to
	r      *replicator.Replicator
	topics []string
}

// topicHome is where a flipped topic's producers write, with that cluster's
// sealed maps (by partition; nil means its offsets are the virtual ones).
type topicHome struct {
	cluster string
	maps    map[int32]*replicator.FlippedMap
}

type initialMap struct {
	to string
	m  *replicator.OffsetMap
}

type tpKey struct {
	topic     string
	partition int32
}

func newReplication(log hclog.Logger) *replication {
	ctx, cancel := context.WithCancel(context.Background())
	return &replication{ctx: ctx, cancel: cancel, log: log,
		copies: map[string]*copier{}, homes: map[string]*topicHome{}, initial: map[tpKey]*initialMap{},
		topics: map[string][]string{}, regs: map[string]*prometheus.Registry{}, caughtUp: map[string]bool{}}
}

// publishReadyLocked rebuilds the router's snapshot of the topics the
// target may serve: those at home there, and those whose copy into it has
// caught up once. Callers hold mu.
func (rp *replication) publishReadyLocked() {
	m := make(map[string]bool, len(rp.caughtUp)+len(rp.homes))
	for t := range rp.caughtUp {
		m[t] = true
	}
	for t, h := range rp.homes {
		if h.cluster == proxy.Target {
			m[t] = true
		}
	}
	old := rp.ready.Swap(&m)
	if rp.onReady != nil && (old == nil || !maps.Equal(*old, m)) {
		rp.onReady()
	}
}

// targetReady says whether the target may serve a replicated topic's
// fetches: it is the topic's home, or its copy there has caught up once.
// Until then the router sends them to the source (router.go), which has
// every record at the same offsets. Called per request: no lock.
func (rp *replication) targetReady(topic string) bool {
	if m := rp.ready.Load(); m != nil {
		return (*m)[topic]
	}
	return false
}

// other is the cluster that is not c.
func other(c string) string {
	if c == proxy.Source {
		return proxy.Target
	}
	return proxy.Source
}

// setConfig records the config before the first apply (loadHome needs the
// state directory).
func (rp *replication) setConfig(cfg *config.Config) {
	rp.mu.Lock()
	rp.cfg = cfg
	rp.mu.Unlock()
}

// ReplicationStateDir is where the maps of the copy into the target live.
func ReplicationStateDir(cfg *config.Config) string { return cfg.ReplicationStateDir() }

// mapDir is where the maps of the copy into cluster `to` live.
func mapDir(cfg *config.Config, to string) string {
	if to == proxy.Source {
		return ReplicationStateDir(cfg) + ".to-source"
	}
	return ReplicationStateDir(cfg)
}

// resolveTopics lists the source topics that match a replicate pattern.
func resolveTopics(ctx context.Context, cfg *config.Config) ([]string, error) {
	if len(cfg.Replicate) == 0 || cfg.Clusters.Source == nil || cfg.Clusters.Target == nil {
		return nil, nil // the end state: the source is gone, nothing to copy
	}
	cl, err := secure.Client(cfg, config.Source)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	listed, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing source topics for replicate: %w", err)
	}
	return matchReplicate(cfg, listed.Names()), nil
}

// internalTopic says whether name is one of the clusters' own topics:
// Kafka's __consumer_offsets, __transaction_state and __share_group_state,
// and the other "__" names brokers and their tools keep. They are never
// replicated, routed to a cutover or counted on their own, and the status
// page hides them unless asked. kproxy writes no topic of its own.
func internalTopic(name string) bool { return strings.HasPrefix(name, "__") }

// matchReplicate is the names (sorted) that a replicate pattern matches,
// never the clusters' internal topics.
func matchReplicate(cfg *config.Config, names []string) []string {
	var out []string
	for _, name := range names {
		if internalTopic(name) {
			continue
		}
		for _, p := range cfg.Replicate {
			if p == name || config.MatchGlob(p, name) {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// indexTopicsLocked rebuilds the topic sets from rp.topics. Callers hold mu.
func (rp *replication) indexTopicsLocked() {
	rp.copied = map[string]map[string]bool{}
	for to, ts := range rp.topics {
		set := make(map[string]bool, len(ts))
		for _, t := range ts {
			set[t] = true
		}
		rp.copied[to] = set
	}
}

// homeOf is a topic's home cluster. Callers hold mu.
func (rp *replication) homeOf(topic string) string {
	if h := rp.homes[topic]; h != nil {
		return h.cluster
	}
	return proxy.Source
}

// apply starts and stops copies for cfg: each resolved topic is copied from
// its home to the other cluster (into the source only with
// reverse_after_cutover).
func (rp *replication) apply(cfg *config.Config) error {
	rp.mu.Lock()
	rp.cfg = cfg
	rp.mu.Unlock()
	topics, err := resolveTopics(rp.ctx, cfg)
	if err != nil {
		rp.mu.Lock()
		rp.err = err.Error()
		rp.mu.Unlock()
		return err
	}
	rp.mu.Lock()
	rp.err = ""
	want := map[string][]string{}
	for _, t := range topics {
		if rp.flipping[t] {
			// Its copy was stopped and sealed by a flip not yet
			// committed or aborted (a reload during the hold): the
			// flip's end starts the right copy. Restarted here, it
			// would copy on past the sealed maps into the cluster the
			// topic may be flipping to.
			continue
		}
		to := other(rp.homeOf(t))
		if to == proxy.Source && !cfg.Replication.ReverseAfterCutover {
			continue
		}
		want[to] = append(want[to], t)
	}
	rp.topics = want
	rp.indexTopicsLocked()
	rp.mu.Unlock()
	var errs []error
	for _, to := range []string{proxy.Target, proxy.Source} {
		if err := rp.sync(cfg, to); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		rp.mu.Lock()
		rp.err = fmt.Sprint(errs)
		rp.mu.Unlock()
		return errs[0]
	}
	return nil
}

// sync makes the copy into `to` run exactly the given topics, adding and
// stopping topics without disturbing the others.
func (rp *replication) sync(cfg *config.Config, to string) error {
	// One sync at a time: a reload's apply and a flip's startCopy may run
	// together, and two of them finding no copier into `to` would each
	// start one, both writing every batch into the same partitions. The
	// topics are read once the turn comes, so the later sync applies the
	// latest list, whichever caller computed it.
	rp.syncMu.Lock()
	defer rp.syncMu.Unlock()
	rp.mu.Lock()
	topics := slices.Clone(rp.topics[to])
	c := rp.copies[to]
	rp.mu.Unlock()
	if c == nil && len(topics) == 0 {
		return nil
	}
	if c == nil {
		from := other(to)
		if cfg.Clusters.Get(config.Cluster(from)) == nil || cfg.Clusters.Get(config.Cluster(to)) == nil {
			return fmt.Errorf("copying %v into the %s needs both clusters in the config", topics, to)
		}
		reg := prometheus.NewRegistry()
		fromSec, err := secure.UpstreamFor(cfg.Clusters.Get(config.Cluster(from)))
		if err != nil {
			return fmt.Errorf("%s cluster: %w", from, err)
		}
		toSec, err := secure.UpstreamFor(cfg.Clusters.Get(config.Cluster(to)))
		if err != nil {
			return fmt.Errorf("%s cluster: %w", to, err)
		}
		opts := replicator.Options{
			SourceBrokers:     cfg.Clusters.Get(config.Cluster(from)).Bootstrap,
			TargetBrokers:     cfg.Clusters.Get(config.Cluster(to)).Bootstrap,
			SourceOpts:        fromSec.KgoOpts(),
			TargetOpts:        toSec.KgoOpts(),
			StateDir:          mapDir(cfg, to),
			Logger:            rp.log.With("from", from, "to", to),
			Registerer:        prometheus.WrapRegistererWith(prometheus.Labels{"to": to}, reg),
			FetchMaxBytes:     cfg.Replication.FetchMaxBytes,
			PartitionMaxBytes: cfg.Replication.PartitionMaxBytes,
			// A cutover waits for the copy to reach the frozen end of
			// the home, and a fetch that starts during a long poll waits
			// it out: short polls keep holds short. Fetches are one
			// request per source broker (replicator/fetcher.go), so an
			// idle copy costs 40 requests/s per broker, whatever the
			// number of partitions.
			FetchMaxWait:   25 * time.Millisecond,
			ProduceTimeout: cfg.Replication.ProduceTimeout,
		}
		if rp.owns != nil {
			// Several instances: each partition is copied where it is led,
			// by a transactional producer the broker fences when another
			// instance takes the partition over (replicator/txncopy.go).
			opts.Owns = rp.owns
			opts.TransactionalIDPrefix = copyTransactionalPrefix(cfg)
		}
		r, err := replicator.New(opts)
		if err != nil {
			return err
		}
		if err := r.Start(rp.ctx); err != nil {
			return err
		}
		c = &copier{to: to, r: r}
		rp.mu.Lock()
		rp.copies[to], rp.regs[to] = c, reg
		rp.mu.Unlock()
	}
	rp.mu.Lock()
	have := slices.Clone(c.topics)
	rp.mu.Unlock()
	for _, t := range have {
		if !slices.Contains(topics, t) {
			c.r.StopTopic(t)
			rp.log.Info("replication of a topic stopped", "topic", t, "to", to)
			if to == proxy.Target {
				rp.mu.Lock()
				delete(rp.caughtUp, t)
				rp.publishReadyLocked()
				rp.mu.Unlock()
			}
		}
	}
	var add []string
	for _, t := range topics {
		if !slices.Contains(have, t) {
			add = append(add, t)
		}
	}
	if err := startTopics(add, topicBatch, func(batch []string) error {
		if err := c.r.AddTopics(rp.ctx, batch); err != nil {
			return err
		}
		for _, t := range batch {
			rp.log.Info("replication of a topic started", "topic", t, "from", other(to), "to", to, "state_dir", mapDir(cfg, to))
		}
		return nil
	}); err != nil {
		return err
	}
	rp.mu.Lock()
	c.topics = slices.Clone(topics)
	rp.mu.Unlock()
	return nil
}

// Topics start copying in batches of topicBatch, topicStarts batches at
// once. A topic's set-up is a few round trips (its metadata on both
// clusters, the source's configs, the target topic created and waited
// for): one topic after another that was 560 s for 1,000 topics. A batch
// makes each of those round trips once for all its topics
// (replicator.AddTopics), and the brokers serve a few batches in parallel.
const (
	topicBatch  = 100
	topicStarts = 4
)

// copyTransactionalPrefix starts the transactional id of every partition's
// copy with several instances: kproxy-<cluster_id>-copy-<topic>-<p>
// (docs/ha.md). Every instance must build it alike, and it must never
// change: a new owner fences the old one only through the same id.
func copyTransactionalPrefix(cfg *config.Config) string {
	return "kproxy-" + cfg.ClusterID + "-copy-"
}

// reassign applies a new membership view to the copies: each copies the
// partitions this instance now leads (replicator.Reassign).
func (rp *replication) reassign() {
	rp.syncMu.Lock() // no copier starts or stops meanwhile
	defer rp.syncMu.Unlock()
	rp.mu.Lock()
	var cs []*copier
	for _, c := range rp.copies {
		cs = append(cs, c)
	}
	rp.mu.Unlock()
	for _, c := range cs {
		c.r.Reassign()
	}
}

// startTopics runs start for topics in batches of at most batch,
// topicStarts batches at a time, and returns the first error (the other
// batches still run to their end).
func startTopics(topics []string, batch int, start func([]string) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, topicStarts)
	for len(topics) > 0 {
		b := topics[:min(batch, len(topics))]
		topics = topics[len(b):]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := start(b); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func (rp *replication) stop() {
	rp.mu.Lock()
	copies := rp.copies
	rp.copies = map[string]*copier{}
	rp.mu.Unlock()
	for _, c := range copies {
		c.r.Stop()
	}
	rp.cancel()
}

// copyInto returns the replicator copying into cluster `to`, or nil.
func (rp *replication) copyInto(to string) *replicator.Replicator {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if c := rp.copies[to]; c != nil {
		return c.r
	}
	return nil
}

// resolvedTopics lists every topic a copy runs for (either direction).
func (rp *replication) resolvedTopics() []string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var out []string
	for _, ts := range rp.topics {
		out = append(out, ts...)
	}
	return out
}

// home returns a topic's home cluster.
func (rp *replication) home(topic string) string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.homeOf(topic)
}

// copiesInto says whether the topic is (to be) copied into cluster `to`.
func (rp *replication) copiesInto(topic, to string) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.copied[to][topic]
}

// loadHome restores a flipped topic's home at start-up from its maps on
// disk (the marker in state_dir/cutover says which cluster).
func (rp *replication) loadHome(topic, cluster string, partitions int32) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	h := &topicHome{cluster: cluster, maps: map[int32]*replicator.FlippedMap{}}
	for p := int32(0); p < partitions; p++ {
		m, err := replicator.LoadFlipped(mapDir(rp.cfg, cluster), topic, p)
		if err != nil && rp.owns != nil {
			// Several instances: this instance sealed only the
			// partitions it copied at the flip (coordflip.go).
			continue
		}
		if err != nil {
			return fmt.Errorf("restoring %s/%d on the %s: %w", topic, p, cluster, err)
		}
		h.maps[p] = m
	}
	rp.homes[topic] = h
	rp.publishReadyLocked()
	return nil
}

// stopCopy stops copying a topic out of its home (its cutover is
// flipping it) and returns the copy's final maps by partition.
func (rp *replication) stopCopy(topic, to string) (map[int32]*replicator.OffsetMap, error) {
	r := rp.copyInto(to)
	if r == nil {
		return nil, fmt.Errorf("the topic is not being copied to the %s", to)
	}
	maps, serr := r.SealTopic(topic)
	rp.mu.Lock()
	if c := rp.copies[to]; c != nil {
		c.topics = slices.DeleteFunc(c.topics, func(t string) bool { return t == topic })
	}
	rp.topics[to] = slices.DeleteFunc(slices.Clone(rp.topics[to]), func(t string) bool { return t == topic })
	rp.indexTopicsLocked()
	if rp.flipping == nil {
		rp.flipping = map[string]bool{}
	}
	rp.flipping[topic] = true
	rp.mu.Unlock()
	return maps, serr
}

// flipPlan is a flip's new home maps and the maps the copy back starts from.
type flipPlan struct {
	topic    string
	from, to string
	sealed   map[int32]*replicator.FlippedMap // the new home's view
	back     map[int32]*replicator.OffsetMap  // the copy from `to` back into `from`
	// fromEnds is from's log end per partition at the flip (the copy
	// back's starting point): with sealed, what another instance needs
	// to build the same plan (flipPoint).
	fromEnds map[int32]int64
}

// planFlip seals the stopped copy's maps (the new home's view) and builds
// the maps a copy back into `from` starts from, given `from`'s log ends.
// Every one must end where the new home's map does: the two clusters then
// agree on every virtual offset.
func (rp *replication) planFlip(topic, from, to string, final map[int32]*replicator.OffsetMap, fromEnds map[int32]int64) (*flipPlan, error) {
	rp.mu.Lock()
	left := rp.homes[topic]
	rp.mu.Unlock()
	pl := &flipPlan{topic: topic, from: from, to: to, sealed: map[int32]*replicator.FlippedMap{}, back: map[int32]*replicator.OffsetMap{}, fromEnds: map[int32]int64{}}
	for p, end := range fromEnds {
		m := final[p]
		if m == nil {
			return nil, fmt.Errorf("partition %d has no offset map on the %s", p, to)
		}
		var leftMap *replicator.FlippedMap
		if left != nil {
			leftMap = left.maps[p]
		}
		if err := pl.addPartition(p, replicator.Flipped(m), leftMap, end); err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// addPartition adds a partition's sealed map and the copy back's map,
// which continues left (the map of `from` when the topic last left it;
// nil: `from` was its first home) up to from's log end.
func (pl *flipPlan) addPartition(p int32, f *replicator.FlippedMap, left *replicator.FlippedMap, end int64) error {
	pl.sealed[p] = f
	pl.fromEnds[p] = end
	v, t := f.FlipPoint()
	meta := f.Meta()
	backMeta := replicator.MapMeta{Topic: pl.topic, Partition: p,
		SourceTopicID: meta.TargetTopicID, TargetTopicID: meta.SourceTopicID, SourceShift: v - t}
	back, err := replicator.ContinueMap(backMeta, left, end)
	if err != nil {
		return err
	}
	if back.SourceEnd() != v {
		return fmt.Errorf("partition %d: the %s ends at virtual offset %d but the %s's copy at %d: a record reached one cluster the other does not have", p, pl.from, back.SourceEnd(), pl.to, v)
	}
	pl.back[p] = back
	return nil
}

// planPoints builds a coordinated flip's plan for every partition from
// the points its members published in the control topic (coordflip.go),
// so that each instance holds the maps of partitions others sealed: the
// partition may be led here later, or this instance restarts on the new
// home. left is the map of `from` per partition when the topic last left
// it; nil takes this instance's own (complete when it followed every
// flip).
func (rp *replication) planPoints(topic, from, to string, points map[int32]flipPoint, left map[int32]*replicator.FlippedMap) (*flipPlan, error) {
	if left == nil {
		rp.mu.Lock()
		if h := rp.homes[topic]; h != nil && h.cluster == from {
			left = h.maps
		}
		rp.mu.Unlock()
	}
	pl := &flipPlan{topic: topic, from: from, to: to, sealed: map[int32]*replicator.FlippedMap{}, back: map[int32]*replicator.OffsetMap{}, fromEnds: map[int32]int64{}}
	for p, pt := range points {
		f, err := pt.sealed()
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", p, err)
		}
		if err := pl.addPartition(p, f, left[p], pt.FromEnd); err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// saveFlip persists a plan's maps, the new home's and the copy back's,
// except those of partitions in skip (this instance sealed them and
// saved them already): where a restart (loadHome) and a later copy of
// the partition here (the replicator's map files) find them.
func (rp *replication) saveFlip(pl *flipPlan, skip map[int32]bool) error {
	rp.mu.Lock()
	toDir, fromDir := mapDir(rp.cfg, pl.to), mapDir(rp.cfg, pl.from)
	rp.mu.Unlock()
	errs := make(chan error, 2*len(pl.sealed))
	n := 0
	for p, f := range pl.sealed {
		if skip[p] {
			continue
		}
		back := pl.back[p]
		n += 2
		go func() { errs <- replicator.SaveFlipped(toDir, f) }()
		go func() { errs <- replicator.SaveMap(fromDir, back) }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// saveCopyBack persists the maps the copy back starts from. The caller
// writes the flip marker after it and then calls adoptFlip: a crash in
// between leaves maps that agree with the old home (they extend its view).
func (rp *replication) saveCopyBack(pl *flipPlan) error {
	rp.mu.Lock()
	dir := mapDir(rp.cfg, pl.from)
	rp.mu.Unlock()
	// One file per partition, written at once: the hold waits for the
	// slowest fsync, not their sum (and a filesystem journal commits
	// concurrent fsyncs together).
	errs := make(chan error, len(pl.back))
	for _, m := range pl.back {
		go func() { errs <- replicator.SaveMap(dir, m) }()
	}
	var first error
	for range pl.back {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// adoptFlip makes a committed flip's cluster the topic's home.
func (rp *replication) adoptFlip(pl *flipPlan) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.homes[pl.topic] = &topicHome{cluster: pl.to, maps: pl.sealed}
	delete(rp.flipping, pl.topic)
	for p, m := range pl.back {
		rp.initial[tpKey{pl.topic, p}] = &initialMap{to: pl.from, m: m}
	}
	rp.publishReadyLocked()
}

// addTopics starts copying topics found on the source after the config
// was applied (sync.go's watcher): they are homed on the source, so they
// are copied into the target. It returns those it did not know yet.
func (rp *replication) addTopics(cfg *config.Config, topics []string) ([]string, error) {
	rp.mu.Lock()
	var added []string
	for _, t := range topics {
		if rp.copied[proxy.Target][t] || rp.copied[proxy.Source][t] || rp.homes[t] != nil || rp.flipping[t] {
			continue
		}
		added = append(added, t)
		rp.topics[proxy.Target] = append(slices.Clone(rp.topics[proxy.Target]), t)
	}
	rp.indexTopicsLocked()
	rp.mu.Unlock()
	if len(added) == 0 {
		return nil, nil
	}
	return added, rp.sync(cfg, proxy.Target)
}

// knows says whether the replication has a topic in either direction, as
// a flipped home, or in a flip between the two.
func (rp *replication) knows(topic string) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.copied[proxy.Target][topic] || rp.copied[proxy.Source][topic] || rp.homes[topic] != nil || rp.flipping[topic]
}

// targetTopics lists the topics copied into the target.
func (rp *replication) targetTopics() []string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return slices.Clone(rp.topics[proxy.Target])
}

// setCaughtUp records whether a topic's copy into the target has caught
// up (sync.go); it reports whether that changed.
func (rp *replication) setCaughtUp(topic string, ok bool) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.caughtUp[topic] == ok {
		return false
	}
	if ok {
		rp.caughtUp[topic] = true
	} else {
		delete(rp.caughtUp, topic)
	}
	rp.publishReadyLocked()
	return true
}

// notReady lists the topics copied into the target whose fetches the
// target does not serve yet (their copy has not caught up once).
func (rp *replication) notReady() []string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var out []string
	for _, t := range rp.topics[proxy.Target] {
		if !rp.caughtUp[t] && (rp.homes[t] == nil || rp.homes[t].cluster != proxy.Target) {
			out = append(out, t)
		}
	}
	return out
}

// startCopy starts copying a topic into `to` (after a flip: back into the
// cluster it left; after an aborted flip: again into the one it did not
// reach).
func (rp *replication) startCopy(topic, to string) error {
	rp.mu.Lock()
	cfg := rp.cfg
	if !rp.copied[to][topic] {
		rp.topics[to] = append(slices.Clone(rp.topics[to]), topic)
		rp.indexTopicsLocked()
	}
	delete(rp.flipping, topic)
	rp.mu.Unlock()
	return rp.sync(cfg, to)
}

// Map implements proxy.OffsetMaps: how a partition's offsets on cluster
// translate to virtual ones.
func (rp *replication) Map(cluster, topic string, partition int32) (proxy.OffsetMap, bool) {
	rp.mu.Lock()
	home := rp.homeOf(topic)
	h := rp.homes[topic]
	init := rp.initial[tpKey{topic, partition}]
	copied := rp.copied[cluster][topic]
	c := rp.copies[cluster]
	rp.mu.Unlock()
	if cluster == home {
		if h != nil && h.maps[partition] == nil && rp.owns != nil {
			// Several instances: a coordinated flip sealed only the
			// partitions this instance copied; another's partition has
			// no map here, and its offsets are not the virtual ones.
			return nil, true
		}
		if h == nil || h.maps[partition] == nil {
			return nil, false // the first home: its offsets are virtual
		}
		return h.maps[partition], true
	}
	if c != nil {
		if m := c.r.Map(topic, partition); m != nil {
			return m, true
		}
	}
	if init != nil && init.to == cluster {
		return init.m, true
	}
	if !copied && h == nil && cluster == proxy.Target {
		return nil, false // not replicated: the target's own offsets
	}
	return nil, true // replicated, map not ready
}

// Gather implements prometheus.Gatherer over both copies' registries.
func (rp *replication) Gather() ([]*dto.MetricFamily, error) {
	rp.mu.Lock()
	var gs prometheus.Gatherers
	for _, reg := range rp.regs {
		gs = append(gs, reg)
	}
	rp.mu.Unlock()
	return gs.Gather()
}

// ReplicationStatus is the /status section on replication.
type ReplicationStatus struct {
	Topics     []string                     `json:"topics"`
	Error      string                       `json:"error,omitempty"`
	Partitions []replicator.PartitionStatus `json:"partitions"`
	// ToSource is the copy back of flipped topics (offsets virtual).
	ToSourceTopics []string                     `json:"to_source_topics,omitempty"`
	ToSource       []replicator.PartitionStatus `json:"to_source,omitempty"`
	// NotReady are copied topics whose copy has not caught up with the
	// source yet: their fetches are served from the source whatever the
	// route says, until it has.
	NotReady []string `json:"not_ready,omitempty"`
}

func (rp *replication) status() ReplicationStatus {
	rp.mu.Lock()
	st := ReplicationStatus{Topics: rp.topics[proxy.Target], ToSourceTopics: rp.topics[proxy.Source], Error: rp.err}
	rp.mu.Unlock()
	st.NotReady = rp.notReady()
	if r := rp.copyInto(proxy.Target); r != nil {
		st.Partitions = r.Status()
	}
	if r := rp.copyInto(proxy.Source); r != nil {
		st.ToSource = r.Status()
	}
	return st
}
