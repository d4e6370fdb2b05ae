package control

// The source watcher: replicate globs, partitions and the metadata around
// replicated topics followed while kproxy runs, not only at start and on a
// reload. Every replication.watch_interval it reads the source's topic
// list once and
//   - starts copying topics created since that match a replicate pattern
//     (and retries topics whose copy could not start), then lets the
//     cutover controller consider them like a reload would;
//   - starts copying partitions added to a replicated topic, after adding
//     them to the target copy first (replication.sync.partitions);
//   - every replication.sync.interval (12 passes by default), applies the
//     source's topic config changes to the target copy
//     (replication.sync.topic_configs, with the allow/deny keys) and
//     creates on the target the ACLs the source has for replicated topics
//     and for groups (replication.sync.acls; never deletes one).
// Between those passes, every readyEvery, it marks the topics whose copy
// has caught up: the router serves their fetches from the target from
// then on (router.go).
//
// Everything it changes is logged and counted (kproxy_sync_*_total). What
// it cannot fix stays a plan gate (partitions, topic_configs, acls).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
)

// readyEvery is how often copies are checked for their first catch-up.
const readyEvery = 500 * time.Millisecond

// syncMetrics are the watcher's counters, exported from 0.
type syncMetrics struct {
	topics     prometheus.Counter     // topics found after the config was applied
	configs    *prometheus.CounterVec // topic config keys, by result
	partitions *prometheus.CounterVec // partitions added to target topics, by result
	acls       *prometheus.CounterVec // ACLs created on the target, by result
}

func newSyncMetrics(reg prometheus.Registerer) *syncMetrics {
	m := &syncMetrics{
		topics:     prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_sync_topics_discovered_total", Help: "Source topics matching a replicate pattern found after start or reload, whose copy the source watcher started."}),
		configs:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_sync_topic_configs_total", Help: "Topic config keys the source watcher set on a target copy to the source's value, by result (applied, failed)."}, []string{"result"}),
		partitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_sync_partitions_total", Help: "Partitions the source watcher added to a target copy to follow the source, by result (created, failed)."}, []string{"result"}),
		acls:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_sync_acls_total", Help: "ACLs the source watcher created on the target to match the source, by result (created, failed)."}, []string{"result"}),
	}
	for _, r := range []string{"applied", "failed"} {
		m.configs.WithLabelValues(r)
	}
	for _, r := range []string{"created", "failed"} {
		m.partitions.WithLabelValues(r)
		m.acls.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.topics, m.configs, m.partitions, m.acls)
	}
	return m
}

// sourceWatch is the watcher's state between passes.
type sourceWatch struct {
	log     hclog.Logger
	metrics *syncMetrics

	mu sync.Mutex // guards the fields below (one pass at a time, but tests read them)
	// failed remembers failures already logged and counted, so a failure
	// that repeats every pass is reported once: key -> what failed.
	failed map[string]string
	// noACLs: a cluster answered SECURITY_DISABLED (logged once).
	noACLs bool
	// seen: each replicated topic's source config values at the last
	// pass, to tell a source change from a target edit (configChanges).
	seen map[string]map[string]string
	// retried: when each failed topic was last tried again.
	retried map[string]time.Time
	// synced: when topic configs and ACLs were last compared
	// (replication.sync.interval).
	synced time.Time
}

// noteFailure reports whether a failure is new (and records it).
func (w *sourceWatch) noteFailure(key, what string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed[key] == what {
		return false
	}
	w.failed[key] = what
	return true
}

// syncDue says whether topic configs and ACLs are compared in this pass
// (every interval), and if so notes the pass.
func (w *sourceWatch) syncDue(interval time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.synced) < interval {
		return false
	}
	w.synced = time.Now()
	return true
}

// lastSync is when topic configs and ACLs were last compared (zero: never).
func (w *sourceWatch) lastSync() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced
}

func (w *sourceWatch) clearFailure(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.failed, key)
}

// startWatch starts the watcher; Close stops it before replication.
func (c *Controller) startWatch() {
	c.watchWG.Add(1)
	go func() {
		defer c.watchWG.Done()
		t := time.NewTicker(readyEvery)
		defer t.Stop()
		var last time.Time
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
			c.refreshReady()
			cfg := c.appliedConfig()
			if cfg == nil || time.Since(last) < cfg.Replication.WatchInterval {
				continue
			}
			last = time.Now()
			ctx, cancel := context.WithTimeout(c.ctx, max(cfg.Replication.WatchInterval, 10*time.Second))
			c.watchOnce(ctx, cfg)
			cancel()
		}
	}()
}

