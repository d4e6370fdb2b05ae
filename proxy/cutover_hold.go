package proxy

// Produce hold for a topic's cutover. While a topic is held, its produce
// partitions are queued in arrival order (other topics of the same request,
// and other requests, keep flowing); the proxy tracks how many of the
// topic's produce sub-requests are still in flight upstream (until their
// broker answers, told by the upstream reader), so the cutover controller
// can wait until every acknowledged record is on the source before it
// freezes the end offsets; the wait is woken when the count reaches zero. Release sends the queue, in order, to
// the cluster the router names at that moment (the target after a flip, the
// source after an abort). Each client response still leaves in request
// order: a request's response waits for its held partitions.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// heldProduce is the held part of one produce request.
type heldProduce struct {
	rc    *reqCtx
	req   *kmsg.ProduceRequest // topics/partitions of the held topic only; records copied
	done  chan struct{}
	parts []kmsg.ProduceResponseTopicPartition // filled at release
}

type topicHold struct {
	queue []*heldProduce
	since time.Time
	from  string // the topic's produce cluster when the hold began
	// refuse: the hold answers what it queues NOT_LEADER_FOR_PARTITION
	// at once (RefuseHeld) and stays until released.
	refuse bool
}

// holds is the proxy's hold and in-flight state.
type holds struct {
	mu       sync.Mutex // guards held and unanswered
	held     map[string]*topicHold
	inflight sync.Map // topic -> *flight, replicated topics only
	// unanswered: idempotent batches whose upstream answer was lost, each
	// counted in its topic's flight until settled (produce_unanswered.go);
	// nUnanswered is its size, read without the lock on the hot path.
	unanswered  map[batchKey]*unansweredEntry
	nUnanswered atomic.Int64
	// onUnanswered counts and logs their outcomes (set by NewServer); it
	// runs under mu.
	onUnanswered func(outcome string, k batchKey, cluster string)
}

// flight counts a replicated topic's produce sub-requests sent (or about
// to be sent) upstream and not yet answered, and wakes WaitProduceIdle when
// the count reaches zero: the drain is signalled, not polled.
type flight struct {
	n    atomic.Int64
	mu   sync.Mutex    // guards idle
	idle chan struct{} // closed when n reaches zero; nil while nobody waits
}

func (f *flight) add(d int64) {
	if f.n.Add(d) != 0 {
		return
	}
	f.mu.Lock()
	if f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
	f.mu.Unlock()
}

// wait returns once the count is zero.
func (f *flight) wait(ctx context.Context) error {
	for {
		f.mu.Lock()
		if f.n.Load() == 0 {
			f.mu.Unlock()
			return nil
		}
		if f.idle == nil {
			f.idle = make(chan struct{})
		}
		idle := f.idle
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle:
		}
	}
}

func (h *holds) counter(topic string) *flight {
	if c, ok := h.inflight.Load(topic); ok {
		return c.(*flight)
	}
	c, _ := h.inflight.LoadOrStore(topic, new(flight))
	return c.(*flight)
}

// flightRelease ends one produce request's in-flight counts (its
// replicated topics, each counted once) when the last of its upstream
// calls is answered, on the upstream reader: a cutover waits for the
// broker's answers, not for the client's response, which may wait in the
// connection's response order behind a held request (a held topic's
// request, or the requests after it). left starts at 1 for the handler,
// which drops it once every call is sent.
type flightRelease struct {
	h     *holds
	names []string
	left  atomic.Int32
}

func newFlightRelease(h *holds, names []string) *flightRelease {
	r := &flightRelease{h: h, names: names}
	r.left.Store(1)
	return r
}

// sending notes one more call to wait for; answered (answerWatcher) ends it.
func (r *flightRelease) sending() { r.left.Add(1) }

func (r *flightRelease) answered(error) {
	if r.left.Add(-1) != 0 {
		return
	}
	for _, name := range r.names {
		r.h.counter(name).add(-1)
	}
}

// flightOne ends one call's count in a topic's flight.
type flightOne struct{ f *flight }

func (o flightOne) answered(error) { o.f.add(-1) }

// isHeld reports whether topic's produce requests are being queued.
func (h *holds) isHeld(topic string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.held[topic]
	return ok
}

// enqueue queues a held request part; false when the topic is not held
// (any more), so the caller sends it normally.
func (h *holds) enqueue(topic string, hp *heldProduce) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	th, ok := h.held[topic]
	if !ok {
		return false
	}
	if th.refuse {
		hp.refuse()
		return true
	}
	th.queue = append(th.queue, hp)
	return true
}

// refuse answers a held part NOT_LEADER_FOR_PARTITION without sending it.
func (hp *heldProduce) refuse() {
	for _, t := range hp.req.Topics {
		for _, p := range t.Partitions {
			hp.parts = append(hp.parts, producePartitionError(p.Partition, kerr.NotLeaderForPartition.Code))
		}
	}
	close(hp.done)
}

