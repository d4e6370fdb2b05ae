package proxy

// Shared plumbing for the config APIs (DescribeConfigs, AlterConfigs,
// IncrementalAlterConfigs): topic resources follow the topic's route (a
// read asks the fetch cluster; a write goes to every cluster the topic is
// routed to, so a split-route topic keeps one configuration); other
// resources go to the default cluster.

const (
	resourceTopic        int8 = 2
	resourceBroker       int8 = 4
	resourceBrokerLogger int8 = 8
)

// configCluster lists the clusters one config resource goes to.
func (rc *reqCtx) configClusters(typ int8, name string, write bool) []string {
	r := rc.srv().routes()
	if typ != resourceTopic {
		return []string{r.DefaultCluster()}
	}
	if write {
		return rc.topicClusters(name)
	}
	return []string{r.FetchCluster(name, rc.client, rc.group())}
}

// splitResources groups resources by destination cluster, in request order.
func splitResources[R any](rc *reqCtx, res []R, typ func(R) int8, name func(R) string, write bool) (order []string, by map[string][]R) {
	by = map[string][]R{}
	for _, r := range res {
		for _, c := range rc.configClusters(typ(r), name(r), write) {
			if _, ok := by[c]; !ok {
				order = append(order, c)
			}
			by[c] = append(by[c], r)
		}
	}
	return order, by
}
