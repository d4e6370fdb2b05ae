package proxy

// Split-by-leader requests: APIs that address partitions (Produce, Fetch,
// ListOffsets, OffsetForLeaderEpoch, DeleteRecords, DescribeProducers) are
// split into one sub-request per upstream partition leader and the answers
// merged. The rule every merge keeps: each partition the client asked for is
// answered, by its upstream answer or by a Kafka error code. A leader that
// failed, or answered without a partition it was asked for, gives each of
// those partitions NOT_LEADER_FOR_PARTITION (retriable: the client refreshes
// metadata and retries, and kproxy refreshes its own leader view).
//
// partsAsked is the bookkeeping Produce and Fetch use (they build their own
// sub-requests: raw passthrough, fetch sessions). The others (ListOffsets,
// OffsetForLeaderEpoch, DeleteRecords, DescribeProducers) are one
// forwardByLeader each: the handler only says, in a byLeader, how its API's
// request and answers read and which translation steps (virt_*.go) apply.

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partKey names a partition in a sub-request as the upstream sees it: by
// name, or by the cluster's topic id (Produce v13, Fetch v13+).
type partKey struct {
	topic     string
	id        [16]byte
	partition int32
}

// partsAsked records which partitions were sent to which leader, so a merge
// can tell which ones an answer left out. It is slices, not maps: it is
// on every Produce and Fetch, and a map per leader cost a dozen
// allocations per request (bench/RESULTS.md, "Data path in-process").
// Callers keep per-entry data (plans) in slices indexed by the entry ask
// returns.
type partsAsked struct {
	order []brokerRef // the leaders, in first-asked order
	parts []askedPart // every entry sent, in request order
	next  []int       // per leader: the entry its next answer is looked for at first
}

// askedPart is one partition entry sent to order[leader].
type askedPart struct {
	leader int
	key    partKey
	open   bool // not answered yet
}

// ask records that k was sent to ref. It returns ref's index in order and
// the entry's index in parts.
func (a *partsAsked) ask(ref brokerRef, k partKey) (leader, entry int) {
	leader = a.leaderOf(ref)
	if leader < 0 {
		leader = len(a.order)
		a.order = append(a.order, ref)
		a.next = append(a.next, len(a.parts))
	}
	a.parts = append(a.parts, askedPart{leader: leader, key: k, open: true})
	return leader, len(a.parts) - 1
}

// reset empties a for a request of n entries, keeping its arrays (a
// handler that reuses it from one request to the next).
func (a *partsAsked) reset(n int) {
	clear(a.order) // drop the brokers' strings
	a.order, a.next = a.order[:0], a.next[:0]
	if cap(a.parts) < n {
		a.parts = make([]askedPart, 0, n)
	}
	a.parts = a.parts[:0]
}

// leaderOf is ref's index in order, or -1. Requests span few leaders: a
// scan is cheaper than a map.
func (a *partsAsked) leaderOf(ref brokerRef) int {
	for i := len(a.order) - 1; i >= 0; i-- {
		if a.order[i] == ref {
			return i
		}
	}
	return -1
}

// answered records that ref answered k and returns the entry; false means
// ref was not asked for k (or already answered it), and the answer's entry
// is dropped. Brokers answer in request order, so the search starts after
// the leader's last answered entry and usually ends there.
func (a *partsAsked) answered(ref brokerRef, k partKey) (int, bool) {
	leader := a.leaderOf(ref)
	if leader < 0 {
		return 0, false
	}
	from := a.next[leader]
	for _, span := range [2][2]int{{from, len(a.parts)}, {0, from}} {
		for i := span[0]; i < span[1]; i++ {
			if p := &a.parts[i]; p.open && p.leader == leader && p.key == k {
				p.open = false
				a.next[leader] = i + 1
				return i, true
			}
		}
	}
	return 0, false
}

// failed marks everything ref was asked as unanswered again (its answer is
// unusable as a whole).
func (a *partsAsked) failed(ref brokerRef) {
	leader := a.leaderOf(ref)
	for i := range a.parts {
		if a.parts[i].leader == leader {
			a.parts[i].open = true
		}
	}
}

// missing returns the entries ref was asked for and did not answer, in
// request order, and marks them answered.
func (a *partsAsked) missing(ref brokerRef) []int {
	leader := a.leaderOf(ref)
	var out []int
	for i := range a.parts {
		if p := &a.parts[i]; p.open && p.leader == leader {
			p.open = false
			out = append(out, i)
		}
	}
	return out
}

// key is the partition of entry e.
func (a *partsAsked) key(e int) partKey { return a.parts[e].key }

// topicParts is one topic's entries in a request or an answer.
type topicParts[P any] struct {
	topic string
	parts []P
}

