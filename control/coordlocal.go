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
	"fmt"
	"time"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/replicator"
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

func (c *cutovers) coordPrepare(ctx context.Context, topic, from, to string) (int32, map[int32]flipPoint, error) {
	if c.prepareHook != nil {
		if err := c.prepareHook(ctx); err != nil {
			return 0, nil, err
		}
	}
	phases := newPhaseTimer()
	ends, total, err := c.drainEnds(ctx, topic, from, phases)
	if err != nil {
		return 0, nil, err
	}
	c.mu.Lock()
	if e := c.entries[topic]; e != nil {
		e.cut.State, e.cut.FrozenEnds = routing.Draining, ends
	}
	c.mu.Unlock()
	if err := c.copies.WaitCopied(ctx, topic, to, ends); err != nil {
		return 0, nil, err
	}
	phases.mark("copy")
	pl, err := c.copies.SealFlip(ctx, topic, from, to, ends)
	if err != nil {
		return 0, nil, err
	}
	if err := c.copies.SaveCopyBack(pl); err != nil {
		return 0, nil, err
	}
	phases.mark("seal")
	points := make(map[int32]flipPoint, len(pl.sealed))
	for p, f := range pl.sealed {
		points[p] = flipPoint{Map: f.AppendBinary(nil), FromEnd: pl.fromEnds[p]}
	}
	c.mu.Lock()
	if c.coordPlans == nil {
		c.coordPlans = map[string]*flipPlan{}
	}
	c.coordPlans[topic] = pl
	c.mu.Unlock()
	c.log.Info("coordinated flip: ready here", "topic", topic, "partitions", len(ends), "phases", phases.String())
	return total, points, nil
}

func (c *cutovers) coordCommit(topic, from, to string, gen int64, prepared bool, points map[int32]flipPoint) {
	c.mu.Lock()
	own := c.coordPlans[topic]
	delete(c.coordPlans, topic)
	policy := c.policy(c.cfg, to)
	c.mu.Unlock()
	// Every partition's maps, the others' too, from the members' points:
	// the partitions' leaders may change after the flip, and each new
	// leader must translate the partition's offsets on the new home.
	full, err := c.copies.PlanPoints(topic, from, to, points, nil)
	if err != nil {
		c.log.Error("coordinated flip: the maps of the partitions other instances sealed were not built; only this instance's partitions are served with maps", "topic", topic, "error", err)
		full = nil
	}
	adopt := full
	if adopt == nil || len(adopt.sealed) == 0 {
		adopt = own
	}
	if !prepared {
		// Not a member (it joined during the hold) or its drain
		// failed: its requests still in flight to from are answered
		// before any held one goes to to.
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		if err := c.gate.WaitProduceIdle(ctx, topic); err != nil {
			c.log.Error("coordinated flip: produce requests to the old home still in flight at the flip", "topic", topic, "error", err)
		}
		cancel()
		if adopt == nil {
			c.log.Warn("coordinated flip committed without maps here (it joined during the hold); the topic's produce moves with the others", "topic", topic, "home", to)
		}
	}
	if adopt != nil {
		c.copies.AdoptFlip(adopt)
	}
	c.mu.Lock()
	c.producePins[topic], c.fetchPins[topic] = to, to
	if nf := string(c.table.Route(topic, routing.Fetch, "", "")); nf == to {
		delete(c.fetchPins, topic) // the copy back is not read (considerLocked)
	}
	c.publishLocked()
	c.mu.Unlock()
	c.gate.ReleaseProduce(topic)
	c.flips.WithLabelValues(to).Inc()
	// The control topic is the flip's commit point: the maps and the
	// local marker, written once produce is released (they are not the
	// hold's to wait for), let a restart of this instance load them; a
	// crash before they are written is repaired at start from the
	// control topic (coordRestore).
	if adopt != nil {
		c.persistFlip(topic, to, gen, adopt, own)
	}
	// Only an instance that sealed its copy starts the copy back: one that
	// joined during the hold may still copy its partitions into to, and
	// both copies of one partition would copy each other's records.
	if prepared && adopt != nil && policy.ReverseReplication {
		if err := c.copies.StartCopy(topic, from); err != nil {
			c.log.Error("the copy back to the cluster the topic left did not start", "topic", topic, "to", from, "error", err)
		}
	}
	c.coordEnd(topic, routing.Flipped, "")
}

// persistFlip saves a coordinated flip's maps (but those own sealed and
// saved already) and then the local marker.
func (c *cutovers) persistFlip(topic, to string, gen int64, pl, own *flipPlan) {
	skip := map[int32]bool{}
	if own != nil {
		for p := range own.sealed {
			skip[p] = true
		}
	}
	if err := c.copies.SaveFlip(pl, skip); err != nil {
		c.log.Error("the coordinated flip's maps were not saved here; a restart rebuilds them from the control topic", "topic", topic, "error", err)
		return
	}
	var top int32
	for p := range pl.sealed {
		top = max(top, p+1)
	}
	m := cutoverMarker{Topic: topic, Home: to, FlippedAt: time.Now(), Partitions: top, Gen: gen}
	if err := c.markers.Save(m); err != nil {
		c.log.Error("the coordinated flip's local marker was not written; a restart rebuilds it from the control topic", "topic", topic, "error", err)
	}
	c.mu.Lock()
	c.flipped[topic] = &m
	c.mu.Unlock()
}

// coordRestore makes a flip decided while this instance was down its
// topic's home here, before any client is served: every partition's maps
// from the points in the control topic, saved, then the marker.
func (c *cutovers) coordRestore(topic, from, to string, gen int64, points, left map[int32]flipPoint) error {
	c.mu.Lock()
	m := c.flipped[topic]
	c.mu.Unlock()
	if m != nil && m.Home == to && m.Gen == gen {
		return nil // this instance committed it and saved its maps
	}
	var leftMaps map[int32]*replicator.FlippedMap
	if left != nil {
		leftMaps = map[int32]*replicator.FlippedMap{}
		for p, pt := range left {
			f, err := pt.sealed()
			if err != nil {
				return fmt.Errorf("partition %d of the flip before: %w", p, err)
			}
			leftMaps[p] = f
		}
	}
	pl, err := c.copies.PlanPoints(topic, from, to, points, leftMaps)
	if err != nil {
		return err
	}
	if len(pl.sealed) == 0 {
		return fmt.Errorf("the control topic holds no offset maps for flip %d", gen)
	}
	c.copies.AdoptFlip(pl)
	c.persistFlip(topic, to, gen, pl, nil)
	c.mu.Lock()
	c.entries[topic] = &cutoverEntry{
		st:  CutoverStatus{Topic: topic, From: from, To: to, Home: to, Reason: "flipped while this instance was down; maps rebuilt from the control topic"},
		cut: routing.Cutover{Topic: topic, From: config.Cluster(from), To: config.Cluster(to), State: routing.Flipped}}
	c.mu.Unlock()
	c.log.Info("a coordinated flip decided while this instance was down: its maps rebuilt from the control topic", "topic", topic, "home", to, "gen", gen, "partitions", len(pl.sealed))
	return nil
}

// coordMoves passes the agreed move count to the proxy (the gate), where
// it keys shared producer sessions; a gate without the count (tests) skips.
func (c *cutovers) coordMoves(topic string, n uint64) {
	if m, ok := c.gate.(interface{ SetTopicMoves(string, uint64) }); ok {
		m.SetTopicMoves(topic, n)
	}
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
