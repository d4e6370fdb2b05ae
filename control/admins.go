package control

// clusterAdmins keeps one long-lived admin client per upstream cluster for
// the controllers (cutovers, group moves). Building a client per lookup cost
// 10-70 ms of connection and metadata setup inside every hold. Clusters are
// restart-only settings, so a client never has to follow a new bootstrap.

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
)

type clusterAdmins struct {
	mu      sync.Mutex // guards clients and raw
	clients map[string]*kadm.Client
	raw     map[string]*kgo.Client // the same clients, for requests kadm has no call for
}

// get returns the client for cluster, building it on first use.
func (a *clusterAdmins) get(cfg *config.Config, cluster string) (*kadm.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[cluster]; ok {
		return c, nil
	}
	// A short metadata cache: a topic or group created a moment ago must
	// not look missing for kgo's default 5 s. secure.Client adds the
	// cluster's TLS and SASL.
	cl, err := secure.Client(cfg, config.Cluster(cluster), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	if a.clients == nil {
		a.clients, a.raw = map[string]*kadm.Client{}, map[string]*kgo.Client{}
	}
	c := kadm.NewClient(cl)
	a.clients[cluster], a.raw[cluster] = c, cl
	return c, nil
}

// client returns the kgo client under get's admin client for cluster.
func (a *clusterAdmins) client(cfg *config.Config, cluster string) (*kgo.Client, error) {
	if _, err := a.get(cfg, cluster); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raw[cluster], nil
}

// close releases every client.
func (a *clusterAdmins) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.clients {
		c.Close()
	}
	a.clients, a.raw = nil, nil
}
