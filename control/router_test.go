package control

import (
	"testing"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

func tableOf(t *testing.T, routes, groups string) *routing.Table {
	t.Helper()
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:1\nclusters:\n  source: {bootstrap: [127.0.0.1:2]}\n  target: {bootstrap: [127.0.0.1:3]}\nroutes:\n" + routes + "groups:\n" + groups))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := routing.NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// The overlay answers from one router: topic pins over the table, group
// pins over the frozen table over the table; each controller's snapshot
// replaces only its own pins.
func TestOverlayPinsOverTheTable(t *testing.T) {
	sink := &routerLog{}
	ov := newOverlay(sink)
	ov.setGroups(map[string]string{"g-pinned": proxy.Source}, nil)
	if sink.r != nil {
		t.Fatal("a router was installed before the overlay had a table")
	}
	table := tableOf(t, "  default: target\n", "  default: target\n")
	ov.setTopics(table, map[string]string{"orders": proxy.Source}, map[string]string{"orders": proxy.Source})
	r := sink.r
	if got := r.ProduceCluster("orders", ""); got != proxy.Source {
		t.Errorf("pinned topic produce: %s", got)
	}
	if got := r.FetchCluster("orders", "", ""); got != proxy.Source {
		t.Errorf("pinned topic fetch: %s", got)
	}
	if got := r.ProduceCluster("other", ""); got != proxy.Target {
		t.Errorf("unpinned topic: %s", got)
	}
	if got := r.GroupCluster("g-pinned"); got != proxy.Source {
		t.Errorf("pinned group: %s", got)
	}
	if got := r.GroupCluster("g-other"); got != proxy.Target {
		t.Errorf("unpinned group: %s", got)
	}
	// Group globs resolving: unpinned groups keep the frozen table's home;
	// the topic pins stay.
	ov.setGroups(nil, tableOf(t, "  default: source\n", "  default: source\n"))
	r = sink.r
	if got := r.GroupCluster("g-other"); got != proxy.Source {
		t.Errorf("unpinned group while globs resolve: %s", got)
	}
	if got := r.ProduceCluster("orders", ""); got != proxy.Source {
		t.Errorf("topic pin lost by a group change: %s", got)
	}
}

// FetchBase (what the proxy shares Metadata answers by) agrees with
// FetchCluster for every client of a topic without a canary: pins and
// the target's readiness included; a topic with a canary says so. And a
// change of readiness installs a new router.
func TestPinnedRouterFetchBaseFollowsPinsAndReadiness(t *testing.T) {
	sink := &installCount{}
	ov := newOverlay(sink)
	ready := map[string]bool{}
	ov.targetReady = func(topic string) bool { return ready[topic] }
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:1\nclusters:\n  source: {bootstrap: [127.0.0.1:2]}\n  target: {bootstrap: [127.0.0.1:3]}\n" +
		"state_dir: /nonexistent\nreplicate: [\"r-*\"]\nroutes:\n  default: target\n  topics:\n    c: { route: source, canary: { fetch: target, clients: [\"shadow\"] } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ov.setTopics(table, nil, map[string]string{"pinned": proxy.Source})
	type canaryRouter interface {
		FetchBase(topic string) (string, bool)
		FetchBaseOwner() proxy.Router
	}
	r := sink.r.(canaryRouter)
	if _, own := r.FetchBaseOwner().(pinnedRouter); !own {
		t.Fatal("pinnedRouter's FetchBase is the embedded table's")
	}
	for _, topic := range []string{"pinned", "r-copied", "plain"} {
		for _, ok := range []bool{false, true} {
			ready[topic] = ok
			base, canary := r.FetchBase(topic)
			if canary {
				t.Errorf("%s: FetchBase says it has a canary", topic)
			}
			for _, client := range []string{"", "shadow", "x"} {
				if got := sink.r.FetchCluster(topic, client, "g"); got != base {
					t.Errorf("%s (ready %v): FetchBase %s, FetchCluster for %q %s", topic, ok, base, client, got)
				}
			}
		}
	}
	if base, canary := r.FetchBase("c"); !canary || base != proxy.Source {
		t.Errorf("c: FetchBase = %s, %v; want source with a canary", base, canary)
	}

	rp := newReplication(nil)
	rp.onReady = ov.reinstall
	before := sink.n
	rp.caughtUp["r-copied"] = true
	rp.publishReadyLocked()
	if sink.n == before {
		t.Error("a change of readiness installed no new router")
	}
	before = sink.n
	rp.publishReadyLocked()
	if sink.n != before {
		t.Error("an unchanged readiness installed a new router")
	}
}

type installCount struct {
	r proxy.Router
	n int
}

func (c *installCount) SetRouter(r proxy.Router) { c.r, c.n = r, c.n+1 }
