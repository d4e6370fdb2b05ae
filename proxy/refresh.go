package proxy

import (
	"context"
	"sync"
	"time"
)

// refresher coalesces background metadata refreshes of one cluster: at most
// one runs at a time, and topics asked for meanwhile are refreshed together
// by the next one. A burst of stale-leader errors (every partition of a
// restarted broker, from every client) then costs one or two Metadata
// requests, not a goroutine and a request per error.
type refresher struct {
	run func(topics []string) // refreshes these topics; blocking

	mu      sync.Mutex
	running bool
	pending map[string]struct{}
}

func newRefresher(uc *upstreamCluster) *refresher {
	return &refresher{run: func(topics []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = uc.refresh(ctx, topics)
	}}
}

// request asks for topics to be refreshed soon; it never blocks.
func (r *refresher) request(topics []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[string]struct{}{}
	}
	for _, t := range topics {
		r.pending[t] = struct{}{}
	}
	if r.running || len(r.pending) == 0 {
		return
	}
	r.running = true
	go r.loop()
}

// loop refreshes what is pending until nothing is.
func (r *refresher) loop() {
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		topics := make([]string, 0, len(r.pending))
		for t := range r.pending {
			topics = append(topics, t)
		}
		clear(r.pending)
		r.mu.Unlock()
		r.run(topics)
	}
}

// probeInterval is how often an unreachable cluster is asked for metadata
// again (watchClusters).
const probeInterval = time.Second

// watchClusters re-probes every cluster whose last metadata request failed,
// until Close. Without it one failed refresh left a cluster unreachable
// (and /readyz red) until some client request happened to refresh it.
func (s *Server) watchClusters() {
	defer s.wg.Done()
	ctx := context.Context(chanContext(s.stop))
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for _, uc := range s.clusters {
			uc.mu.RLock()
			// A cluster that never connected is connectLoop's.
			ok := uc.reachable || uc.versions == nil
			uc.mu.RUnlock()
			if !ok {
				// No topics: brokers and cluster id only, cheap.
				_ = uc.refresh(ctx, []string{})
			}
		}
	}
}
