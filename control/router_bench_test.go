package control

import (
	"testing"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

// The readiness check the router makes for a replicated topic routed to
// the target (router.go), against the same lookup without it (the router
// before the source watcher): bench/RESULTS.md, "Router readiness check".
func BenchmarkRouterFetchReplicatedTarget(b *testing.B) {
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:9\nstate_dir: /tmp/x\nclusters:\n  source: { bootstrap: [a:1] }\n  target: { bootstrap: [b:1] }\nroutes:\n  default: source\n  topics:\n    \"logs.*\": target\n    orders: { produce: source, fetch: target }\nreplicate: [\"logs.*\", orders, \"audit-*\"]\n"))
	if err != nil {
		b.Fatal(err)
	}
	table, err := routing.NewTable(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rp := newReplication(nil)
	rp.caughtUp["logs.app"] = true
	rp.publishReadyLocked()
	for _, c := range []struct {
		name  string
		ready func(string) bool
	}{{"without_check", nil}, {"with_check", rp.targetReady}} {
		b.Run(c.name, func(b *testing.B) {
			ov := newOverlay(sinkFunc(func(proxy.Router) {}))
			ov.targetReady = c.ready
			ov.setTopics(table, nil, nil)
			r := ov.router()
			b.ReportAllocs()
			for b.Loop() {
				if r.FetchCluster("logs.app", "consumer-1", "") != "target" {
					b.Fatal("wrong route")
				}
			}
		})
	}
}
