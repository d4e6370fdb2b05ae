package replicator

// Topics that change under a running copy: partitions added on the source
// after the topic's copy started (kproxy's source watcher finds them and,
// with replication.sync.partitions, adds them to the target first), and
// whether a topic's copy has caught up, which decides when its fetches
// may be served from the copy.

import (
	"context"
	"fmt"
)

// Partitions is how many partitions of topic the copy runs (0 when the
// topic is not copied).
func (r *Replicator) Partitions(topic string) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run, ok := r.runs[topic]; ok {
		return run.n
	}
	return 0
}

// PartitionCounts is Partitions of every topic the copy runs, in one pass:
// the source watcher compares every replicated topic's count with the
// source's every watch interval (asking Partitions topic by topic once
// walked every partition per topic: at 10,000 partitions in 1,000 topics,
// most of an idle kproxy's CPU).
func (r *Replicator) PartitionCounts() map[string]int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int32, len(r.runs))
	for topic, run := range r.runs {
		out[topic] = run.n
	}
	return out
}

// AddPartitions starts copying partitions [Partitions(topic), n) of a topic
// the copy already runs: they were added to the source after the copy
// started. The target must already have them (partition i is copied into
// partition i: the offset map is per partition); AddPartitions checks and
// returns an error, starting nothing, when it does not. A new partition
// starts like any other, from its map on disk or from the source's log
// start, and gets its own offset map.
func (r *Replicator) AddPartitions(ctx context.Context, topic string, n int32) error {
	have := r.Partitions(topic)
	if have == 0 {
		return fmt.Errorf("replicator: %s is not being copied", topic)
	}
	if n <= have {
		return nil
	}
	td, err := r.tgtAdm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("target metadata: %w", err)
	}
	if t := td[topic]; t.Err != nil {
		return fmt.Errorf("target topic: %w", t.Err)
	} else if got := int32(len(t.Partitions)); got < n {
		return fmt.Errorf("the target topic has %d partitions, the source %d: the new partitions are copied once the target has them (replication.sync.partitions adds them)", got, n)
	}
	r.mu.Lock()
	run := r.runs[topic]
	if run == nil { // stopped meanwhile (a cutover)
		r.mu.Unlock()
		return nil
	}
	var started []*partition
	for i := run.n; i < n; i++ {
		if _, ok := r.parts[topicPartition{topic, i}]; ok || !r.owns(topic, i) {
			continue
		}
		started = append(started, r.addPartitionLocked(run, topic, i))
	}
	run.n = max(run.n, n)
	r.mu.Unlock()
	for _, p := range started {
		r.launch(run, p)
	}
	r.log.Info("copying new partitions of a topic", "topic", topic, "from", have, "partitions", n)
	return nil
}

// CaughtUp says whether every partition of topic the copy runs has copied
// everything below the source high watermark its last fetch saw (and has
// fetched at least once): the copy holds what a reader of the source would
// have seen a moment ago. False when the topic is not copied.
func (r *Replicator) CaughtUp(topic string) bool {
	r.mu.Lock()
	var ps []*partition
	if _, ok := r.runs[topic]; ok {
		for k, p := range r.parts {
			if k.topic == topic {
				ps = append(ps, p)
			}
		}
	}
	r.mu.Unlock()
	if len(ps) == 0 {
		return false
	}
	for _, p := range ps {
		p.mu.Lock()
		// behindSince starts set (newPartition) and is cleared by the
		// first progress at the high watermark.
		ok := p.m != nil && p.behindSince.IsZero() && p.fatal == nil
		p.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}