// appliedConfig is the config last applied (nil before Start).
func (c *Controller) appliedConfig() *config.Config {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	return c.cfg
}

// refreshReady marks copies into the target that have caught up.
func (c *Controller) refreshReady() {
	r := c.repl.copyInto(proxy.Target)
	if r == nil {
		return
	}
	for _, t := range c.repl.notReady() {
		if r.CaughtUp(t) && c.repl.setCaughtUp(t, true) {
			c.log.Info("the copy of a topic caught up with the source; fetches routed to the target are served there now", "topic", t)
		}
	}
}

// watchOnce is one pass over the source's metadata.
func (c *Controller) watchOnce(ctx context.Context, cfg *config.Config) {
	if len(cfg.Replicate) == 0 || cfg.Clusters.Source == nil || cfg.Clusters.Target == nil {
		return
	}
	src, err := c.admins.get(cfg, proxy.Source)
	if err != nil {
		return
	}
	listed, err := src.ListTopics(ctx)
	if err != nil {
		if c.watch.noteFailure("list", err.Error()) {
			c.log.Warn("source watcher: could not list the source's topics; trying again next interval", "error", err)
		}
		return
	}
	c.watch.clearFailure("list")
	c.followTopics(ctx, cfg, listed)
	r := c.repl.copyInto(proxy.Target)
	if r == nil {
		return
	}
	topics := c.repl.targetTopics()
	c.followPartitions(ctx, cfg, listed, topics)
	// Configs and ACLs are described topic by topic on both clusters: the
	// one part of a pass that costs in proportion to the replicated
	// topics, so it runs every sync.interval, not every pass.
	if !c.watch.syncDue(cfg.Replication.Sync.Interval) {
		return
	}
	if cfg.Replication.Sync.TopicConfigs {
		c.syncTopicConfigs(ctx, cfg, topics)
	}
	if cfg.Replication.Sync.ACLs {
		c.syncACLs(ctx, cfg, topics)
	}
}

// followTopics starts copying the source topics that match replicate but
// are not copied yet, and retries topics whose copy could not start.
func (c *Controller) followTopics(ctx context.Context, cfg *config.Config, listed kadm.TopicDetails) {
	var fresh []string
	for _, t := range matchReplicate(cfg, listed.Names()) {
		if !c.repl.knows(t) {
			fresh = append(fresh, t)
		}
	}
	if len(fresh) > 0 {
		c.applyMu.Lock()
		if c.cfg == cfg { // else a reload applied a newer config: it resolved the topics itself
			added, err := c.repl.addTopics(cfg, fresh)
			for _, t := range added {
				c.watch.metrics.topics.Inc()
				c.log.Info("source watcher: a new source topic matches replicate; its copy starts", "topic", t)
			}
			if err != nil {
				c.log.Error("source watcher: starting the copy of new topics failed", "topics", fmt.Sprint(fresh), "error", err)
			}
			// Like a reload: a route that asks for a move gets a cutover.
			c.cuts.apply(cfg, c.table, c.table, added)
		}
		c.applyMu.Unlock()
	}
	r := c.repl.copyInto(proxy.Target)
	if r == nil {
		return
	}
	for _, t := range c.repl.targetTopics() {
		if r.TopicErr(t) == nil || !c.watch.retryDue(t) {
			continue
		}
		_ = r.AddTopic(ctx, t) // logs and records the error again if it persists
	}
}

// topicRetryEvery is how often a topic whose copy could not start (a
// target topic with another partition count, say) is tried again.
const topicRetryEvery = 30 * time.Second

// retryDue says whether a failed topic may be tried again now.
func (w *sourceWatch) retryDue(topic string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.retried[topic]) < topicRetryEvery {
		return false
	}
	w.retried[topic] = time.Now()
	return true
}

// followPartitions starts copying partitions added to replicated topics,
// adding them to the target first when sync.partitions is on.
func (c *Controller) followPartitions(ctx context.Context, cfg *config.Config, listed kadm.TopicDetails, topics []string) {
	r := c.repl.copyInto(proxy.Target)
	counts := r.PartitionCounts()
	for _, t := range topics {
		d, ok := listed[t]
		if !ok || d.Err != nil {
			continue
		}
		n := int32(len(d.Partitions))
		have := counts[t]
		if have == 0 || n <= have {
			continue
		}
		key := "partitions/" + t
		if cfg.Replication.Sync.Partitions {
			if err := c.growTarget(ctx, cfg, t, n); err != nil {
				if c.watch.noteFailure(key, err.Error()) {
					c.watch.metrics.partitions.WithLabelValues("failed").Inc()
					c.log.Error("source watcher: could not add the source's new partitions to the target topic; they are not copied", "topic", t, "partitions", n, "error", err)
				}
				continue
			}
		}
		if err := r.AddPartitions(ctx, t, n); err != nil {
			if c.watch.noteFailure(key, err.Error()) {
				c.log.Warn("source watcher: the source topic has new partitions that are not copied", "topic", t, "source_partitions", n, "copied_partitions", have, "reason", err)
			}
			continue
		}
		c.watch.clearFailure(key)
		// The new partitions have not caught up: fetches go to the source
		// again until they have (they would find no map on the target).
		c.repl.setCaughtUp(t, false)
	}
}

