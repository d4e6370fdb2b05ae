package main

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
)

// replication runs the replicator for the topics the config's replicate
// patterns name, restarting it when that set changes on a reload (its state
// is on disk and a restart resumes exactly), and gives the proxy its offset
// maps.
type replication struct {
	log    hclog.Logger
	ctx    context.Context // the instance's lifetime, not the start-up's
	cancel context.CancelFunc

	mu       sync.Mutex // guards the fields below
	topics   []string
	r        *replicator.Replicator
	reg      *prometheus.Registry
	err      string
	cfg      *config.Config
	excluded map[string]bool                  // flipped topics: no longer copied
	sealed   map[tpKey]*replicator.FlippedMap // their maps, extended past the flip
}

type tpKey struct {
	topic     string
	partition int32
}

func newReplication(log hclog.Logger) *replication {
	ctx, cancel := context.WithCancel(context.Background())
	return &replication{ctx: ctx, cancel: cancel, log: log, excluded: map[string]bool{}, sealed: map[tpKey]*replicator.FlippedMap{}}
}

// setConfig records the config before the first apply (sealTopic needs the
// state directory).
func (rp *replication) setConfig(cfg *config.Config) {
	rp.mu.Lock()
	rp.cfg = cfg
	rp.mu.Unlock()
}

// stateDir is where the replicator keeps its maps.
func replicationStateDir(cfg *config.Config) string {
	if cfg.Replication.StateDir != "" {
		return cfg.Replication.StateDir
	}
	return filepath.Join(cfg.StateDir, "replicator")
}

// resolveTopics lists the source topics that match a replicate pattern.
func resolveTopics(ctx context.Context, cfg *config.Config) ([]string, error) {
	if len(cfg.Replicate) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Clusters.Source.Bootstrap...))
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
	var out []string
	for _, name := range listed.Names() {
		if strings.HasPrefix(name, "__") {
			continue
		}
		for _, p := range cfg.Replicate {
			if ok, _ := path.Match(p, name); ok || p == name {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// apply starts, restarts or stops the replicator for cfg.
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
	defer rp.mu.Unlock()
	topics = slices.DeleteFunc(topics, func(t string) bool { return rp.excluded[t] })
	rp.err = ""
	if slices.Equal(topics, rp.topics) && (rp.r != nil || len(topics) == 0) {
		return nil
	}
	if rp.r != nil {
		rp.r.Stop()
		rp.r, rp.reg = nil, nil
		rp.log.Info("replication stopped", "topics", rp.topics)
	}
	rp.topics = topics
	if len(topics) == 0 {
		return nil
	}
	reg := prometheus.NewRegistry()
	r, err := replicator.New(replicator.Options{
		SourceBrokers:     cfg.Clusters.Source.Bootstrap,
		TargetBrokers:     cfg.Clusters.Target.Bootstrap,
		Topics:            topics,
		StateDir:          replicationStateDir(cfg),
		Logger:            rp.log,
		Registerer:        reg,
		FetchMaxBytes:     cfg.Replication.FetchMaxBytes,
		PartitionMaxBytes: cfg.Replication.PartitionMaxBytes,
		// A cutover waits for the copy to reach the frozen source end; a
		// caught-up partition sits in this long poll, so it bounds the hold.
		FetchMaxWait: 100 * time.Millisecond,
	})
	if err != nil {
		rp.err = err.Error()
		return err
	}
	if err := r.Start(rp.ctx); err != nil {
		rp.err = err.Error()
		return err
	}
	rp.r, rp.reg = r, reg
	rp.log.Info("replication started", "topics", topics, "state_dir", replicationStateDir(cfg))
	return nil
}

func (rp *replication) stop() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.r != nil {
		rp.r.Stop()
		rp.r = nil
	}
	rp.cancel()
}

func (rp *replication) current() *replicator.Replicator {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.r
}

// stopTopic stops copying a topic for good (it flipped): the replicator
// restarts without it; its maps stay on disk, sealed by sealTopic.
func (rp *replication) stopTopic(topic string) error {
	rp.mu.Lock()
	rp.excluded[topic] = true
	rp.topics = slices.DeleteFunc(slices.Clone(rp.topics), func(t string) bool { return t == topic })
	r := rp.r
	rp.mu.Unlock()
	if r != nil {
		r.StopTopic(topic) // the other topics keep copying
	}
	return nil
}

// sealTopic loads a flipped topic's maps from disk, extended past the flip.
func (rp *replication) sealTopic(topic string, partitions int32) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.excluded[topic] = true
	dir := ""
	if rp.cfg != nil {
		dir = replicationStateDir(rp.cfg)
	}
	for p := int32(0); p < partitions; p++ {
		// The stopped replicator's final map, else (at start-up) the file.
		if rp.r != nil {
			if live := rp.r.Map(topic, p); live != nil {
				rp.sealed[tpKey{topic, p}] = replicator.Flipped(live)
				continue
			}
		}
		m, err := replicator.LoadFlipped(dir, topic, p)
		if err != nil {
			return fmt.Errorf("sealing %s/%d: %w", topic, p, err)
		}
		rp.sealed[tpKey{topic, p}] = m
	}
	return nil
}

// sealedMap returns a flipped topic's sealed map.
func (rp *replication) sealedMap(topic string, partition int32) *replicator.FlippedMap {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.sealed[tpKey{topic, partition}]
}

// unsealTopic undoes stopTopic and sealTopic after an aborted flip: the
// replicator copies the topic again (reconciling any tail).
func (rp *replication) unsealTopic(topic string) {
	rp.mu.Lock()
	delete(rp.excluded, topic)
	for k := range rp.sealed {
		if k.topic == topic {
			delete(rp.sealed, k)
		}
	}
	cfg := rp.cfg
	rp.mu.Unlock()
	if cfg != nil {
		if err := rp.apply(cfg); err != nil {
			rp.log.Error("replication not restarted after an aborted flip", "topic", topic, "error", err)
		}
	}
}

// Map implements proxy.OffsetMaps.
func (rp *replication) Map(topic string, partition int32) proxy.OffsetMap {
	rp.mu.Lock()
	sm := rp.sealed[tpKey{topic, partition}]
	rp.mu.Unlock()
	if sm != nil {
		return sm
	}
	r := rp.current()
	if r == nil {
		return nil
	}
	if m := r.Map(topic, partition); m != nil {
		return m
	}
	return nil
}

// Gather implements prometheus.Gatherer over the current replicator's
// registry (a restarted replicator registers afresh).
func (rp *replication) Gather() ([]*dto.MetricFamily, error) {
	rp.mu.Lock()
	reg := rp.reg
	rp.mu.Unlock()
	if reg == nil {
		return nil, nil
	}
	return reg.Gather()
}

// replicationStatus is the /status section on replication.
type replicationStatus struct {
	Topics     []string                     `json:"topics"`
	Error      string                       `json:"error,omitempty"`
	Partitions []replicator.PartitionStatus `json:"partitions"`
}

func (rp *replication) status() replicationStatus {
	rp.mu.Lock()
	st := replicationStatus{Topics: rp.topics, Error: rp.err}
	r := rp.current
	rp.mu.Unlock()
	if cur := r(); cur != nil {
		st.Partitions = cur.Status()
	}
	return st
}
