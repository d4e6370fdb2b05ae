package proxy

// Shared plumbing for admin APIs that name topics: each topic goes to the
// clusters its routes name (both, for a topic whose produce and fetch
// routes differ, so that it exists with the same partitions where both
// halves of its traffic go). The split and the merge: split_cluster.go.

import "reflect"

// topicClusters returns the distinct clusters a topic is routed to.
func (rc *reqCtx) topicClusters(topic string) []string {
	r := rc.srv().routes()
	p, f := r.ProduceCluster(topic, rc.client), r.FetchCluster(topic, "", "")
	if p == f {
		return []string{p}
	}
	return []string{p, f}
}

// topicsSplit splits a request's Topics list by topicClusters.
func (rc *reqCtx) topicsSplit(fix func(cluster string, answer reflect.Value)) listSplit {
	return listSplit{
		list:     "Topics",
		keys:     []string{"Topic"},
		clusters: func(e reflect.Value) []string { return rc.topicClusters(e.FieldByName("Topic").String()) },
		fix:      fix,
	}
}
