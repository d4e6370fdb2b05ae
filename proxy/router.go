package proxy

import (
	"reflect"

	"github.com/kproxy/kproxy/routing"
)

// Cluster names, as in the config file.
const (
	Source = "source"
	Target = "target"
)

// Router answers where a request goes. It is implemented over the immutable
// routing table (package routing) and swapped atomically on reload; proxy
// calls it once per topic per request and never caches the answer.
type Router interface {
	// ProduceCluster is the cluster a topic's produce requests go to.
	ProduceCluster(topic, clientID string) string
	// FetchCluster is the cluster a topic's fetches (and offset lookups) go
	// to, for a client (client.id) that is a member of group ("" unknown).
	FetchCluster(topic, clientID, group string) string
	// GroupCluster is the home cluster of a consumer group.
	GroupCluster(group string) string
	// TxnCluster is the cluster a transactional.id is pinned to.
	TxnCluster(txnID string) string
	// DefaultCluster serves requests that name no topic or group.
	DefaultCluster() string
	// Replicated says whether a topic is copied source -> target, so that
	// reading it from the target must go through the offset map.
	Replicated(topic string) bool
}

// StaticRouter sends everything to one cluster (routes.default with no
// per-topic rules).
type StaticRouter string

func (s StaticRouter) ProduceCluster(string, string) string       { return string(s) }
func (s StaticRouter) FetchCluster(string, string, string) string { return string(s) }
func (s StaticRouter) GroupCluster(string) string                 { return string(s) }
func (s StaticRouter) TxnCluster(string) string                   { return string(s) }
func (s StaticRouter) DefaultCluster() string                     { return string(s) }
func (s StaticRouter) Replicated(string) bool                     { return false }
func (s StaticRouter) FetchBase(string) (string, bool)            { return string(s), false }
func (s StaticRouter) FetchBaseOwner() Router                     { return s }

// TableRouter answers from an immutable routing table (package routing).
type TableRouter struct{ t *routing.Table }

// NewTableRouter wraps a routing table.
func NewTableRouter(t *routing.Table) TableRouter { return TableRouter{t} }

func (r TableRouter) ProduceCluster(topic, clientID string) string {
	return string(r.t.Route(topic, routing.Produce, clientID, ""))
}
func (r TableRouter) FetchCluster(topic, clientID, group string) string {
	return string(r.t.Route(topic, routing.Fetch, clientID, group))
}
func (r TableRouter) GroupCluster(group string) string { return string(r.t.GroupHome(group)) }
func (r TableRouter) TxnCluster(string) string         { return string(r.t.Default()) }
func (r TableRouter) DefaultCluster() string           { return string(r.t.Default()) }
func (r TableRouter) Replicated(topic string) bool     { return r.t.Replicated(topic) }
func (r TableRouter) FetchBase(topic string) (string, bool) {
	c, canary := r.t.FetchBase(topic)
	return string(c), canary
}
func (r TableRouter) FetchBaseOwner() Router { return r }

// canaryRouter is a Router that can say which topics' fetch routes depend
// on the client: FetchBase is the route of every client a topic's canary
// does not select, and canary is false when every client gets it (then
// FetchCluster ignores clientID and group). ProduceCluster of such a
// Router must not depend on clientID. Metadata answers built from the base
// routes are shared between clients only through a canaryRouter
// (metadata_view.go).
//
// FetchBaseOwner returns the router itself. A Router that embeds one of
// these inherits FetchBase without its own FetchCluster in mind; its
// owner is then the embedded type, not the Router's, and proxy does not
// trust it (asCanaryRouter).
type canaryRouter interface {
	FetchBase(topic string) (cluster string, canary bool)
	FetchBaseOwner() Router
}

// asCanaryRouter returns r's FetchBase when r defines it itself.
func asCanaryRouter(r Router) canaryRouter {
	cr, ok := r.(canaryRouter)
	if !ok || reflect.TypeOf(cr.FetchBaseOwner()) != reflect.TypeOf(r) {
		return nil
	}
	return cr
}
