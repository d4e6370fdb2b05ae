package control

// The coordinated flip (docs/ha.md, "Coordinated cutover"): with several
// instances (config control:), a replicated topic's home moves through the
// control topic (statetopic.go), so that every instance holds, drains and
// flips together and no topic is ever produced to both clusters.
//
// A consumer group's home moves the same way (coordgroups.go): its
// subject, in place of <topic> below, is "group:" and the escaped group id;
// its ready carries the member ids the instance relayed instead of points,
// and the driver copies the group's committed offsets between every ready
// and the decision (flipCopier).
//
// Records (the control topic, JSON values):
//
//	flip/<topic>                     {gen, phase: hold|flipped|aborted, from, to, members, driver, started, reason}
//	ready/<topic>/<gen>/<instance>   {gen, error, partitions, points: {partition: {map, from_end}}}
//	decided/<topic>/<gen>/<driver>   {outcome: flipped|aborted, from, to, reason}
//	home/<topic>                     {cluster, gen, flipped_at} (for operators; derived from decided)
//
// One instance drives: the lowest instance id of the membership view
// (every instance derives the same from the same view). The driver starts
// a flip when its config routes a replicated topic's produce off the
// topic's home: it publishes flip = hold(gen, from, to, members), members
// being its view. Every instance that reads it holds the topic's produce;
// each member then waits for its in-flight requests and, for the
// partitions it leads (and copies), freezes the home's end offsets, waits
// until its copy reached them and seals its maps (flipLocal.coordPrepare),
// and publishes ready(gen), or ready(gen, error). The driver decides:
//
//   - every member ready: it publishes decided(gen) = flipped;
//   - a member's error, the view no longer equal to members (an instance
//     left or joined), max_hold passed, or its config no longer asking for
//     the move: it publishes decided(gen) = aborted.
//
// The decision of a gen is the decided/<topic>/<gen>/* record with the
// lowest offset: two drivers at once (views that differ for a moment, a
// driver cut off from the membership but not from the control cluster)
// may both decide, and every instance takes the first, now and after
// compaction (each driver writes its own key, and compaction keeps
// offsets). An instance flips (pins produce and fetch on `to`, releases
// the held requests there, starts the copy back) only once it reads a
// flipped decision, and only after its own drain ended; it releases on
// `from` on an aborted one. None produces to `to` before the decision. An
// instance that starts while a flip is undecided holds the topic too, and
// follows the outcome. A driver that leaves mid-hold changes the view: the
// next driver aborts the flip.
//

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/secure"
)

// Phases of flip/<topic>.
const (
	phaseHold    = "hold"
	phaseFlipped = "flipped"
	phaseAborted = "aborted"
)

