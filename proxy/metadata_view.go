package proxy

// Metadata listings from a cached view (issue 15 item 6). A full Metadata
// (every topic) at 10,000 partitions cost kproxy an upstream listing per
// request, its decoding, the translation of every partition and the
// encoding of the answer: 1.8 times the direct request. Each cluster now
// keeps its listing translated (the same virt.go steps a forwarded answer
// goes through), and a listing request is answered from those views:
//
//   - A view comes from kproxy's own full refresh (uc.refresh with no topic
//     list: at connect, and in the background while listings are asked for
//     and the view is older than viewFresh), and is patched by the partial
//     refreshes kproxy already makes (refresh.go's coalesced ones after
//     stale-leader errors, the split-route check's). A refresh whose
//     translated topics equal the view's keeps the view, its generation and
//     the answers encoded from it; only its age restarts.
//   - A view is not used for a listing when it is older than viewMaxAge,
//     when its cluster's last refresh failed, when CreateTopics,
//     DeleteTopics or CreatePartitions went through kproxy since it was
//     fetched (markStale), or when the routes changed since (a flip may
//     route a topic to a cluster whose view predates the topic): that
//     cluster is asked as before, and a refresh is started.
//   - The answer is merged exactly as a forwarded one (03_metadata.go): per
//     topic the client's own fetch route, the split-route check, the
//     sort. Named-topic requests are forwarded as before: they are small,
//     and a forward is always current.
//   - Encoded answers are shared between requests (sharedAnswers) when
//     nothing about the connection changes them: every cluster answered
//     from its view, no topic named by an unknown id, no policy filter on
//     the connection, and for each topic that has a canary the client's
//     route is the base route. A canary that selects by group depends on
//     the connection's group membership (group_membership.go), so those
//     topics are checked on every request; any difference and the answer
//     is built for that request alone.
//
// Staleness: a change made on a cluster directly (not through kproxy) shows
// in listings within viewMaxAge, and within about viewFresh plus one
// refresh while listings keep coming (a broker's own clients cache
// metadata for minutes). docs/translation.md says so.

import (
	"cmp"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// viewFresh: a listing answered from an older view starts a refresh.
	viewFresh = time.Second
	// viewMaxAge: an older view answers no listing (its cluster is asked).
	viewMaxAge = 5 * time.Second
	// viewMinVersion: older requests are forwarded. Brokers answer v0
	// with REPLICA_NOT_AVAILABLE for partitions with an offline replica and
	// v1-5 with LEADER_NOT_AVAILABLE where v6+ says LISTENER_NOT_FOUND;
	// the view is fetched at kproxy's own (newest) version.
	viewMinVersion = 6
	// maxSharedAnswers bounds the encoded answers kept (a listing of
	// 10,000 partitions is about 2.6 MB).
	maxSharedAnswers = 8
)

// mdView is one cluster's translated listing. Never modified once
// installed: answers alias its topics' partitions.
type mdView struct {
	topics   map[string]*kmsg.MetadataResponseTopic
	complete bool      // from a full listing, nothing marked stale since
	fetched  time.Time // when the listing it was built from was asked
	gen      uint64    // changes whenever topics or complete do
}

// viewHolder keeps a cluster's current view.
type viewHolder struct {
	// translate applies virt.go's Metadata steps to an upstream topic;
	// prepare assigns the virtual ids of many topics at once (one write
	// of topic-ids.json, not one per topic). Set by New.
	translate func(*kmsg.MetadataResponseTopic)
	prepare   func(names []string)
	// refresh runs a full refresh (set by New).
	refresh func()

	cur        atomic.Pointer[mdView]
	refreshing atomic.Bool

	mu    sync.Mutex // serializes installs
	dirty uint64     // bumped by markStale and drop
	gen   uint64
}

func (h *viewHolder) load() *mdView { return h.cur.Load() }

// dirtySeq is taken when a refresh is asked; learn installs its answer
// only if nothing was marked stale meanwhile.
func (h *viewHolder) dirtySeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dirty
}

// drop forgets the view (its cluster's refresh failed).
func (h *viewHolder) drop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dirty++
	h.cur.Store(nil)
}

// markStale takes topics out of the view and makes it incomplete: they
// changed through kproxy (created, deleted, grown), so listings ask the
// cluster until a full refresh that started afterwards is in.
func (h *viewHolder) markStale(topics []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dirty++
	old := h.cur.Load()
	if old == nil {
		return
	}
	nv := &mdView{topics: make(map[string]*kmsg.MetadataResponseTopic, len(old.topics)), fetched: old.fetched}
	for n, t := range old.topics {
		nv.topics[n] = t
	}
	for _, n := range topics {
		delete(nv.topics, n)
	}
	h.gen++
	nv.gen = h.gen
	h.cur.Store(nv)
}

