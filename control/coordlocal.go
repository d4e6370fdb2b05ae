package control

// One instance's side of a coordinated flip (coordflip.go drives it): the
// single-instance cutover's steps, split at the points where the instances
// agree through the control topic. Hold; drain what this instance has in
// flight and, for the partitions it leads and copies, freeze the home's
// ends, wait for the copy and seal its maps (prepare); then, on the
// driver's decision, commit (marker, new home, pins, release, copy back)
// or abort (release on the home, copy resumed).

import (
	"context"
	"errors"
	"time"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/routing"
)

// ownedOnly is ends restricted to the partitions this instance copies
// (all of them with one instance).
func (c *cutovers) ownedOnly(topic string, ends map[int32]int64) map[int32]int64 {
	if c.owns == nil || ends == nil {
		return ends
	}
	out := make(map[int32]int64, len(ends))
	for p, e := range ends {
		if c.owns(topic, p) {
			out[p] = e
		}
	}
	return out
}

func (c *cutovers) coordHold(topic, from, to string) {
	now := time.Now()
	c.mu.Lock()
	c.producePins[topic], c.fetchPins[topic] = from, from
	e := &cutoverEntry{running: true, cancel: func(error) {},
		st:  CutoverStatus{Topic: topic, From: from, To: to, Home: from, StartedAt: now},
		cut: routing.Cutover{Topic: topic, From: config.Cluster(from), To: config.Cluster(to), State: routing.Holding, StartedAt: now, HeldSince: now}}
	if old := c.entries[topic]; old != nil {
		e.st.FlippedAt = old.st.FlippedAt
	}
	c.entries[topic] = e
	c.publishLocked()
	c.mu.Unlock()
	// Pinned first: the hold notes the home as where its requests came
	// from (ReleaseProduce gives producers fresh sessions if they move).
	c.gate.HoldProduce(topic)
}

func (c *cutovers) coordPrepare(ctx context.Context, topic, from, to string) error {
	if c.prepareHook != nil {
		if err := c.prepareHook(ctx); err != nil {
			return err
		}
	}
	phases := newPhaseTimer()
	ends, err := c.drainInFlight(ctx, topic, from, phases)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if e := c.entries[topic]; e != nil {
		e.cut.State, e.cut.FrozenEnds = routing.Draining, ends
	}
	c.mu.Unlock()
	if err := c.copies.WaitCopied(ctx, topic, to, ends); err != nil {
		return err
	}
	phases.mark("copy")
	pl, err := c.copies.SealFlip(ctx, topic, from, to, ends)
	if err != nil {
		return err
	}
	if err := c.copies.SaveCopyBack(pl); err != nil {
		return err
	}
	phases.mark("seal")
	c.mu.Lock()
	if c.coordPlans == nil {
		c.coordPlans = map[string]*flipPlan{}
	}
	c.coordPlans[topic] = pl
	c.mu.Unlock()
	c.log.Info("coordinated flip: ready here", "topic", topic, "partitions", len(ends), "phases", phases.String())
	return nil
}