type flipRecord struct {
	Gen     int64     `json:"gen"`
	Phase   string    `json:"phase"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Members []string  `json:"members"`
	Driver  string    `json:"driver"`
	Started time.Time `json:"started"`
	Reason  string    `json:"reason,omitempty"`
}

type homeRecord struct {
	Cluster   string    `json:"cluster"`
	Gen       int64     `json:"gen"`
	FlippedAt time.Time `json:"flipped_at"`
}

type decisionRecord struct {
	Outcome string    `json:"outcome"` // phaseFlipped or phaseAborted
	From    string    `json:"from"`
	To      string    `json:"to"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

func decidedPrefix(topic string, gen int64) string {
	return "decided/" + topic + "/" + strconv.FormatInt(gen, 10) + "/"
}

// decision is the first decision recorded for a topic's flip gen.
func (cf *coordFlips) decision(topic string, gen int64) (decisionRecord, bool) {
	var best decisionRecord
	bestOff, found := int64(-1), false
	for _, k := range cf.st.keys(decidedPrefix(topic, gen)) {
		o, ok := cf.st.offset(k)
		var d decisionRecord
		if okv, err := cf.st.get(k, &d); !ok || !okv || err != nil {
			continue
		}
		if !found || o < bestOff {
			best, bestOff, found = d, o, true
		}
	}
	return best, found
}

type readyRecord struct {
	Gen   int64  `json:"gen"`
	Error string `json:"error,omitempty"`
	// Partitions is the topic's partition count as this member saw it;
	// Points the flip points of the partitions it sealed. The driver
	// flips only when the members' points cover every partition once.
	Partitions int32               `json:"partitions,omitempty"`
	Points     map[int32]flipPoint `json:"points,omitempty"`
	// Relayed (a group move's ready, coordgroups.go): the group's member
	// ids this instance handed out, which the driver's offset copy may
	// remove from the new home as left behind by an earlier move.
	Relayed []string `json:"relayed,omitempty"`
}

// flipPoint is one partition's sealed copy as the member that sealed it
// publishes it: the new home's offset map up to the flip (the map file
// format; its end is the flip point, past which the new home's offsets
// continue the virtual ones at a fixed shift) and the old home's log end,
// where the copy back starts. From it any instance builds the partition's
// sealed map and the copy back's map (replication.planPoints): the
// partition's leader may change after the flip, and an instance that was
// down during the flip restarts on the new home (coordFlips.restore).
type flipPoint struct {
	Map     []byte `json:"map"`
	FromEnd int64  `json:"from_end"`
}

// sealed decodes the point's map, sealed at its end.
func (pt flipPoint) sealed() (*replicator.FlippedMap, error) {
	m, err := replicator.Load(bytes.NewReader(pt.Map))
	if err != nil {
		return nil, err
	}
	return replicator.Flipped(m), nil
}

// maxReadyBytes bounds a ready record's size: a record of the control
// topic must fit the control cluster's message.max.bytes (1 MiB by
// default). A topic whose maps do not fit aborts its flip, saying so.
const maxReadyBytes = 900 << 10

// readyPrefix is where the members of a topic's flip gen answer: one key
// per gen, so a later flip does not compact away the points of the flip
// that set the topic's home (restore needs them, and those of the flip
// before it).
func readyPrefix(topic string, gen int64) string {
	return "ready/" + topic + "/" + strconv.FormatInt(gen, 10) + "/"
}

func readyKey(topic string, gen int64, instance string) string {
	return readyPrefix(topic, gen) + instance
}

// points gathers the flip points every member published for a topic's
// flip gen, the first published for a partition winning (the driver
// checked that members agree).
func (cf *coordFlips) points(topic string, gen int64) map[int32]flipPoint {
	type answer struct {
		off int64
		r   readyRecord
	}
	var answers []answer
	for _, k := range cf.st.keys(readyPrefix(topic, gen)) {
		var r readyRecord
		o, ok := cf.st.offset(k)
		if okv, err := cf.st.get(k, &r); !ok || !okv || err != nil || r.Gen != gen {
			continue
		}
		answers = append(answers, answer{o, r})
	}
	slices.SortFunc(answers, func(a, b answer) int { return int(a.off - b.off) })
	out := map[int32]flipPoint{}
	for _, a := range answers {
		for p, pt := range a.r.Points {
			if _, ok := out[p]; !ok {
				out[p] = pt
			}
		}
	}
	return out
}

func flipKey(topic string) string { return "flip/" + topic }
func homeKey(topic string) string { return "home/" + topic }

// flipLocal is what one instance does in a coordinated flip (cutovers
// implements it). Hold and the outcomes are called from the coordinator's
// loop, one at a time per topic; prepare runs on its own goroutine.
type flipLocal interface {
	// coordHold holds the topic's produce requests, its produce and fetch
	// pinned on from.
	coordHold(topic, from, to string)
	// coordPrepare waits for the in-flight requests, freezes the ends of
	// the partitions this instance leads, waits until their copy reached
	// them and seals the copy (nothing is committed). It returns the
	// topic's partition count and the flip points of the partitions it
	// sealed.
	coordPrepare(ctx context.Context, topic, from, to string) (int32, map[int32]flipPoint, error)
	// coordCommit makes to the topic's home here: pins, release on to,
	// the copy back, every partition's maps built from points (the
	// members'). prepared says coordPrepare succeeded for this flip.
	coordCommit(topic, from, to string, gen int64, prepared bool, points map[int32]flipPoint)
	// coordRestore makes to the topic's home at start when the control
	// topic decided flip gen while this instance was down (or before it
	// saved its maps): the maps built from points, those of the cluster
	// left from left (nil: this instance's own).
	coordRestore(topic, from, to string, gen int64, points, left map[int32]flipPoint) error
	// coordMoves sets how many times topic moved, by the control topic's
	// flipped decisions: part of a shared producer session's key, so every
	// instance, also one that restarted after a flip, keys alike.
	coordMoves(topic string, n uint64)
	// coordRefuse ends the hold of an instance that stops before the
	// flip was decided: held requests answered retriable, sent nowhere.
	coordRefuse(topic string)
	// coordAbort releases on from and resumes the copy into to; reason
	// is the driver's.
	coordAbort(topic, from, to string, prepared bool, reason string)
}

// memberView is the membership as the coordinator reads it.
type memberView interface {
	// memberIDs is the live instances' ids, sorted; ok false until the
	// group agreed on a first view.
	memberIDs() (ids []string, ok bool)
	// viewChanged is closed at the next view.
	viewChanged() <-chan struct{}
}

// coordFlips is one instance's part in coordinated flips: participant
// always, driver when its id is the view's lowest.
type coordFlips struct {
	log     hclog.Logger
	self    string
	st      *stateTopic
	view    memberView
	local   flipLocal
	maxHold func() time.Duration
	wake    chan struct{} // a want arrived

	mu     sync.Mutex
	wanted map[string]*wantedFlip // topic -> the move its config asks for
	parts  map[string]*flipPart   // topic -> this instance's part in its latest flip

	// copying: subject -> the gen whose copy the driver started (a
	// flipCopier's step between every ready and the decision), so each
	// gen copies once.
	copying map[string]int64
	copies  sync.WaitGroup

	cancel context.CancelFunc
	done   chan struct{}
}

// flipCopier is a subject's step on the driver between every member's
// ready and the decision (coordgroups.go: a group move copies the group's
// committed offsets while every instance holds it). It runs once per gen,
// off the loop, bounded by max_hold; its error aborts the flip.
type flipCopier interface {
	copiesAtDecision(topic string) bool
	coordCopy(ctx context.Context, topic, from, to string, readies []readyRecord) error
}

// relayedLister adds a subject's relayed member ids to this instance's
// ready (coordgroups.go).
type relayedLister interface {
	coordRelayed(topic string) []string
}

// wantedFlip is a move this instance's config asks for.
type wantedFlip struct {
	from, to string
	// tried: the driver started a flip for it; one that aborts is tried
	// again at the next reload, as a single instance's cutover is.
	tried bool
}

// flipPart is this instance's state in one flip.
type flipPart struct {
	gen      int64
	from, to string
	member   bool // in the flip's members: prepares and answers ready
	cancel   context.CancelFunc
	prepared chan struct{} // closed when prepare ended
	ok       bool          // prepare succeeded (valid once prepared is closed)
	ended    bool          // committed or aborted here
}

func newCoordFlips(log hclog.Logger, self string, st *stateTopic, view memberView, local flipLocal, maxHold func() time.Duration) *coordFlips {
	return &coordFlips{log: log, self: self, st: st, view: view, local: local, maxHold: maxHold,
		wake: make(chan struct{}, 1), wanted: map[string]*wantedFlip{}, parts: map[string]*flipPart{}, copying: map[string]int64{}, done: make(chan struct{})}
}

// home is a topic's home by the control topic: the destination of its
// latest flip decided flipped ("" when no flip ever moved it), and the
// latest gen decided either way.
func (cf *coordFlips) home(topic string) homeRecord {
	var h homeRecord
	gens := map[int64]bool{}
	for _, k := range cf.st.keys("decided/" + topic + "/") {
		rest := strings.TrimPrefix(k, "decided/"+topic+"/")
		g, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(g, 10, 64); err == nil {
			gens[n] = true
		}
	}
	flippedGen := int64(0)
	for g := range gens {
		h.Gen = max(h.Gen, g)
		if d, ok := cf.decision(topic, g); ok && d.Outcome == phaseFlipped && g > flippedGen {
			flippedGen, h.Cluster, h.FlippedAt = g, d.To, d.At
		}
	}
	return h
}

// want notes what this instance's config asks for a topic whose produce
// route leaves its home (from): only the driver acts on it. A want for a
// topic back on its home (to == from) clears it.
// retry (a reload) lets the driver try a move again after an abort.
func (cf *coordFlips) want(topic, from, to string, retry bool) {
	cf.mu.Lock()
	w := cf.wanted[topic]
	switch {
	case from == to:
		delete(cf.wanted, topic)
	case w == nil || w.from != from || w.to != to:
		cf.wanted[topic] = &wantedFlip{from: from, to: to}
	case retry:
		w.tried = false
	}
	cf.mu.Unlock()
	select {
	case cf.wake <- struct{}{}:
	default:
	}
}

// start runs the loop until close. Call it once the local side can take
// holds (the controller started); an undecided flip read at start is
// joined at once.
func (cf *coordFlips) start() {
	ctx, cancel := context.WithCancel(context.Background())
	cf.cancel = cancel
	cf.participate(ctx) // before clients: an undecided flip holds at once
	go cf.run(ctx)
}

func (cf *coordFlips) close() {
	if cf.cancel == nil {
		cf.st.Close()
		return
	}
	cf.cancel()
	<-cf.done
	cf.copies.Wait()
	cf.mu.Lock()
	var waits []chan struct{}
	var open []string
	for t, p := range cf.parts {
		if p.cancel != nil {
			p.cancel()
			waits = append(waits, p.prepared)
		}
		if !p.ended {
			p.ended = true
			open = append(open, t)
		}
	}
	cf.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	// Undecided here: the held requests are refused, written nowhere.
	for _, t := range open {
		cf.local.coordRefuse(t)
	}
	cf.st.Close()
}

// coordTick bounds how late the driver notices max_hold.
const coordTick = 50 * time.Millisecond

func (cf *coordFlips) run(ctx context.Context) {
	defer close(cf.done)
	tick := time.NewTicker(coordTick)
	defer tick.Stop()
	for {
		changed, viewed := cf.st.changes(), cf.view.viewChanged()
		cf.participate(ctx)
		cf.drive(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-viewed:
		case <-cf.wake:
		case <-tick.C:
		}
	}
}

// participate follows every flip record: hold, prepare and answer, then
// commit or abort as the driver decided.
func (cf *coordFlips) participate(ctx context.Context) {
	for _, k := range cf.st.keys("flip/") {
		topic := strings.TrimPrefix(k, "flip/")
		var f flipRecord
		if ok, err := cf.st.get(k, &f); !ok || err != nil {
			continue
		}
		d, done := cf.decision(topic, f.Gen)
		cf.mu.Lock()
		p := cf.parts[topic]
		cf.mu.Unlock()
		if p != nil && p.gen < f.Gen && !p.ended {
			// A newer flip while this instance's part in an older
			// one has not ended: the loop reads only the latest
			// flip record, and the older flip's decision and the
			// newer start can arrive together. The older ends first,
			// as its first decision says; a newer record with no
			// decision of the older before it is no valid start (a
			// driver starts a flip once the last one was decided):
			// this instance keeps following the older.
			od, ok := cf.decision(topic, p.gen)
			if !ok {
				continue
			}
			cf.end(topic, p, od)
		}
		if p != nil && p.gen < f.Gen {
			p = nil
		}
		var fresh context.Context // the new part's prepare, once it holds
		if p == nil && f.Phase == phaseHold && !done {
			if hb := cf.homeBefore(topic, f.Gen); hb != "" && hb != f.From {
				// Started from a cluster that is no longer the
				// topic's home (a driver that read the state before
				// the last decision): holding on it would serve the
				// topic from the cluster it left. The driver aborts
				// it (drive).
				continue
			}
			p = &flipPart{gen: f.Gen, from: f.From, to: f.To, member: slices.Contains(f.Members, cf.self), prepared: make(chan struct{})}
			fresh, p.cancel = context.WithCancel(ctx)
			cf.mu.Lock()
			cf.parts[topic] = p
			cf.mu.Unlock()
		}
		if fresh != nil {
			cf.local.coordHold(topic, f.From, f.To)
			cf.log.Info("coordinated flip: holding", "topic", topic, "gen", f.Gen, "from", f.From, "to", f.To, "driver", f.Driver, "member", p.member)
			if p.member {
				go cf.prepare(fresh, topic, p)
			} else {
				close(p.prepared) // it follows the outcome, with nothing to answer
			}
		}
		if p == nil || p.gen != f.Gen || p.ended || !done {
			continue
		}
		cf.end(topic, p, d)
	}
}

// end ends this instance's part in a flip as its first decision says:
// the only decision any instance acts on.
func (cf *coordFlips) end(topic string, p *flipPart, d decisionRecord) {
	switch d.Outcome {
	case phaseFlipped:
		<-p.prepared // the driver decided on this instance's ready, sent after prepare
		cf.mu.Lock()
		p.ended = true
		cf.mu.Unlock()
		// The move count as the control topic has it: one less before the
		// commit (whose release counts this move where the topic was held)
		// and all after (where it was not, e.g. an instance that joined
		// during the hold).
		moves := uint64(len(cf.flippedGens(topic)))
		if moves > 0 {
			cf.local.coordMoves(topic, moves-1)
		}
		cf.local.coordCommit(topic, p.from, p.to, p.gen, p.member && p.ok, cf.points(topic, p.gen))
		cf.local.coordMoves(topic, moves)
		cf.log.Info("coordinated flip: flipped", "topic", topic, "gen", p.gen, "home", p.to)
	case phaseAborted:
		if p.cancel != nil {
			p.cancel()
		}
		<-p.prepared
		cf.mu.Lock()
		p.ended = true
		cf.mu.Unlock()
		cf.local.coordAbort(topic, p.from, p.to, p.member && p.ok, d.Reason)
		cf.log.Warn("coordinated flip: aborted; held requests released on the "+p.from, "topic", topic, "gen", p.gen, "reason", d.Reason)
	}
}

// homeBefore is the topic's home when flip gen started: the destination
// of the latest flip decided flipped among the gens before it ("" when
// none moved it: its first home, which the control topic does not name).
func (cf *coordFlips) homeBefore(topic string, gen int64) string {
	home := ""
	for _, g := range cf.flippedGens(topic) {
		if g >= gen {
			break
		}
		d, _ := cf.decision(topic, g)
		home = d.To
	}
	return home
}

// prepare runs the local drain and answers ready (with its error, if any).
func (cf *coordFlips) prepare(ctx context.Context, topic string, p *flipPart) {
	n, points, err := cf.local.coordPrepare(ctx, topic, p.from, p.to)
	r := readyRecord{Gen: p.gen, Partitions: n, Points: points}
	if rl, ok := cf.local.(relayedLister); ok && err == nil {
		r.Relayed = rl.coordRelayed(topic)
	}
	if err == nil {
		if b, jerr := json.Marshal(r); jerr != nil {
			err = jerr
		} else if len(b) > maxReadyBytes {
			err = fmt.Errorf("the offset maps of the partitions sealed here take %d bytes, more than a control topic record carries (%d): the topic cannot flip with several instances", len(b), maxReadyBytes)
		}
	}
	if err != nil {
		r = readyRecord{Gen: p.gen, Error: err.Error()}
	}
	cf.mu.Lock()
	p.ok = err == nil
	cf.mu.Unlock()
	close(p.prepared)
	if ctx.Err() != nil {
		return // aborted meanwhile: no answer needed
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if perr := cf.st.put(pctx, stateRecord{readyKey(topic, p.gen, cf.self), r}); perr != nil {
		cf.log.Error("coordinated flip: ready not published; the driver aborts at max_hold", "topic", topic, "gen", p.gen, "error", perr)
	}
}

// driver says whether this instance drives, and the view it drives on.
func (cf *coordFlips) driver() ([]string, bool) {
	ids, ok := cf.view.memberIDs()
	if !ok || len(ids) == 0 || ids[0] != cf.self {
		return nil, false
	}
	return ids, true
}

// drive starts and decides flips when this instance is the driver.
func (cf *coordFlips) drive(ctx context.Context) {
	view, ok := cf.driver()
	if !ok {
		return
	}
	cf.mu.Lock()
	wanted := make(map[string]wantedFlip, len(cf.wanted))
	for t, w := range cf.wanted {
		wanted[t] = *w
	}
	cf.mu.Unlock()
	topics := map[string]bool{}
	for t := range wanted {
		topics[t] = true
	}
	for _, k := range cf.st.keys("flip/") {
		topics[strings.TrimPrefix(k, "flip/")] = true
	}
	for topic := range topics {
		var f flipRecord
		hasFlip, _ := cf.st.get(flipKey(topic), &f)
		_, done := cf.decision(topic, f.Gen)
		// The home after the decision: read before it, a decision
		// arriving in between left the home of the flip before, and a
		// new flip started from there (a split: its holders serve the
		// cluster the topic left).
		h := cf.home(topic)
		running := hasFlip && !done
		w, wants := wanted[topic]
		if running {
			if hb := cf.homeBefore(topic, f.Gen); hb != "" && hb != f.From {
				cf.abort(ctx, topic, f, fmt.Sprintf("started from the %s, but the topic's home is the %s (its driver read the state before the last decision)", f.From, hb))
				continue
			}
			cf.decide(ctx, topic, f, view, w, wants)
			continue
		}
		if !wants || w.tried {
			continue
		}
		home := h.Cluster
		if home == "" {
			home = w.from
		}
		if home == w.to {
			continue // flipped already (the local side catches up)
		}
		gen := max(h.Gen, f.Gen) + 1
		nf := flipRecord{Gen: gen, Phase: phaseHold, From: home, To: w.to, Members: view, Driver: cf.self, Started: time.Now()}
		cf.mu.Lock()
		if cw := cf.wanted[topic]; cw != nil && cw.to == w.to {
			cw.tried = true
		}
		cf.mu.Unlock()
		if err := cf.publish(ctx, stateRecord{flipKey(topic), nf}); err != nil {
			cf.log.Error("coordinated flip not started", "topic", topic, "error", err)
			continue
		}
		cf.log.Info("coordinated flip started", "topic", topic, "gen", gen, "from", home, "to", w.to, "members", view)
	}
}

// decide ends a running flip when it can: flipped once every member is
// ready, aborted on an error, a view change, max_hold or a config that no
// longer asks for it.
func (cf *coordFlips) decide(ctx context.Context, topic string, f flipRecord, view []string, w wantedFlip, wants bool) {
	abort := func(reason string) { cf.abort(ctx, topic, f, reason) }
	switch {
	case !slices.Equal(view, f.Members):
		abort(fmt.Sprintf("the instances changed during the hold: %v, now %v", f.Members, view))
		return
	case !wants || w.to != f.To:
		abort("the config no longer routes the topic to the " + f.To)
		return
	case time.Since(f.Started) > cf.maxHold():
		var missing []string
		for _, m := range f.Members {
			var r readyRecord
			if ok, _ := cf.st.get(readyKey(topic, f.Gen, m), &r); !ok || r.Gen != f.Gen {
				missing = append(missing, m)
			}
		}
		abort(fmt.Sprintf("cutover.max_hold (%s) passed; not ready: %v", cf.maxHold(), missing))
		return
	}
	var readies []readyRecord
	for _, m := range f.Members {
		var r readyRecord
		if ok, _ := cf.st.get(readyKey(topic, f.Gen, m), &r); !ok || r.Gen != f.Gen {
			return // not yet
		} else if r.Error != "" {
			abort(m + ": " + r.Error)
			return
		}
		readies = append(readies, r)
	}
	if reason := uncovered(readies); reason != "" {
		abort(reason)
		return
	}
	if c, ok := cf.local.(flipCopier); ok && c.copiesAtDecision(topic) {
		cf.copyThenDecide(ctx, c, topic, f, readies)
		return
	}
	cf.flipped(ctx, topic, f)
}

// copyThenDecide runs the subject's copy for flip f once (the loop comes
// back here until a decision), then decides: flipped, or aborted with the
// copy's error. Meanwhile decide still aborts on a view change or at
// max_hold; the copy's later decision then counts for nothing (the first
// one of a gen is the outcome).
func (cf *coordFlips) copyThenDecide(ctx context.Context, c flipCopier, topic string, f flipRecord, readies []readyRecord) {
	cf.mu.Lock()
	if g, ok := cf.copying[topic]; ok && g == f.Gen {
		cf.mu.Unlock()
		return
	}
	cf.copying[topic] = f.Gen
	cf.mu.Unlock()
	cf.copies.Add(1)
	go func() {
		defer cf.copies.Done()
		cctx, cancel := context.WithDeadline(ctx, f.Started.Add(cf.maxHold()))
		err := c.coordCopy(cctx, topic, f.From, f.To, readies)
		cancel()
		if ctx.Err() != nil {
			return // stopping: the next driver decides
		}
		if err != nil {
			cf.abort(ctx, topic, f, err.Error())
			return
		}
		cf.flipped(ctx, topic, f)
	}()
}

// flipped publishes flip f's decision flipped (the commit point, if it is
// the gen's first).
func (cf *coordFlips) flipped(ctx context.Context, topic string, f flipRecord) {
	// The commit point: the decision (the first one of this gen wins);
	// home and the flip's phase follow, for operators.
	now := time.Now()
	d := decisionRecord{Outcome: phaseFlipped, From: f.From, To: f.To, At: now}
	ff := f
	ff.Phase = phaseFlipped
	if err := cf.publish(ctx, stateRecord{decidedPrefix(topic, f.Gen) + cf.self, d},
		stateRecord{homeKey(topic), homeRecord{Cluster: f.To, Gen: f.Gen, FlippedAt: now}}, stateRecord{flipKey(topic), ff}); err != nil {
		cf.log.Error("coordinated flip: the flip was not published; it aborts at max_hold unless a retry publishes it", "topic", topic, "gen", f.Gen, "error", err)
		return
	}
	cf.prune(ctx, topic, f.Gen)
	cf.log.Info("coordinated flip: every instance ready; flipped", "topic", topic, "gen", f.Gen, "to", f.To, "hold", time.Since(f.Started).Round(time.Millisecond))
}

// abort publishes flip f's decision aborted (it counts if it is the
// gen's first).
func (cf *coordFlips) abort(ctx context.Context, topic string, f flipRecord, reason string) {
	cf.log.Warn("coordinated flip: aborting", "topic", topic, "gen", f.Gen, "reason", reason)
	af := f
	af.Phase, af.Reason = phaseAborted, reason
	d := decisionRecord{Outcome: phaseAborted, From: f.From, To: f.To, Reason: reason, At: time.Now()}
	if err := cf.publish(ctx, stateRecord{decidedPrefix(topic, f.Gen) + cf.self, d}, stateRecord{flipKey(topic), af}); err != nil {
		cf.log.Error("coordinated flip: the abort was not published", "topic", topic, "gen", f.Gen, "error", err)
		return
	}
	cf.prune(ctx, topic, f.Gen)
}

// prune tombstones the ready records of a topic's earlier flips that no
// instance reads any more once flip gen is decided (the control topic
// grew with every flip, each ready up to 900 KiB of maps): those of every
// earlier gen but the last two decided flipped, whose points restore
// rebuilds the home's maps and the maps of the cluster left from
// (coordFlips.restore). An aborted gen's readies are read by its driver
// only, before its decision; a flipped gen's by the instances committing
// it (end), which a later gen's start finds done: a member answers a
// newer flip only after ending the older one, and a driver starts a flip
// only once the last one was decided. Only an instance that missed two
// whole flips while serving would look for an older gen's points, and it
// would have been out of the membership for both (those flips' members
// were an unchanged view of ready instances).
func (cf *coordFlips) prune(ctx context.Context, topic string, gen int64) {
	keep := map[int64]bool{gen: true}
	flipped := cf.flippedGens(topic)
	for i := max(0, len(flipped)-2); i < len(flipped); i++ {
		keep[flipped[i]] = true
	}
	var recs []stateRecord
	for _, k := range cf.st.keys("ready/" + topic + "/") {
		g, _, ok := strings.Cut(strings.TrimPrefix(k, "ready/"+topic+"/"), "/")
		n, err := strconv.ParseInt(g, 10, 64)
		if ok && err == nil && n < gen && !keep[n] {
			recs = append(recs, stateRecord{k, nil})
		}
	}
	if len(recs) == 0 {
		return
	}
	if err := cf.publish(ctx, recs...); err != nil {
		cf.log.Warn("coordinated flip: the ready records of earlier flips were not deleted; the next decision tries again", "topic", topic, "records", len(recs), "error", err)
	}
}

// uncovered says why the members' flip points do not make every
// partition's sealed map ("" when they do): each member seals the
// partitions it leads in its view, and views that differed for a moment
// may leave a partition sealed by none (its copy never drained) or by two
// that disagree.
func uncovered(readies []readyRecord) string {
	var n int32
	for _, r := range readies {
		if n != 0 && r.Partitions != 0 && r.Partitions != n {
			return fmt.Sprintf("the members saw %d and %d partitions", n, r.Partitions)
		}
		n = max(n, r.Partitions)
	}
	seen := map[int32]flipPoint{}
	var missing []int32
	for _, r := range readies {
		for p, pt := range r.Points {
			if prev, ok := seen[p]; ok && !samePoint(prev, pt) {
				return fmt.Sprintf("partition %d was sealed by two instances at different points", p)
			}
			seen[p] = pt
		}
	}
	for p := range n {
		if _, ok := seen[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("partitions %v were sealed by no instance (the instances' views of their leaders differed)", missing)
	}
	return ""
}

// samePoint says whether two sealers of one partition agree on its flip.
func samePoint(a, b flipPoint) bool {
	fa, err1 := a.sealed()
	fb, err2 := b.sealed()
	if err1 != nil || err2 != nil || a.FromEnd != b.FromEnd {
		return false
	}
	va, ta := fa.FlipPoint()
	vb, tb := fb.FlipPoint()
	return va == vb && ta == tb
}

func (cf *coordFlips) publish(ctx context.Context, recs ...stateRecord) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cf.st.put(pctx, recs...)
}

// restore makes the home the control topic decided this instance's, for
// every topic whose latest flip was decided while this instance was down
// (or before it saved that flip's maps): the maps of every partition from
// the flip's points, and those of the cluster the topic left from the
// flip before (flipLocal.coordRestore). Called once the control topic was
// read to its end, before the controller starts and clients are served.
// Only topics replicated (the config's replicate) count: a control topic
// shared by mistake with another virtual cluster of the same cluster_id
// names topics this one does not copy.
func (cf *coordFlips) restore(replicated func(topic string) bool) {
	topics := map[string]bool{}
	for _, k := range cf.st.keys("decided/") {
		topic, _, _ := strings.Cut(strings.TrimPrefix(k, "decided/"), "/")
		_, group := subjectGroup(topic)
		topics[topic] = group || replicated(topic)
	}
	for topic, ok := range topics {
		if !ok {
			continue
		}
		gens := cf.flippedGens(topic)
		if len(gens) == 0 {
			continue
		}
		if _, group := subjectGroup(topic); group {
			// A group's home is its last move's destination; nothing
			// else to rebuild (offsets are virtual on both clusters).
			d, _ := cf.decision(topic, gens[len(gens)-1])
			if err := cf.local.coordRestore(topic, d.From, d.To, gens[len(gens)-1], nil, nil); err != nil {
				cf.log.Error("a group home from the control topic was not restored", "group", topic, "error", err)
			}
			continue
		}
		cf.local.coordMoves(topic, uint64(len(gens)))
		g := gens[len(gens)-1]
		d, _ := cf.decision(topic, g)
		points := cf.points(topic, g)
		if len(points) == 0 {
			continue // decided before flips carried their points
		}
		left := map[int32]flipPoint{} // none: the cluster left was the first home
		if len(gens) > 1 {
			if left = cf.points(topic, gens[len(gens)-2]); len(left) == 0 {
				left = nil // this instance's own, if any
			}
		}
		if err := cf.local.coordRestore(topic, d.From, d.To, g, points, left); err != nil {
			cf.log.Error("a flip decided while this instance was down: its maps were not rebuilt from the control topic; the topic is served on its home without them", "topic", topic, "gen", g, "home", d.To, "error", err)
		}
	}
}

// flippedGens lists a topic's flip gens decided flipped, ascending.
func (cf *coordFlips) flippedGens(topic string) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for _, k := range cf.st.keys("decided/" + topic + "/") {
		g, _, ok := strings.Cut(strings.TrimPrefix(k, "decided/"+topic+"/"), "/")
		n, err := strconv.ParseInt(g, 10, 64)
		if !ok || err != nil || seen[n] {
			continue
		}
		seen[n] = true
		if d, ok := cf.decision(topic, n); ok && d.Outcome == phaseFlipped {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// openCoordFlips opens the control topic on the control cluster and builds
// this instance's coordinator (group moves always, flips of replicated
// topics with replicate); start runs it.
func openCoordFlips(ctx context.Context, cfg *config.Config, log hclog.Logger, in *instances, cuts *cutovers, groups *groupMoves, replicated func(topic string) bool) (*coordFlips, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := openStateTopic(octx, log.Named("state"), StateTopicName(cfg.ClusterID), func(o ...kgo.Opt) (*kgo.Client, error) {
		return secure.Client(cfg, cfg.Control.Cluster, o...)
	})
	if err != nil {
		return nil, err
	}
	cf := newCoordFlips(log.Named("flips"), cfg.Instance.ID, st, in, coordSubjects{topics: cuts, groups: groups}, cuts.maxHold)
	if len(cfg.Replicate) > 0 {
		cuts.mu.Lock()
		cuts.coord, cuts.owns = cf, in.srv.LeadsInView
		cuts.mu.Unlock()
	}
	groups.mu.Lock()
	groups.coord = cf
	groups.mu.Unlock()
	cf.restore(replicated)
	return cf, nil
}
