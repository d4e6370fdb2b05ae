package proxy

import (
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleFunc serves one decoded request. It runs on the connection's read
// goroutine, so whatever it does before returning happens in request order:
// handlers whose upstream writes must keep the client's order (Produce, for
// idempotent sequence numbers) send before returning. The returned function
// runs on its own goroutine and produces the response; it must not block
// forever (every upstream wait is bounded).
type handleFunc func(rc *reqCtx, req kmsg.Request) func() kmsg.Response

// route says where an API's requests go; see apis.go for the table.
type route uint8

const (
	// answeredLocally: kproxy answers without asking any cluster, so its
	// versions are not intersected with the clusters' (ApiVersions).
	answeredLocally route = iota + 1
	// builtHere: kproxy builds the answer from what it knows of the
	// clusters, asking them where it must (Metadata, FindCoordinator...).
	builtHere
	// toAnyBroker: any broker of the default cluster (KRaft brokers forward
	// controller work themselves).
	toAnyBroker
	// toLeaders: each partition to its leader on its route's cluster; one
	// sub-request per broker, merged.
	toLeaders
	// toCoordinator: the coordinator of the request's group or
	// transactional id (one sub-request per key when it names several).
	toCoordinator
	// splitAcrossClusters: the topics, config resources or partitions go to the
	// clusters that hold them; one sub-request per cluster, merged so that
	// every requested item is answered (split_cluster.go).
	splitAcrossClusters
	// toEveryBroker: every broker of every cluster, merged (listing APIs).
	toEveryBroker
)

// rewrites is the set of identities an API's handler translates between
// virtual and upstream (the ident_*.go files).
type rewrites uint8

const (
	rwNodes       rewrites = 1 << iota // node ids and addresses (virt_nodes.go)
	rwTopicIDs                         // topic ids (virt_topicids.go)
	rwOffsets                          // offsets of replicated topics (virt_offsets.go)
	rwEpochs                           // leader epochs cleared (virt_epochs.go)
	rwProducerIDs                      // producer ids and epochs (ident_pid.go)
)

// apiSpec is one row of the API table: the versions kproxy can translate,
// where requests go, what is rewritten, and the handler.
type apiSpec struct {
	key      int16
	min, max int16
	route    route
	rewrites rewrites
	handle   handleFunc
}

// api makes a table row. f takes the API's own request type; the row's
// handleFunc does the one type assertion, so handlers never do. It panics
// (at init, so every test run catches it) when key is not f's request type.
func api[T kmsg.Request](key kmsg.Key, min, max int16, r route, rw rewrites, f func(*reqCtx, T) func() kmsg.Response) apiSpec {
	if _, ok := kmsg.RequestForKey(key.Int16()).(T); !ok {
		panic(fmt.Sprintf("proxy: API table row for %s has a handler for %T", kmsg.NameForKey(key.Int16()), *new(T)))
	}
	return apiSpec{key: key.Int16(), min: min, max: max, route: r, rewrites: rw, handle: func(rc *reqCtx, req kmsg.Request) func() kmsg.Response {
		return f(rc, req.(T))
	}}
}

// answerLater adapts a handler with nothing to do in request order: all
// of its work runs on the response goroutine.
func answerLater[T kmsg.Request](f func(*reqCtx, T) kmsg.Response) func(*reqCtx, T) func() kmsg.Response {
	return func(rc *reqCtx, req T) func() kmsg.Response { return func() kmsg.Response { return f(rc, req) } }
}

// registry is the API table (apis.go) by key: the dispatcher (conn.go) and
// the ApiVersions answer (advertisedVersions) both read it.
var registry = map[int16]*apiSpec{}

func init() {
	for i := range apiTable {
		spec := &apiTable[i]
		if _, dup := registry[spec.key]; dup {
			panic("proxy: API listed twice: " + kmsg.NameForKey(spec.key))
		}
		if mx := kmsg.RequestForKey(spec.key).MaxVersion(); spec.max > mx {
			spec.max = mx
		}
		registry[spec.key] = spec
	}
}

// advertisedVersions intersects kproxy's registry with every configured
// cluster's versions. A key missing on any side is dropped; an API answered
// locally is advertised with kproxy's own range.
func advertisedVersions(clusters []map[int16]versionRange) map[int16]versionRange {
	out := map[int16]versionRange{}
	for k, spec := range registry {
		r := versionRange{spec.min, spec.max}
		if spec.route == answeredLocally {
			out[k] = r
			continue
		}
		ok := true
		for _, cv := range clusters {
			c, has := cv[k]
			if !has {
				ok = false
				break
			}
			r = versionRange{max(r.min, c.min), min(r.max, c.max)}
		}
		if ok && r.min <= r.max {
			out[k] = r
		}
	}
	return out
}

func sortedKeys(m map[int16]versionRange) []int16 {
	keys := make([]int16, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}