// growTarget gives the target topic n partitions if it has fewer.
func (c *Controller) growTarget(ctx context.Context, cfg *config.Config, topic string, n int32) error {
	tgt, err := c.admins.get(cfg, proxy.Target)
	if err != nil {
		return err
	}
	td, err := tgt.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	d := td[topic]
	if d.Err != nil {
		return d.Err
	}
	have := int32(len(d.Partitions))
	if have >= n {
		return nil
	}
	resp, err := tgt.UpdatePartitions(ctx, int(n), topic)
	if err == nil {
		if rr, ok := resp[topic]; ok && rr.Err != nil {
			err = fmt.Errorf("%w: %s", rr.Err, rr.ErrMessage)
		}
	}
	if err != nil {
		return fmt.Errorf("CreatePartitions on the target: %w", err)
	}
	c.watch.metrics.partitions.WithLabelValues("created").Add(float64(n - have))
	c.log.Info("source watcher: partitions added to the target topic to follow the source", "topic", topic, "from", have, "to", n)
	// Metadata lags creation for a moment: the copy checks the count.
	for i := 0; i < 50; i++ {
		td, err := tgt.ListTopics(ctx, topic)
		if err == nil && td[topic].Err == nil && int32(len(td[topic].Partitions)) >= n {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// configChanges are the IncrementalAlterConfigs set operations that carry
// the source topic's config changes to the target copy, for the keys sync
// allows. seen is the source's values at the last pass (nil the first time
// the topic is seen, after start or once its copy exists):
//   - a key whose source value changed since the last pass is set on the
//     target to the source's value;
//   - the first time, a key set on the source topic that the target topic
//     does not set is filled in (what the copy's creation did not carry);
//     a key both topics set differently is left alone: someone chose the
//     target's value, and the topic_configs gate shows the difference.
//
// A difference between the two brokers' defaults is not the topic's and
// is never synced. A target edit the source does not change afterwards is
// kept.
func configChanges(sync config.Sync, src, tgt kadm.ResourceConfig, seen map[string]string) []kadm.AlterConfig {
	tv := map[string]kadm.Config{}
	for _, kv := range tgt.Configs {
		tv[kv.Key] = kv
	}
	var out []kadm.AlterConfig
	for _, s := range src.Configs {
		t, ok := tv[s.Key]
		if !ok || s.Sensitive || t.Sensitive || s.Value == nil || !sync.SyncsConfigKey(s.Key) {
			continue // unknown to the target's version, secret, or not synced
		}
		sv := s.MaybeValue()
		if sv == t.MaybeValue() {
			continue
		}
		srcSet, tgtSet := s.Source == kmsg.ConfigSourceDynamicTopicConfig, t.Source == kmsg.ConfigSourceDynamicTopicConfig
		if !srcSet && !tgtSet {
			continue
		}
		if seen == nil {
			if !srcSet || tgtSet {
				continue
			}
		} else if prev, ok := seen[s.Key]; ok && prev == sv {
			continue
		}
		out = append(out, kadm.AlterConfig{Op: kadm.SetConfig, Name: s.Key, Value: kadm.StringPtr(sv)})
	}
	slices.SortFunc(out, func(a, b kadm.AlterConfig) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// sourceValues are a topic's config values by key.
func sourceValues(rc kadm.ResourceConfig) map[string]string {
	out := make(map[string]string, len(rc.Configs))
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

// syncTopicConfigs applies the source's topic config changes to the copies.
func (c *Controller) syncTopicConfigs(ctx context.Context, cfg *config.Config, topics []string) {
	counts := c.repl.copyInto(proxy.Target).PartitionCounts()
	var live []string
	for _, t := range topics {
		if counts[t] > 0 { // the target topic exists
			live = append(live, t)
		}
	}
	if len(live) == 0 {
		return
	}
	src, err := c.admins.get(cfg, proxy.Source)
	if err != nil {
		return
	}
	tgt, err := c.admins.get(cfg, proxy.Target)
	if err != nil {
		return
	}
	sc, err := src.DescribeTopicConfigs(ctx, live...)
	if err != nil {
		return
	}
	tc, err := tgt.DescribeTopicConfigs(ctx, live...)
	if err != nil {
		return
	}
	for _, t := range live {
		s, err1 := sc.On(t, nil)
		d, err2 := tc.On(t, nil)
		if err1 != nil || err2 != nil || s.Err != nil || d.Err != nil {
			continue
		}
		prev := map[string]string{}
		for _, kv := range d.Configs {
			prev[kv.Key] = kv.MaybeValue()
		}
		c.watch.mu.Lock()
		seen := c.watch.seen[t]
		c.watch.mu.Unlock()
		changes := configChanges(cfg.Replication.Sync, s, d, seen)
		observed := func() {
			c.watch.mu.Lock()
			c.watch.seen[t] = sourceValues(s)
			c.watch.mu.Unlock()
		}
		if len(changes) == 0 {
			observed()
			continue
		}
		key := "configs/" + t
		what := fmt.Sprint(changes)
		resp, err := tgt.AlterTopicConfigs(ctx, changes, t)
		if err == nil {
			if rr, e := resp.On(t, nil); e == nil && rr.Err != nil {
				err = fmt.Errorf("%w: %s", rr.Err, rr.ErrMessage)
			}
		}
		if err != nil {
			if c.watch.noteFailure(key, what) {
				c.watch.metrics.configs.WithLabelValues("failed").Add(float64(len(changes)))
				c.log.Error("source watcher: could not apply the source's topic configs to the target copy", "topic", t, "keys", configKeys(changes), "error", err)
			}
			continue
		}
		c.watch.clearFailure(key)
		observed() // only once applied: a failed change is tried again
		c.watch.metrics.configs.WithLabelValues("applied").Add(float64(len(changes)))
		for _, ch := range changes {
			c.log.Info("source watcher: topic config synced to the target copy", "topic", t, "key", ch.Name, "value", *ch.Value, "target_was", prev[ch.Name])
		}
	}
}

func configKeys(cs []kadm.AlterConfig) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// syncACLs creates on the target the source's ACLs that cover replicated
// topics, and the source's group ACLs (every group's consumers come
// through kproxy and may move to the target). It never deletes one.
func (c *Controller) syncACLs(ctx context.Context, cfg *config.Config, topics []string) {
	src, err := c.admins.client(cfg, proxy.Source)
	if err != nil {
		return
	}
	tgt, err := c.admins.client(cfg, proxy.Target)
	if err != nil {
		return
	}
	var want, have []aclEntry
	for _, rt := range []kmsg.ACLResourceType{kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup} {
		s, err := describeACLs(ctx, src, rt)
		if err == nil {
			var h []aclEntry
			if h, err = describeACLs(ctx, tgt, rt); err == nil {
				have = append(have, h...)
			}
		}
		if errors.Is(err, errNoAuthorizer) {
			c.watch.mu.Lock()
			first := !c.watch.noACLs
			c.watch.noACLs = true
			c.watch.mu.Unlock()
			if first {
				c.log.Warn("source watcher: replication.sync.acls is on, but a cluster has no authorizer (SECURITY_DISABLED): there are no ACLs to copy", "error", err)
			}
			return
		}
		if err != nil {
			if c.watch.noteFailure("acls", err.Error()) {
				c.log.Error("source watcher: could not describe ACLs; ACL sync tries again next interval", "error", err)
			}
			return
		}
		if rt == kmsg.ACLResourceTypeTopic {
			s = topicACLs(s, topics)
		}
		want = append(want, s...)
	}
	c.watch.clearFailure("acls")
	missing := missingACLs(want, have)
	if len(missing) == 0 {
		return
	}
	errs, err := createACLs(ctx, tgt, missing)
	if err != nil {
		if c.watch.noteFailure("acls-create", err.Error()) {
			c.watch.metrics.acls.WithLabelValues("failed").Add(float64(len(missing)))
			c.log.Error("source watcher: could not create ACLs on the target", "count", len(missing), "error", err)
		}
		return
	}
	for i, a := range missing {
		if errs[i] != nil {
			if c.watch.noteFailure("acl/"+a.String(), errs[i].Error()) {
				c.watch.metrics.acls.WithLabelValues("failed").Inc()
				c.log.Error("source watcher: could not create an ACL on the target", "acl", a.String(), "error", errs[i])
			}
			continue
		}
		c.watch.metrics.acls.WithLabelValues("created").Inc()
		c.log.Info("source watcher: ACL created on the target to match the source", "acl", a.String())
	}
}
