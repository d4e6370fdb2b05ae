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
