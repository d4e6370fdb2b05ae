package control

// Readiness (/readyz): kproxy is ready when its listener accepts clients,
// the control plane runs, and every cluster the current routes send clients
// to answers. A cluster no route uses (the source once every topic and
// group has moved, before it is removed from the config) may be down
// without taking kproxy out of a load balancer; clients of a topic or group
// homed on a missing cluster get retriable errors meanwhile.

import (
	"sort"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/routing"
)

// neededClusters are the clusters cfg's routes and group homes name, and
// both clusters while a cutover holds a topic (its drain reads the one and
// writes the other before the clients' requests are released).
func neededClusters(cfg *config.Config, cutovers []CutoverStatus) []string {
	need := map[config.Cluster]bool{cfg.Routes.Default: true, cfg.Groups.Default: true}
	for _, r := range cfg.Routes.Topics {
		p, f := r.Effective(cfg.Routes.Default)
		need[p], need[f] = true, true
		if r.Canary != nil {
			need[r.Canary.Fetch] = true
		}
	}
	for _, h := range cfg.Groups.Homes {
		need[h] = true
	}
	for _, c := range cutovers {
		if c.State == routing.Holding.String() || c.State == routing.Draining.String() {
			need[config.Source], need[config.Target] = true, true
		}
	}
	out := make([]string, 0, len(need))
	for c := range need {
		if c != "" {
			out = append(out, string(c))
		}
	}
	sort.Strings(out)
	return out
}

// Ready reports whether the instance should get clients, and if not why.
func (inst *Instance) Ready() (bool, string) {
	if inst.closed.Load() {
		return false, "shutting down"
	}
	return inst.srv.ReadyFor(neededClusters(inst.Config(), inst.ctrl.Cutovers()))
}