// HoldProduce starts queueing topic's produce requests.
func (s *Server) HoldProduce(topic string) {
	s.holds.mu.Lock()
	defer s.holds.mu.Unlock()
	if _, ok := s.holds.held[topic]; !ok {
		s.holds.held[topic] = &topicHold{since: time.Now(), from: s.routes().ProduceCluster(topic, "")}
	}
}

// HeldCount is how many produce requests wait in topic's hold.
func (s *Server) HeldCount(topic string) int {
	s.holds.mu.Lock()
	defer s.holds.mu.Unlock()
	if th, ok := s.holds.held[topic]; ok {
		return len(th.queue)
	}
	return 0
}

// WaitProduceIdle waits until no produce sub-request for topic is in flight
// upstream (every one sent before the hold was answered by its broker).
func (s *Server) WaitProduceIdle(ctx context.Context, topic string) error {
	c := s.holds.counter(topic)
	if err := c.wait(ctx); err != nil {
		if u := s.holds.unansweredIn(topic); u != "" {
			return fmt.Errorf("%d produce requests for %s still in flight (%s): %w", c.n.Load(), topic, u, err)
		}
		return fmt.Errorf("%d produce requests for %s still in flight: %w", c.n.Load(), topic, err)
	}
	return nil
}

// ReleaseProduce ends topic's hold: the queued requests go, in arrival
// order, to the cluster the current router names for the topic.
//
// The hold is removed only once its queue is empty: requests that arrive
// while the queue is being sent join the queue, so none can overtake a held
// one (an idempotent producer's later sequence reaching the broker first is
// OUT_OF_ORDER_SEQUENCE_NUMBER, and the client's recovery resends batches).
func (s *Server) ReleaseProduce(topic string) {
	s.holds.mu.Lock()
	if th, ok := s.holds.held[topic]; ok && th.from != s.routes().ProduceCluster(topic, "") {
		// The topic moved: its idempotent producers get fresh upstream
		// sessions for it (ident_pid.go), also on a cluster they wrote
		// it to before (a rollback), where the old session's sequences
		// stopped at the first flip.
		s.pids.moveTopic(topic)
		// Batches whose answer from the old home was lost are judged
		// by the resend rule from now on (produce_unanswered.go).
		s.holds.movedOffLocked(topic, th.from)
	}
	s.holds.mu.Unlock()
	for {
		s.holds.mu.Lock()
		th, ok := s.holds.held[topic]
		if !ok {
			s.holds.mu.Unlock()
			return
		}
		queue := th.queue
		th.queue = nil
		if len(queue) == 0 {
			delete(s.holds.held, topic)
			s.holds.mu.Unlock()
			// The old home's reads are not capped any more: after a
			// flip they go to the new home, after an abort the topic
			// stays (cutover_fetch_cap.go).
			s.fetchCaps.Delete(topic)
			return
		}
		s.holds.mu.Unlock()
		s.sendHeld(topic, queue)
	}
}

