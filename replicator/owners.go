package replicator

// Ownership with several instances (Options.Owns): each instance copies
// the partitions the membership gives it, and the broker fences the copy
// of an instance that lost one without knowing it (txncopy.go).

import "errors"

// Reassign applies Options.Owns again, after the membership changed: it
// starts copying every partition this instance now owns and does not copy
// (also one whose copy the broker fenced: the membership gave it back),
// and stops copying every partition it no longer owns, waiting until each
// has ended and saved its map, and forgets that partition (Map answers
// nil: this instance no longer translates its offsets). Without Owns it
// does nothing.
func (r *Replicator) Reassign() {
	if r.opts.Owns == nil {
		return
	}
	r.reassignMu.Lock()
	defer r.reassignMu.Unlock()
	type start struct {
		run *topicRun
		p   *partition
	}
	var starts []start
	var stops []*partition
	r.mu.Lock()
	for topic, run := range r.runs {
		for i := int32(0); i < run.n; i++ {
			k := topicPartition{topic, i}
			p := r.parts[k]
			owned := r.opts.Owns(topic, i)
			switch {
			case owned && (p == nil || p.fencedStop()):
				if p != nil {
					stops = append(stops, p) // ended: nothing to wait for but done
				}
				starts = append(starts, start{run, r.addPartitionLocked(run, topic, i)})
			case !owned && p != nil:
				stops = append(stops, p)
				delete(r.parts, k)
			}
		}
	}
	r.mu.Unlock()
	// A partition stops before anything starts: a partition given back at
	// once must not run twice on one state directory.
	for _, p := range stops {
		p.cancel()
		<-p.done
	}
	for _, s := range starts {
		r.launch(s.run, s.p)
	}
	if len(starts)+len(stops) > 0 {
		r.log.Info("partition copies reassigned", "started", len(starts), "stopped", len(stops))
	}
}

// fencedStop says whether the partition's copy ended because the broker
// fenced it.
func (p *partition) fencedStop() bool {
	select {
	case <-p.done:
	default:
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.As(p.fatal, new(*FencedError))
}