// learn takes an answer to kproxy's own Metadata request for asked (nil:
// every topic) into the view, seq being dirtySeq when it was asked.
func (h *viewHolder) learn(asked []string, resp *kmsg.MetadataResponse, seq uint64, when time.Time) {
	if h.translate == nil || (asked != nil && len(asked) == 0) {
		return // brokers only
	}
	full := asked == nil
	if !full && h.load() == nil {
		return // nothing to patch
	}
	fresh := make(map[string]*kmsg.MetadataResponseTopic, len(resp.Topics))
	var names []string
	for i := range resp.Topics {
		if t := &resp.Topics[i]; t.Topic != nil && t.TopicID != ([16]byte{}) {
			names = append(names, *t.Topic)
		}
	}
	if h.prepare != nil && len(names) > 0 {
		h.prepare(names)
	}
	for i := range resp.Topics {
		t := resp.Topics[i]
		if t.Topic == nil {
			continue
		}
		h.translate(&t)
		// By partition index, as Kafka lists them: an upstream that
		// lists them in another order each time (kfake) must not make
		// every refresh look like a change.
		slices.SortFunc(t.Partitions, func(a, b kmsg.MetadataResponseTopicPartition) int { return cmp.Compare(a.Partition, b.Partition) })
		fresh[*t.Topic] = &t
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dirty != seq {
		return // marked stale while this was asked: the next refresh installs
	}
	old := h.cur.Load()
	if full {
		if old != nil && old.complete && sameTopics(old.topics, fresh) {
			// Nothing changed: keep the view, its generation and the
			// answers encoded from it; only the age restarts.
			h.cur.Store(&mdView{topics: old.topics, complete: true, fetched: when, gen: old.gen})
			return
		}
		h.gen++
		h.cur.Store(&mdView{topics: fresh, complete: true, fetched: when, gen: h.gen})
		return
	}
	if old == nil {
		return
	}
	var nv *mdView
	for _, name := range asked {
		nt, answered := fresh[name]
		ot, had := old.topics[name]
		gone := answered && nt.ErrorCode == kerr.UnknownTopicOrPartition.Code
		switch {
		case !answered:
			continue
		case gone && !had:
			continue
		case !gone && had && reflect.DeepEqual(ot, nt):
			continue
		}
		if nv == nil {
			nv = &mdView{topics: make(map[string]*kmsg.MetadataResponseTopic, len(old.topics)+1), complete: old.complete, fetched: old.fetched}
			for n, t := range old.topics {
				nv.topics[n] = t
			}
		}
		if gone {
			delete(nv.topics, name)
		} else {
			nv.topics[name] = nt
		}
	}
	if nv == nil {
		return // the patch changed nothing: keep the view and its answers
	}
	h.gen++
	nv.gen = h.gen
	h.cur.Store(nv)
}

// sameTopics says whether two translated listings are equal, field by field.
func sameTopics(a, b map[string]*kmsg.MetadataResponseTopic) bool {
	if len(a) != len(b) {
		return false
	}
	for n, ta := range a {
		tb, ok := b[n]
		if !ok || !reflect.DeepEqual(ta, tb) {
			return false
		}
	}
	return true
}

// refreshIfOlder starts a full background refresh when the view is
// missing, incomplete or older than age (one at a time per cluster).
func (h *viewHolder) refreshIfOlder(age time.Duration, now time.Time) {
	v := h.load()
	if v != nil && v.complete && now.Sub(v.fetched) <= age {
		return
	}
	if h.refresh == nil || !h.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer h.refreshing.Store(false)
		h.refresh()
	}()
}

// listingView returns the view of cluster to answer a listing from, or nil
// when the cluster must be asked (and starts a refresh where one is due).
func (s *Server) listingView(cluster string, box *routerBox, now time.Time) *mdView {
	uc, ok := s.clusters[cluster]
	if !ok {
		return nil
	}
	uc.view.refreshIfOlder(viewFresh, now)
	v := uc.view.load()
	if v == nil || !v.complete || now.Sub(v.fetched) > viewMaxAge || v.fetched.Before(box.since) {
		return nil
	}
	uc.mu.RLock()
	reachable := uc.reachable
	uc.mu.RUnlock()
	if !reachable {
		return nil
	}
	return v
}

// viewsServe says whether a Metadata request can be answered from views at
// all: a listing, new enough, not asking for authorized operations (the
// view is kproxy's, asked without them), and no cluster whose answers
// depend on the client's identity (identity: passthrough).
func (s *Server) viewsServe(req *kmsg.MetadataRequest, all bool) bool {
	return all && req.Version >= viewMinVersion && !req.IncludeTopicAuthorizedOperations && !s.viewsOff.Load()
}