// topicsOf reads a kmsg request's or answer's topics (T) as topicParts;
// read names a topic and its partitions.
func topicsOf[T, P any](topics []T, read func(t T) (string, []P)) []topicParts[P] {
	out := make([]topicParts[P], 0, len(topics))
	for _, t := range topics {
		name, parts := read(t)
		out = append(out, topicParts[P]{topic: name, parts: parts})
	}
	return out
}

// kmsgTopics is the reverse of topicsOf: build makes one kmsg topic. No
// topics give nil, as appending to an empty kmsg list would.
func kmsgTopics[T, P any](topics []topicParts[P], build func(topic string, parts []P) T) []T {
	var out []T
	for _, tp := range topics {
		out = append(out, build(tp.topic, tp.parts))
	}
	return out
}

// leaderRoute is where one topic's partitions go: the cluster, and whether
// reading there reads the replicated copy (offsetsPlan). refused, when not
// 0, answers every partition of the topic with that code instead.
type leaderRoute struct {
	cluster   string
	readsCopy bool
	refused   int16
}

// readRoute routes a topic as its consumers read it: its fetch route,
// through the copy's offset map when the topic is replicated.
func readRoute(rc *reqCtx, router Router, topic string) leaderRoute {
	return leaderRoute{cluster: router.FetchCluster(topic, rc.client, rc.group(topic)), readsCopy: router.Replicated(topic)}
}

// writeRoute routes a topic as its producers write it: its produce route.
func writeRoute(rc *reqCtx, router Router, topic string) leaderRoute {
	return leaderRoute{cluster: router.ProduceCluster(topic, rc.client)}
}

// byLeader is one split-by-leader API as forwardByLeader needs it: P is a
// request partition entry, A an answer partition.
type byLeader[P, A any] struct {
	route     func(rc *reqCtx, router Router, topic string) leaderRoute
	topics    []topicParts[P] // the request's, in request order
	partition func(p P) int32 // the partition an entry names
	// toUpstream is the request-side translation step (nil: none).
	toUpstream func(pl partPlan, p *P)
	// errorPart is an answer partition carrying only an error code.
	errorPart func(partition int32, code int16) A
	// subRequest is the request for one leader, with that leader's entries.
	subRequest func(topics []topicParts[P]) kmsg.Request
	// answer reads one leader's answer.
	answer    func(r kmsg.Response) (topics []topicParts[A], throttle int32)
	answerKey func(a *A) (partition int32, code int16)
	// toClient is the response-side translation step.
	toClient func(pl partPlan, a *A)
	// respond builds the client's response from the merged answer.
	respond func(topics []topicParts[A], throttle int32) kmsg.Response
}

// forwardByLeader plans each requested partition (its topic's route, then
// offsetsPlan: a partition that cannot be served is answered with an error
// code at once), splits the rest by upstream leader, sends one sub-request
// per leader and merges the answers through the API's translation steps,
// every requested partition answered. The throttle is the longest any
// leader asked for.
func forwardByLeader[P, A any](rc *reqCtx, api byLeader[P, A]) kmsg.Response {
	s := rc.srv()
	router := s.routes()
	// Before any plan: a cap set after this load makes the answers plan
	// their partitions again (replanAfterCap).
	capGen := s.capGen.Load()
	split := newLeaderSplit[P](rc, api.errorPart)
	for _, t := range api.topics {
		route := api.route(rc, router, t.topic)
		for _, p := range t.parts {
			partition := api.partition(p)
			if route.refused != 0 {
				split.fail(t.topic, partition, route.refused)
				continue
			}
			pl, code := s.offsetsPlan(route.cluster, t.topic, partition, route.readsCopy)
			if code != 0 {
				split.fail(t.topic, partition, code)
				continue
			}
			if api.toUpstream != nil {
				api.toUpstream(pl, &p)
			}
			split.add(pl, t.topic, partition, p)
		}
	}
	var throttle int32
	merged := split.run(api.subRequest, func(a *splitAnswer, r kmsg.Response) {
		topics, t := api.answer(r)
		throttle = max(throttle, t)
		replan := s.capGen.Load() != capGen
		for _, tp := range topics {
			for _, p := range tp.parts {
				partition, code := api.answerKey(&p)
				if pl, ok := a.take(tp.topic, partition, code); ok {
					if replan && code == 0 {
						if pl, code = s.replanAfterCap(tp.topic, partition, pl); code != 0 {
							split.answer(tp.topic, api.errorPart(partition, code))
							continue
						}
					}
					api.toClient(pl, &p)
					split.answer(tp.topic, p)
				}
			}
		}
	})
	return api.respond(merged, throttle)
}

