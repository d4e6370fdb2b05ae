package proxy

// Shared plumbing for admin APIs that name topics: each topic goes to the
// clusters its routes name (both, for a topic whose produce and fetch
// routes differ, so that it exists with the same partitions where both
// halves of its traffic go).

import "github.com/twmb/franz-go/pkg/kmsg"

// topicClusters returns the distinct clusters a topic is routed to.
func (rc *reqCtx) topicClusters(topic string) []string {
	r := rc.srv().routes()
	p, f := r.ProduceCluster(topic, rc.client), r.FetchCluster(topic, "", "")
	if p == f {
		return []string{p}
	}
	return []string{p, f}
}

// splitTopics groups topic indexes by cluster, preserving request order.
func (rc *reqCtx) splitTopics(names []string) (order []string, by map[string][]int) {
	by = map[string][]int{}
	for i, n := range names {
		for _, c := range rc.topicClusters(n) {
			if _, ok := by[c]; !ok {
				order = append(order, c)
			}
			by[c] = append(by[c], i)
		}
	}
	return order, by
}

// forwardSplit sends one sub-request per cluster (built by build from the
// indexes of the topics that go there) and hands every answer to merge.
func (rc *reqCtx) forwardSplit(names []string, build func(idx []int) kmsg.Request, merge func(cluster string, resp kmsg.Response)) {
	order, by := rc.splitTopics(names)
	out := make([]kmsg.Response, len(order))
	done := make(chan struct{}, len(order))
	for i, c := range order {
		go func() {
			out[i] = rc.forwardAny(c, build(by[c]))
			done <- struct{}{}
		}()
	}
	for range order {
		<-done
	}
	for i, c := range order {
		if out[i] != nil {
			merge(c, out[i])
		}
	}
}

// mergeAnswer adds one cluster's answer for a resource (a topic, a config
// resource) to out. A resource sent to two clusters (a split route) is
// answered once, with the first error either cluster reported.
func mergeAnswer[T any](out *[]T, seen map[string]int, key string, a T, errOf func(*T) (*int16, **string)) {
	if i, dup := seen[key]; dup {
		code, msg := errOf(&(*out)[i])
		ac, am := errOf(&a)
		if *code == 0 {
			*code, *msg = *ac, *am
		}
		return
	}
	seen[key] = len(*out)
	*out = append(*out, a)
}
