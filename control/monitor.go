package control

// The monitor: one goroutine, owned by the Controller (started by Start,
// stopped by Close through its context), that keeps the per-topic counters'
// topic set current (statsEvery), runs the bypass check
// (monitor.bypass_interval, bypass.go) and logs the progress of copies that
// are behind (monitor.progress_interval). Intervals are read from the
// applied config on every round, so a reload changes them.

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
)

// statsEvery is how often the topics with their own counters are updated
// from the config, the replication and the topics clients use.
const statsEvery = 5 * time.Second

type monitor struct {
	log    hclog.Logger
	srv    *proxy.Server
	repl   *replication
	bypass *bypassWatch
	cfg    atomic.Pointer[config.Config]
	done   chan struct{}

	// Owned by run: topics named for counters at the previous round (the
	// bypass check compares only those: a request that looked a topic up
	// before it was named was not counted), and which copies were behind
	// (progress lines).
	named  []string
	behind map[string]bool
}

func newMonitor(log hclog.Logger, srv *proxy.Server, repl *replication, bypass *bypassWatch) *monitor {
	return &monitor{log: log, srv: srv, repl: repl, bypass: bypass, done: make(chan struct{}), behind: map[string]bool{}}
}

// run loops until ctx ends; done is closed on return.
func (m *monitor) run(ctx context.Context) {
	defer close(m.done)
	var nextBypass, nextProgress time.Time
	for {
		cfg := m.cfg.Load()
		now := time.Now()
		prevNamed := m.named
		m.named = statsTopics(cfg, m.srv.KnownTopics(), m.repl.resolvedTopics())
		m.srv.SetStatsTopics(m.named)
		m.bypass.watch(m.named)
		wait := statsEvery
		if iv := cfg.Monitor.BypassInterval; iv > 0 {
			if !now.Before(nextBypass) {
				var topics []string
				for _, t := range prevNamed {
					if slices.Contains(m.named, t) {
						topics = append(topics, t)
					}
				}
				m.bypass.check(ctx, cfg, topics)
				nextBypass = time.Now().Add(iv)
			}
			wait = min(wait, time.Until(nextBypass))
		}
		if iv := cfg.Monitor.ProgressInterval; iv > 0 {
			if !now.Before(nextProgress) {
				m.logProgress(m.repl.status())
				nextProgress = time.Now().Add(iv)
			}
			wait = min(wait, time.Until(nextProgress))
		}
		t := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// logProgress logs one line per topic whose copy is behind (an initial
// sync, or catching up), and one when it has caught up.
func (m *monitor) logProgress(st ReplicationStatus) {
	for _, dir := range []struct {
		to    string
		parts []replicator.PartitionStatus
	}{{proxy.Target, st.Partitions}, {proxy.Source, st.ToSource}} {
		for _, t := range replicator.Topics(dir.parts) {
			key := dir.to + "/" + t.Topic
			if t.LagRecords <= 0 {
				if m.behind[key] {
					delete(m.behind, key)
					m.log.Info("replication caught up", "topic", t.Topic, "to", dir.to)
				}
				continue
			}
			m.behind[key] = true
			var rate float64
			caughtUp := 0
			for _, p := range dir.parts {
				if p.Topic == t.Topic && p.Partition >= 0 {
					rate += p.CopyRecordsPerSec
					if p.LagRecords == 0 {
						caughtUp++
					}
				}
			}
			eta := "unknown"
			if t.CatchUpMillis >= 0 {
				eta = (time.Duration(t.CatchUpMillis) * time.Millisecond).Round(time.Second).String()
			}
			m.log.Info("replication catching up", "topic", t.Topic, "to", dir.to,
				"partitions_caught_up", caughtUp, "partitions", t.Partitions,
				"lag_records", t.LagRecords, "lag_bytes", t.LagBytes, "copy_records_per_s", int64(rate), "eta", eta)
		}
	}
}
