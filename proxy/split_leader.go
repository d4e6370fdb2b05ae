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
// can tell which ones an answer left out.
type partsAsked struct {
	order []brokerRef
	asked map[brokerRef][]partKey
	open  map[brokerRef]map[partKey]int // still unanswered, by count (a client may repeat a partition)
}

// ask records that k was sent to ref.
func (a *partsAsked) ask(ref brokerRef, k partKey) {
	if a.asked == nil {
		a.asked, a.open = map[brokerRef][]partKey{}, map[brokerRef]map[partKey]int{}
	}
	if _, ok := a.asked[ref]; !ok {
		a.order = append(a.order, ref)
		a.open[ref] = map[partKey]int{}
	}
	a.asked[ref] = append(a.asked[ref], k)
	a.open[ref][k]++
}

// answered records that ref answered k; false means ref was not asked for
// k (or already answered it), and the entry is dropped.
func (a *partsAsked) answered(ref brokerRef, k partKey) bool {
	if a.open[ref][k] == 0 {
		return false
	}
	a.open[ref][k]--
	return true
}

// failed marks everything ref was asked as unanswered again (its answer is
// unusable as a whole).
func (a *partsAsked) failed(ref brokerRef) {
	open := map[partKey]int{}
	for _, k := range a.asked[ref] {
		open[k]++
	}
	a.open[ref] = open
}

// missing returns the partitions ref was asked for and did not answer, in
// request order, and marks them answered.
func (a *partsAsked) missing(ref brokerRef) []partKey {
	var out []partKey
	for _, k := range a.asked[ref] {
		if a.open[ref][k] > 0 {
			a.open[ref][k]--
			out = append(out, k)
		}
	}
	return out
}

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
		for _, tp := range topics {
			for _, p := range tp.parts {
				partition, code := api.answerKey(&p)
				if pl, ok := a.take(tp.topic, partition, code); ok {
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
	subs      map[brokerRef][]topicParts[P]
	plans     map[brokerRef]map[partKey]partPlan
	asked     partsAsked
	answers   []topicParts[A] // the merged answer, topics in first-seen order
}

func newLeaderSplit[P, A any](rc *reqCtx, errorPart func(partition int32, code int16) A) *leaderSplit[P, A] {
	return &leaderSplit[P, A]{rc: rc, look: newLeaderLookup(rc), errorPart: errorPart,
		subs: map[brokerRef][]topicParts[P]{}, plans: map[brokerRef]map[partKey]partPlan{}}
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
	k := partKey{topic: topic, partition: partition}
	ls.asked.ask(ref, k)
	if ls.plans[ref] == nil {
		ls.plans[ref] = map[partKey]partPlan{}
	}
	ls.plans[ref][k] = plan
	ts := ls.subs[ref]
	if n := len(ts); n == 0 || ts[n-1].topic != topic {
		ts = append(ts, topicParts[P]{topic: topic})
	}
	ts[len(ts)-1].parts = append(ts[len(ts)-1].parts, p)
	ls.subs[ref] = ts
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
	k := partKey{topic: topic, partition: partition}
	if !ls.asked.answered(ref, k) {
		return partPlan{}, false
	}
	return ls.plans[ref][k], true
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
		pend[i] = ls.rc.send(ref.cluster, ref.id, ref.addr, build(ls.subs[ref]))
	}
	for i, pd := range pend {
		ref := order[i]
		a := &splitAnswer{ls: ls, ref: ref}
		r, err := pd.response()
		if errors.Is(err, errUpstreamClosed) {
			// The connection was already dead (brokers close idle
			// ones): once more on a fresh one, as roundTrip does.
			r, err = ls.rc.send(ref.cluster, ref.id, ref.addr, build(ls.subs[ref])).response()
		}
		if err == nil {
			merge(a, r)
		} else {
			ls.asked.failed(ref)
		}
		for _, k := range ls.asked.missing(ref) {
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