func (c *cutovers) coordCommit(topic, from, to string, prepared bool) {
	c.mu.Lock()
	pl := c.coordPlans[topic]
	delete(c.coordPlans, topic)
	policy := c.policy(c.cfg, to)
	c.mu.Unlock()
	now := time.Now()
	if prepared && pl != nil {
		m := cutoverMarker{Topic: topic, Home: to, FlippedAt: now, Partitions: int32(len(pl.sealed))}
		if len(pl.sealed) > 0 {
			var top int32
			for p := range pl.sealed {
				top = max(top, p+1)
			}
			m.Partitions = top
		}
		// The control topic is the flip's commit point; the local
		// marker lets a restart of this instance load its sealed maps.
		if err := c.markers.Save(m); err != nil {
			c.log.Error("the coordinated flip's local marker was not written; a restart of this instance serves the topic from the control topic's home without its maps", "topic", topic, "error", err)
		}
		c.copies.AdoptFlip(pl)
		c.mu.Lock()
		c.flipped[topic] = &m
		c.mu.Unlock()
	} else {
		// Not a member (it joined during the hold) or its drain
		// failed: its requests still in flight to from are answered
		// before any held one goes to to.
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		if err := c.gate.WaitProduceIdle(ctx, topic); err != nil {
			c.log.Error("coordinated flip: produce requests to the old home still in flight at the flip", "topic", topic, "error", err)
		}
		cancel()
		c.log.Warn("coordinated flip committed without this instance's maps (it joined during the hold); the topic's produce moves with the others", "topic", topic, "home", to)
	}
	c.mu.Lock()
	c.producePins[topic], c.fetchPins[topic] = to, to
	if nf := string(c.table.Route(topic, routing.Fetch, "", "")); nf == to || (nf == from && policy.ReverseReplication) {
		delete(c.fetchPins, topic)
	}
	c.publishLocked()
	c.mu.Unlock()
	c.gate.ReleaseProduce(topic)
	c.flips.WithLabelValues(to).Inc()
	if prepared && policy.ReverseReplication {
		if err := c.copies.StartCopy(topic, from); err != nil {
			c.log.Error("the copy back to the cluster the topic left did not start", "topic", topic, "to", from, "error", err)
		}
	}
	c.coordEnd(topic, routing.Flipped, "")
}

func (c *cutovers) coordAbort(topic, from, to string, _ bool, reason string) {
	c.mu.Lock()
	delete(c.coordPlans, topic)
	c.producePins[topic], c.fetchPins[topic] = from, from
	c.publishLocked()
	c.mu.Unlock()
	c.gate.ReleaseProduce(topic)
	c.aborts.Inc()
	// A prepare that sealed the copy (or failed after stopping it)
	// leaves it stopped: resume it, as a single instance's abort does.
	if c.ctx.Err() == nil && !c.copies.CopiesInto(topic, to) {
		if err := c.copies.StartCopy(topic, to); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Error("replication not resumed after an aborted coordinated flip", "topic", topic, "error", err)
		}
	}
	c.coordEnd(topic, routing.Aborted, "aborted by the driver: "+reason)
}

func (c *cutovers) coordRefuse(topic string) {
	if r, ok := c.gate.(interface{ RefuseHeld(topic string) }); ok {
		r.RefuseHeld(topic)
	}
	c.log.Warn("coordinated flip undecided as this instance stops: its held produce requests are refused (the clients retry on another instance)", "topic", topic)
}

// coordEnd records the end of this instance's part in a coordinated flip
// and compares the topic with the config again (a reload may have come).
func (c *cutovers) coordEnd(topic string, state routing.State, reason string) {
	c.mu.Lock()
	e := c.entries[topic]
	if e == nil {
		c.mu.Unlock()
		return
	}
	e.running = false
	hold := time.Since(e.cut.HeldSince)
	e.cut.State, e.cut.HoldDuration = state, hold
	e.st.HoldMillis = hold.Milliseconds()
	if state == routing.Flipped {
		e.st.Home, e.st.FlippedAt, e.cut.FlippedAt = string(e.cut.To), time.Now(), time.Now()
	} else {
		e.st.Reason, e.cut.Reason = reason, reason
	}
	c.holdHist.Observe(hold.Seconds())
	c.history = append(c.history, CutoverEvent{Topic: topic, From: string(e.cut.From), To: string(e.cut.To), Outcome: state.String(), Reason: reason, At: time.Now(), HoldMillis: hold.Milliseconds()})
	if len(c.history) > cutoverHistory {
		c.history = c.history[len(c.history)-cutoverHistory:]
	}
	if c.table != nil {
		e.reconsider = false
		_ = c.considerLocked(topic) // with coord it never starts a local attempt
		c.publishLocked()
	}
	c.mu.Unlock()
}

var _ flipLocal = (*cutovers)(nil)

// maxHold is the applied config's cutover.max_hold (its default if unset).
func (c *cutovers) maxHold() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg == nil || c.cfg.Cutover.MaxHold <= 0 {
		return config.DefaultMaxHold
	}
	return c.cfg.Cutover.MaxHold
}