// sendHeld sends queued requests in order and collects their answers.
func (s *Server) sendHeld(topic string, queue []*heldProduce) {
	th := &topicHold{queue: queue}
	// Sends happen here, in order; each request's wait collects its answer.
	type sent struct {
		hp   *heldProduce
		pend []*pending
		refs []brokerRef
		subs []*kmsg.ProduceRequest
		// notes: each sub's partitions as counted sent (topic_stats.go),
		// settled when its answer comes
		notes [][]produceNote
	}
	var all []sent
	for _, hp := range th.queue {
		rc := hp.rc
		router := s.routes()
		look := newLeaderLookup(rc)
		subs := map[brokerRef]*kmsg.ProduceRequest{}
		notes := map[brokerRef][]produceNote{}
		keys := map[brokerRef][]batchKey{} // produce_unanswered.go
		keyed := hp.req.Acks != 0 && router.Replicated(topic)
		ts := s.topicStats(topic)
		var order []brokerRef
		for _, t := range hp.req.Topics {
			cluster := router.ProduceCluster(topic, rc.client)
			virtualID := t.TopicID
			for _, p := range t.Partitions {
				// The key is read before any producer id rewrite.
				k, isKeyed := batchKey{}, false
				if keyed {
					k, isKeyed = batchKeyOf(topic, p.Partition, p.Records)
				}
				// A batch the old home already has goes there
				// (ident_pid_resend.go): after a crash, the hold of
				// the restarted kproxy's cutover queues the resends.
				pc, resent, code := rc.routeResend(cluster, topic, p.Partition, p.Records, false)
				ref := brokerRef{}
				if code == 0 {
					ref, code = look.find(pc, topic, p.Partition)
				}
				if code == 0 && resent {
					// Its answer goes through the old home's map
					// (finishProducePartition): one not ready yet is a
					// retriable error, never an untranslated offset.
					_, code = s.offsetsPlan(pc, topic, p.Partition, false)
				}
				if code == 0 && hp.req.Version >= 13 {
					if _, up, ok := s.upstreamTopicID(pc, virtualID); ok {
						t.TopicID = up
					} else {
						code = kerr.UnknownTopicID.Code
					}
				}
				if code == 0 && !resent {
					code = rc.rewriteProducerIDAt(pc, txnPartition{topic, p.Partition}, p.Records)
				}
				if code != 0 {
					hp.parts = append(hp.parts, producePartitionError(p.Partition, code))
					continue
				}
				sub, ok := subs[ref]
				if !ok {
					sub = &kmsg.ProduceRequest{Version: hp.req.Version, TransactionID: hp.req.TransactionID, Acks: hp.req.Acks, TimeoutMillis: hp.req.TimeoutMillis}
					subs[ref] = sub
					order = append(order, ref)
				}
				st := lastProduceTopic(sub, t)
				st.Partitions = append(st.Partitions, p)
				notes[ref] = append(notes[ref], ts.noteProduce(pc, p.Partition, p.Records, false))
				if isKeyed {
					keys[ref] = append(keys[ref], k)
				}
			}
		}
		st := sent{hp: hp}
		for _, ref := range order {
			if hp.req.Acks == 0 {
				for _, n := range notes[ref] {
					n.unacked()
				}
				if u, err := rc.cc.upstream(ref.cluster, ref.id, ref.addr, classProduce); err == nil {
					_, _ = u.send(subs[ref], rc.clientID, false)
				}
				continue
			}
			// Released requests count in flight too, until their broker
			// answers: a later drain of the topic (an abort's release
			// to the old home, then a new attempt) must wait for them.
			c := s.holds.counter(topic)
			c.add(1)
			var w answerWatcher = flightOne{c}
			if len(keys[ref]) > 0 {
				w = &producedBatches{h: &s.holds, cluster: ref.cluster, keys: keys[ref], flights: w}
			}
			st.pend = append(st.pend, rc.sendWatched(ref.cluster, ref.id, ref.addr, subs[ref], false, w))
			st.refs = append(st.refs, ref)
			st.subs = append(st.subs, subs[ref])
			st.notes = append(st.notes, notes[ref])
		}
		all = append(all, st)
	}
	go func() {
		for _, st := range all {
			for i, p := range st.pend {
				r, err := p.response()
				for _, n := range st.notes[i] {
					n.settle()
				}
				if err != nil {
					for _, t := range st.subs[i].Topics {
						for _, pp := range t.Partitions {
							st.hp.parts = append(st.hp.parts, producePartitionError(pp.Partition, kerr.NotLeaderForPartition.Code))
						}
					}
					continue
				}
				pr := r.(*kmsg.ProduceResponse)
				for _, t := range pr.Topics {
					for _, pp := range t.Partitions {
						s.finishProducePartition(st.refs[i].cluster, topic, &pp)
						st.hp.parts = append(st.hp.parts, pp)
					}
				}
			}
			close(st.hp.done)
		}
	}()
}

// finishProducePartition rewrites one upstream answer to a held produce
// for a client (virt.go), with the offset map of the cluster it was
// released to.
func (s *Server) finishProducePartition(cluster, topic string, pp *kmsg.ProduceResponseTopicPartition) {
	m, _ := s.offsetMapState(cluster, topic, pp.Partition)
	s.virtProducePartition(partPlan{cluster: cluster, offsets: m}, pp)
}

// errHoldTimeout is what a held request answers if nobody released it.
var errHoldTimeout = errors.New("produce hold was never released")

// waitHeld waits for a held part's answer, bounded so a controller bug
// cannot wedge a client forever.
func (hp *heldProduce) wait(limit time.Duration) error {
	select {
	case <-hp.done:
		return nil
	case <-time.After(limit):
		return errHoldTimeout
	}
}

// RefuseHeld answers topic's held produce requests, and those that arrive
// from now on, NOT_LEADER_FOR_PARTITION without sending them anywhere; the
// clients retry (on another instance). The topic stays held. For an
// instance that stops while a coordinated flip it takes part in is
// undecided: it cannot know which cluster will be the topic's home, so it
// writes the records to neither, and its held requests do not keep its
// connections from closing.
func (s *Server) RefuseHeld(topic string) {
	s.holds.mu.Lock()
	th, ok := s.holds.held[topic]
	var queue []*heldProduce
	if ok {
		th.refuse = true
		queue, th.queue = th.queue, nil
	}
	s.holds.mu.Unlock()
	for _, hp := range queue {
		hp.refuse()
	}
}