// leaderSplit splits one request's partition entries (P) by upstream
// leader, keeping request order, sends the sub-requests together, and
// merges the answer partitions (A) so that every entry is answered.
type leaderSplit[P, A any] struct {
	rc        *reqCtx
	look      *leaderLookup
	errorPart func(partition int32, code int16) A // an answer partition carrying an error
	subs      [][]topicParts[P]                   // by leader (asked.order)
	plans     []partPlan                          // by entry (asked.parts)
	asked     partsAsked
	answers   []topicParts[A] // the merged answer, topics in first-seen order
}

func newLeaderSplit[P, A any](rc *reqCtx, errorPart func(partition int32, code int16) A) *leaderSplit[P, A] {
	return &leaderSplit[P, A]{rc: rc, look: newLeaderLookup(rc), errorPart: errorPart}
}

// add files entry p for topic/partition under its leader on plan.cluster,
// with the plan its answer is translated by; without a leader the
// partition is answered with the lookup's error at once.
func (ls *leaderSplit[P, A]) add(plan partPlan, topic string, partition int32, p P) {
	ref, code := ls.look.find(plan.cluster, topic, partition)
	if code != 0 {
		ls.fail(topic, partition, code)
		return
	}
	leader, _ := ls.asked.ask(ref, partKey{topic: topic, partition: partition})
	ls.plans = append(ls.plans, plan)
	if leader == len(ls.subs) {
		ls.subs = append(ls.subs, nil)
	}
	ts := ls.subs[leader]
	if n := len(ts); n == 0 || ts[n-1].topic != topic {
		ts = append(ts, topicParts[P]{topic: topic})
	}
	ts[len(ts)-1].parts = append(ts[len(ts)-1].parts, p)
	ls.subs[leader] = ts
}

// fail answers a partition with an error code (nothing is sent for it).
func (ls *leaderSplit[P, A]) fail(topic string, partition int32, code int16) {
	ls.answer(topic, ls.errorPart(partition, code))
}

// answer adds a partition to the merged answer.
func (ls *leaderSplit[P, A]) answer(topic string, a A) {
	for i := range ls.answers {
		if ls.answers[i].topic == topic {
			ls.answers[i].parts = append(ls.answers[i].parts, a)
			return
		}
	}
	ls.answers = append(ls.answers, topicParts[A]{topic: topic, parts: []A{a}})
}

// splitAnswer is one upstream answer being merged.
type splitAnswer struct {
	ls interface {
		take(ref brokerRef, topic string, partition int32) (partPlan, bool)
	}
	ref   brokerRef
	stale []string
}

// take returns the plan of a partition in the answer, or false when the
// leader was not asked for it (the entry must be dropped). An upstream
// error that means kproxy's leader view is stale refreshes it.
func (a *splitAnswer) take(topic string, partition int32, code int16) (partPlan, bool) {
	if isStaleLeaderCode(code) {
		a.stale = append(a.stale, topic)
	}
	return a.ls.take(a.ref, topic, partition)
}

func (ls *leaderSplit[P, A]) take(ref brokerRef, topic string, partition int32) (partPlan, bool) {
	e, ok := ls.asked.answered(ref, partKey{topic: topic, partition: partition})
	if !ok {
		return partPlan{}, false
	}
	return ls.plans[e], true
}

// run sends one sub-request per leader (build makes it from that leader's
// entries) and hands each answer to merge, which translates the partitions
// it takes and adds them (answer). Whatever a leader did not answer is
// failed with NOT_LEADER_FOR_PARTITION. It returns the merged answer's
// topics, for forwardByLeader to hand to the API's respond.
func (ls *leaderSplit[P, A]) run(build func(topics []topicParts[P]) kmsg.Request, merge func(a *splitAnswer, r kmsg.Response)) []topicParts[A] {
	s := ls.rc.srv()
	order := ls.asked.order
	pend := make([]*pending, len(order))
	for i, ref := range order {
		pend[i] = ls.rc.send(ref.cluster, ref.id, ref.addr, build(ls.subs[i]))
	}
	for i, pd := range pend {
		ref := order[i]
		a := &splitAnswer{ls: ls, ref: ref}
		r, err := pd.response()
		if errors.Is(err, errUpstreamClosed) {
			// The connection was already dead (brokers close idle
			// ones): once more on a fresh one, as roundTrip does.
			r, err = ls.rc.send(ref.cluster, ref.id, ref.addr, build(ls.subs[i])).response()
		}
		if err == nil {
			merge(a, r)
		} else {
			ls.asked.failed(ref)
		}
		for _, e := range ls.asked.missing(ref) {
			k := ls.asked.key(e)
			ls.fail(k.topic, k.partition, kerr.NotLeaderForPartition.Code)
			a.stale = append(a.stale, k.topic)
		}
		s.refreshSoon(ref.cluster, dedupe(a.stale))
	}
	return ls.answers
}

// dedupe drops repeated names, keeping order.
func dedupe(names []string) []string {
	if len(names) < 2 {
		return names
	}
	seen := map[string]bool{}
	out := names[:0:0]
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
