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

// configClusters lists the clusters one config resource goes to.
func (rc *reqCtx) configClusters(typ int8, name string, write bool) []string {
	r := rc.srv().routes()
	if typ != resourceTopic {
		return []string{r.DefaultCluster()}
	}
	if write {
		return rc.topicClusters(name)
	}
	return []string{r.FetchCluster(name, rc.client, rc.group(name))}
}
