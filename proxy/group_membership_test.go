package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readN reads n records of topic through cl and returns their values.
func readN(t *testing.T, ctx context.Context, cl *kgo.Client, n int) []string {
	t.Helper()
	var vals []string
	for len(vals) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records before the deadline", len(vals), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { vals = append(vals, string(r.Value)) })
	}
	return vals
}

func allPrefixed(vals []string, prefix string) (bad string, ok bool) {
	for _, v := range vals {
		if !strings.HasPrefix(v, prefix) {
			return v, false
		}
	}
	return "", true
}

// Two consumers with franz-go's default client.id (kgo) from one host: one
// in a group a canary rule selects, one in another group. The canary
// consumer alone reads the target (its fetch connection is tied to the
// group its coordinator connection joined, by client instance); once the
// other consumer runs too, the other one keeps reading the source. Before,
// the canary group was kept per client.id for the whole process, so the
// canary consumer's heartbeats moved the other consumer's fetches to the
// target.
func TestCanaryGroupIsPerMembershipNotPerClientID(t *testing.T) {
	const n = 20
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srcProd := kfakeClient(t, src, kgo.DefaultProduceTopic("orders"))
	tgtProd := kfakeClient(t, tgt, kgo.DefaultProduceTopic("orders"))
	produce := func() {
		t.Helper()
		for _, c := range []struct {
			cl     *kgo.Client
			prefix string
		}{{srcProd, "from-source"}, {tgtProd, "from-target"}} {
			for i := 0; i < n; i++ {
				if err := c.cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "%s-%d", c.prefix, i)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	produce()
	routes := routesHeader + "routes:\n  default: source\n  topics:\n    orders: { route: source, canary: { fetch: target, groups: [\"canary-*\"] } }\n"
	srv := startProxy(t, Options{StateDir: t.TempDir(), Registerer: prometheus.NewRegistry(), Router: tableFor(t, routes),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()}})
	consumer := func(group string, opts ...kgo.Opt) *kgo.Client {
		// No kgo.ClientID: both use franz-go's default, "kgo".
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(srv.Addr().String()), kgo.ConsumerGroup(group),
			kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}

	// Heartbeats every 100 ms: under the old rule they re-filed "kgo" as
	// a canary-g member all the time.
	canary := consumer("canary-g", kgo.HeartbeatInterval(100*time.Millisecond))
	if bad, ok := allPrefixed(readN(t, ctx, canary, n), "from-target"); !ok {
		t.Fatalf("the canary group's consumer read %q, want the target's records", bad)
	}

	// Its own heartbeats rarely: under the old rule each re-filed "kgo"
	// as a main-g member for a moment.
	main := consumer("main-g", kgo.HeartbeatInterval(10*time.Second))
	if bad, ok := allPrefixed(readN(t, ctx, main, n), "from-source"); !ok {
		t.Fatalf("a consumer of another group with the same client.id read %q, want the source's records", bad)
	}
	// The canary consumer commits (a member's request, like its
	// heartbeats) while the other one goes on reading.
	if err := canary.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	// A fetch the other consumer sent before the commit answers within
	// its max wait (100 ms); its next ones are sent after the commit.
	time.Sleep(300 * time.Millisecond)
	produce()
	if bad, ok := allPrefixed(readN(t, ctx, main, n), "from-source"); !ok {
		t.Fatalf("after the canary consumer's commit, the other group's consumer read %q, want the source's records", bad)
	}
	// Both run from one instance key and read orders: their fetch
	// connections cannot be told apart, and were served as members of no
	// group (counted).
	if got := counterValue(srv.metrics.groupAmbiguous); got == 0 {
		t.Error("kproxy_canary_group_ambiguous_total = 0, want the ambiguous lookups counted")
	}
}

// A group's subscription narrows the instance's groups: a consumer of
// another topic with the same client.id does not make the canary
// consumer's fetches ambiguous.
func TestMembershipLookupBySubscription(t *testing.T) {
	clk := newFakeClock()
	ms := newMemberships(time.Minute, func(float64) {})
	ms.now = clk.now
	key := instanceKey{ip: "10.0.0.1", clientID: "kgo", software: "kgo/1"}
	ms.hold(key, "canary-g", topicSet{"orders": {}}, true)
	ms.hold(key, "billing-g", topicSet{"payments": {}}, true)
	if g, amb := ms.lookup(key, "orders"); g != "canary-g" || amb {
		t.Errorf("lookup(orders) = %q, %v; want canary-g", g, amb)
	}
	if g, amb := ms.lookup(key, "payments"); g != "billing-g" || amb {
		t.Errorf("lookup(payments) = %q, %v; want billing-g", g, amb)
	}
	// A group whose subscription is not known (joined before a kproxy
	// restart, seen only by heartbeats) may read anything: ambiguous.
	ms.hold(key, "unknown-g", nil, true)
	if g, amb := ms.lookup(key, "orders"); g != "" || !amb {
		t.Errorf("lookup(orders) with a group of unknown subscription = %q, %v; want ambiguous", g, amb)
	}
	// Another host, or another client.id, is another instance.
	if g, _ := ms.lookup(instanceKey{ip: "10.0.0.2", clientID: "kgo", software: "kgo/1"}, "orders"); g != "" {
		t.Errorf("another host's lookup = %q, want none", g)
	}
}

// An instance's group entry lives while a connection carrying it is open,
// then for the grace, then is dropped (counted as expired); a member that
// leaves is dropped at once.
func TestMembershipGraceAndExpiry(t *testing.T) {
	clk := newFakeClock()
	var entries float64
	ms := newMemberships(5*time.Minute, func(v float64) { entries = v })
	ms.now = clk.now
	key := instanceKey{ip: "10.0.0.1", clientID: "rdkafka"}
	ms.hold(key, "g", nil, true)
	clk.advance(time.Hour)
	if g, _ := ms.lookup(key, "t"); g != "g" || ms.expire() != 0 {
		t.Fatalf("an open connection's membership lapsed after an hour without requests")
	}
	ms.release(key, "g", false) // the connection closed
	clk.advance(4 * time.Minute)
	if g, _ := ms.lookup(key, "t"); g != "g" || ms.expire() != 0 || entries != 1 {
		t.Fatalf("within the grace after the close: lookup %q, entries %v; want g, 1", g, entries)
	}
	clk.advance(time.Minute)
	if g, _ := ms.lookup(key, "t"); g != "" {
		t.Errorf("after the grace lookup = %q, want none", g)
	}
	if n := ms.expire(); n != 1 || entries != 0 || len(ms.m) != 0 {
		t.Errorf("expire after the grace = %d (entries %v, %d keys), want 1 dropped and nothing left", n, entries, len(ms.m))
	}

	ms.hold(key, "g", nil, true)
	ms.release(key, "g", true) // LeaveGroup
	if g, _ := ms.lookup(key, "t"); g != "" || entries != 0 {
		t.Errorf("after LeaveGroup lookup = %q, entries %v; want none", g, entries)
	}
}