// metadataChanged is called when CreateTopics, DeleteTopics or
// CreatePartitions went through kproxy: those topics leave every view and
// listings ask the clusters until fresh listings are in.
func (s *Server) metadataChanged(topics []string) {
	for _, uc := range s.clusters {
		uc.view.markStale(topics)
		uc.view.refreshIfOlder(0, time.Now())
	}
}

// instancesChanged drops every view: their partitions' leaders are the
// owner instances of the membership view they were translated under
// (virt_nodes.go), which SetInstances just replaced. The next listing asks
// the clusters and refreshes.
func (s *Server) instancesChanged() {
	for _, uc := range s.clusters {
		uc.view.drop()
	}
}

// sharedAnswers are encoded listings shared between requests, valid for
// one state (routes, views, partition counts); a new state clears them.
type sharedAnswers struct {
	mu      sync.Mutex
	state   sharedState
	answers map[sharedKey]*sharedAnswer
}

// sharedState is what a shared answer was built under.
type sharedState struct {
	box   *routerBox
	insts *instanceView // leaders and brokers name the live instances
	gens  string        // each cluster's view generation and countsGen, in order
}

type sharedKey struct {
	lst     *listener
	version int16
	body    string // the request as the client sent it
}

// sharedAnswer is one encoded answer and what a request must check
// before it may have it.
type sharedAnswer struct {
	resp *kmsg.MetadataResponse // the decoded form (key, version, flexibility)
	body []byte
	// canaries are the topics whose fetch route depends on the client,
	// with the base route the answer assumed.
	canaries []topicRoute
	// mismatched are split-route topics answered LEADER_NOT_AVAILABLE, by
	// produce cluster: each request refreshes them in the background, as
	// the check does when it runs.
	mismatched map[string][]string
	views      []string // the clusters whose views it was built from
}

type topicRoute struct{ topic, cluster string }

// sharedStateNow is the state answers are shared under, or ok false when
// the router cannot say which routes depend on the client.
func (s *Server) sharedStateNow(box *routerBox) (sharedState, bool) {
	if asCanaryRouter(box.r) == nil {
		return sharedState{}, false
	}
	st := sharedState{box: box, insts: s.insts.Load()}
	var b []byte
	for _, name := range s.clusterNames {
		uc := s.clusters[name]
		var gen uint64
		if v := uc.view.load(); v != nil {
			gen = v.gen
		}
		b = appendUvarint(b, gen)
		b = appendUvarint(b, uc.countsGen.Load())
	}
	st.gens = string(b)
	return st, true
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// sharedListing returns the shared encoded answer for this request, or nil.
func (s *Server) sharedListing(rc *reqCtx, req *kmsg.MetadataRequest, box *routerBox, now time.Time) kmsg.Response {
	if rc.metadataFiltered {
		return nil
	}
	st, ok := s.sharedStateNow(box)
	if !ok {
		return nil
	}
	s.shared.mu.Lock()
	var a *sharedAnswer
	if s.shared.state == st {
		a = s.shared.answers[sharedKey{rc.cc.lst, req.Version, string(rc.body)}]
	}
	s.shared.mu.Unlock()
	if a == nil {
		return nil
	}
	// The views must still be usable: not too old, reachable, and (for
	// the refresh it may start) this is where a listing uses them.
	for _, c := range a.views {
		if s.listingView(c, box, now) == nil {
			return nil
		}
	}
	router := box.r
	for _, ct := range a.canaries {
		if router.FetchCluster(ct.topic, rc.client, rc.group(ct.topic)) != ct.cluster {
			return nil
		}
	}
	for c, topics := range a.mismatched {
		s.refreshSoon(c, topics)
	}
	s.metrics.metadataShared.Inc()
	return &passthrough{Response: a.resp, body: a.body}
}

// shareListing encodes resp and keeps it for identical requests.
func (s *Server) shareListing(rc *reqCtx, req *kmsg.MetadataRequest, st sharedState, a *sharedAnswer, resp *kmsg.MetadataResponse) kmsg.Response {
	a.resp = resp
	a.body = resp.AppendTo(nil)
	key := sharedKey{rc.cc.lst, req.Version, string(rc.body)}
	s.shared.mu.Lock()
	if s.shared.state != st {
		s.shared.state = st
		clear(s.shared.answers)
	}
	if s.shared.answers == nil {
		s.shared.answers = map[sharedKey]*sharedAnswer{}
	}
	if len(s.shared.answers) >= maxSharedAnswers {
		for k := range s.shared.answers {
			delete(s.shared.answers, k)
			break
		}
	}
	s.shared.answers[key] = a
	s.shared.mu.Unlock()
	return &passthrough{Response: resp, body: a.body}
}
