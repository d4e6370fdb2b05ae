package control

// The proxy's router is one value: the applied config's routing table under
// the controllers' pins. The cutover controller pins topics whose route may
// not (yet) follow the table (a hold in progress, a flipped home); the group
// mover pins groups whose offsets are not on the table's home (a move in
// progress, an aborted move) and, while changed group globs are being
// resolved, keeps every other group on the previous table's home. Each
// controller hands the overlay a snapshot of its pins; the overlay installs
// one immutable pinnedRouter per change, so a request sees one consistent
// set of pins.
//
// Under the pins, a replicated topic the controller has not pinned is at
// home on the source (a flipped topic is always pinned). Its produce
// requests go to the source whatever the table says (a write to the target
// would race the copy; the controller starts a cutover once it considers
// the topic), and its fetches go to the target only once the copy there
// has caught up once (replication.targetReady): a topic created later that
// matches a replicate glob, or one whose copy could not start, is read
// from the source, which has every record at the same offsets.

import (
	"maps"
	"sync"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

// routerSink is where the overlay installs its router (the proxy server).
type routerSink interface{ SetRouter(proxy.Router) }

// overlay builds and installs the proxy's router. Lock order: a
// controller's mu (cutovers.mu, groupMoves.mu) may be held when calling into
// the overlay; the overlay calls nothing that locks back.
type overlay struct {
	sink routerSink

	mu          sync.Mutex // guards the fields below
	table       *routing.Table
	producePins map[string]string // topic -> cluster its produce stays on
	fetchPins   map[string]string // topic -> cluster its fetches stay on
	groupPins   map[string]string // group -> cluster that coordinates it now
	groupFrozen *routing.Table    // non-nil while group globs resolve
	// targetReady says whether the target may serve a replicated topic's
	// fetches; nil treats every topic as ready (unit tests).
	targetReady func(topic string) bool
}

func newOverlay(sink routerSink) *overlay { return &overlay{sink: sink} }

// setTopics replaces the table and the topic pins, and installs the router.
func (o *overlay) setTopics(table *routing.Table, produce, fetch map[string]string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.table, o.producePins, o.fetchPins = table, maps.Clone(produce), maps.Clone(fetch)
	o.installLocked()
}

// setGroups replaces the group pins and the frozen table (nil: none), and
// installs the router.
func (o *overlay) setGroups(pins map[string]string, frozen *routing.Table) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.groupPins, o.groupFrozen = maps.Clone(pins), frozen
	o.installLocked()
}

// router returns the router the overlay serves now (nil before a table).
func (o *overlay) router() proxy.Router {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.routerLocked()
}

func (o *overlay) routerLocked() proxy.Router {
	if o.table == nil {
		return nil
	}
	return pinnedRouter{TableRouter: proxy.NewTableRouter(o.table), produce: o.producePins, fetch: o.fetchPins, groups: o.groupPins, frozen: o.groupFrozen, ready: o.targetReady}
}

// reinstall installs the router anew: what targetReady says changed, so
// the same pins route differently, and the proxy must see a new router.
func (o *overlay) reinstall() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.installLocked()
}

func (o *overlay) installLocked() {
	if r := o.routerLocked(); r != nil {
		o.sink.SetRouter(r)
	}
}

// pinnedRouter answers from the table except where a pin says otherwise.
// Its maps are never modified after it is built.
type pinnedRouter struct {
	proxy.TableRouter
	produce, fetch map[string]string
	groups         map[string]string
	frozen         *routing.Table
	ready          func(topic string) bool
}

func (r pinnedRouter) ProduceCluster(topic, clientID string) string {
	if c, ok := r.produce[topic]; ok {
		return c
	}
	c := r.TableRouter.ProduceCluster(topic, clientID)
	if c == proxy.Target && r.ready != nil && r.TableRouter.Replicated(topic) {
		return proxy.Source // unpinned and replicated: never flipped, at home on the source
	}
	return c
}

func (r pinnedRouter) FetchCluster(topic, clientID, group string) string {
	if c, ok := r.fetch[topic]; ok {
		return c
	}
	c := r.TableRouter.FetchCluster(topic, clientID, group)
	// ready first: a map lookup, where Replicated matches globs.
	if c == proxy.Target && r.ready != nil && !r.ready(topic) && r.TableRouter.Replicated(topic) {
		return proxy.Source // the copy has not caught up once: the source has every record
	}
	return c
}

// FetchBase overrides the table's (embedded) with the pins and the
// readiness FetchCluster applies: a pinned topic's fetches go to its pin
// whoever asks, and an unpinned one's base route is downgraded as
// FetchCluster downgrades it (proxy.canaryRouter).
func (r pinnedRouter) FetchBase(topic string) (string, bool) {
	if c, ok := r.fetch[topic]; ok {
		return c, false
	}
	c, canary := r.TableRouter.FetchBase(topic)
	if c == proxy.Target && r.ready != nil && !r.ready(topic) && r.TableRouter.Replicated(topic) {
		c = proxy.Source
	}
	return c, canary
}

func (r pinnedRouter) FetchBaseOwner() proxy.Router { return r }

func (r pinnedRouter) GroupCluster(group string) string {
	if c, ok := r.groups[group]; ok {
		return c
	}
	if r.frozen != nil {
		return string(r.frozen.GroupHome(group))
	}
	return r.TableRouter.GroupCluster(group)
}
