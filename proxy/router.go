package proxy

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
	// FetchCluster is the cluster a topic's fetches (and offset lookups) go to.
	FetchCluster(topic, clientID string) string
	// GroupCluster is the home cluster of a consumer group.
	GroupCluster(group string) string
	// TxnCluster is the cluster a transactional.id is pinned to.
	TxnCluster(txnID string) string
	// DefaultCluster serves requests that name no topic or group.
	DefaultCluster() string
}

// StaticRouter sends everything to one cluster (routes.default with no
// per-topic rules).
type StaticRouter string

func (s StaticRouter) ProduceCluster(string, string) string { return string(s) }
func (s StaticRouter) FetchCluster(string, string) string   { return string(s) }
func (s StaticRouter) GroupCluster(string) string           { return string(s) }
func (s StaticRouter) TxnCluster(string) string             { return string(s) }
func (s StaticRouter) DefaultCluster() string               { return string(s) }
