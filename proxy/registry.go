package proxy

import (
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

// apiSpec registers one Kafka API: the versions kproxy can translate and the
// handler. Each handler file registers itself in init, so the ApiVersions
// answer is derived from the handler files; api_test.go checks they agree.
type apiSpec struct {
	key      int16
	min, max int16
	handle   handleFunc
}

var registry = map[int16]*apiSpec{}

func register(key kmsg.Key, min, max int16, h handleFunc) {
	k := key.Int16()
	if _, dup := registry[k]; dup {
		panic("proxy: API registered twice: " + kmsg.NameForKey(k))
	}
	if mx := kmsg.RequestForKey(k).MaxVersion(); max > mx {
		max = mx
	}
	registry[k] = &apiSpec{key: k, min: min, max: max, handle: h}
}

// advertisedVersions intersects kproxy's registry with every configured
// cluster's versions. A key missing on any side is dropped.
func advertisedVersions(clusters []map[int16]versionRange) map[int16]versionRange {
	out := map[int16]versionRange{}
	for k, spec := range registry {
		r := versionRange{spec.min, spec.max}
		if k == kmsg.ApiVersions.Int16() {
			out[k] = r // answered locally
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
