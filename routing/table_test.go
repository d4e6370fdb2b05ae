package routing

import (
	"fmt"
	"hash/fnv"
	"reflect"
	"sync"
	"testing"

	"github.com/kproxy/kproxy/config"
)

const (
	S = config.Source
	T = config.Target
)

// routesYAML exercises every precedence rule; the tests below refer to it.
const routesYAML = `
listen: 127.0.0.1:9092
clusters:
  source: { bootstrap: [127.0.0.1:19092] }
  target: { bootstrap: [127.0.0.1:29092] }
routes:
  default: source
  topics:
    orders: target
    payments: { produce: source, fetch: target }
    refunds: { produce: target, fetch: source }
    "logs.*": target
    "logs.audit.*": source
    "logs.audit": target
    "metrics.?": target
    "*": source
    "events.*":
      route: source
      canary: { fetch: target, clients: ["audit-shadow-*"], groups: ["shadow-*"] }
    "clicks":
      canary: { fetch: target, percent: 10 }
groups:
  default: source
  "billing-*": target
  "billing-eu-*": source
  billing-eu-archive: target
replicate: ["orders", "logs.*"]
state_dir: /tmp/kproxy-routing-test
`

func newTable(t *testing.T, yaml string) *Table {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	tab, err := NewTable(cfg)
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tab
}

func TestRoute(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	tests := []struct {
		name     string
		topic    string
		dir      Direction
		clientID string
		group    string
		want     config.Cluster
	}{
		{"a short-form topic produces to its cluster", "orders", Produce, "app", "", T},
		{"a short-form topic fetches from its cluster", "orders", Fetch, "app", "g", T},
		{"a split route produces to the source", "payments", Produce, "app", "", S},
		{"a split route fetches from the target", "payments", Fetch, "app", "g", T},
		{"the reverse split works too", "refunds", Produce, "app", "", T},
		{"an exact name beats every glob", "logs.audit", Produce, "app", "", T},
		{"the longest matching glob wins", "logs.audit.eu", Produce, "app", "", S},
		{"a shorter glob applies where the longer does not match", "logs.app", Fetch, "app", "", T},
		{"a question-mark glob beats a star", "metrics.a", Produce, "app", "", T},
		{"the catch-all glob applies last", "metrics.ab", Produce, "app", "", S},
		{"a canary client is sent to the target", "events.x", Fetch, "audit-shadow-1", "g", T},
		{"a canary group is sent to the target", "events.x", Fetch, "app", "shadow-readers", T},
		{"other consumers keep the route", "events.x", Fetch, "app", "readers", S},
		{"a canary never moves produce", "events.x", Produce, "audit-shadow-1", "shadow-readers", S},
		{"an empty client id matches no client glob", "events.x", Fetch, "", "", S},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tab.Route(tt.topic, tt.dir, tt.clientID, tt.group); got != tt.want {
				t.Errorf("Route(%q, %v, %q, %q) = %s, want %s", tt.topic, tt.dir, tt.clientID, tt.group, got, tt.want)
			}
		})
	}
}

func TestRouteWithoutTopicRulesUsesTheDefault(t *testing.T) {
	t.Parallel()
	tab := newTable(t, "listen: 127.0.0.1:9092\nclusters: { target: { bootstrap: [t:1] } }\nroutes: { default: target }\n")
	for _, dir := range []Direction{Produce, Fetch} {
		if got := tab.Route("anything", dir, "c", "g"); got != T {
			t.Errorf("Route(anything, %v) = %s, want target", dir, got)
		}
	}
	if got := tab.Default(); got != T {
		t.Errorf("Default() = %s, want target", got)
	}
}

func TestRoutePanicsOnAnUnknownDirection(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	defer func() {
		if recover() == nil {
			t.Error("Route with Direction(7) did not panic")
		}
	}()
	tab.Route("orders", Direction(7), "", "")
}

func TestBucketIsFNV1aModulo100(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"", "a", "consumer-1", "rdkafka", "audit-shadow-7", "ünïcode"} {
		h := fnv.New32a()
		h.Write([]byte(id))
		if got, want := Bucket(id), h.Sum32()%100; got != want {
			t.Errorf("Bucket(%q) = %d, want %d", id, got, want)
		}
	}
}

func TestCanaryPercent(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML) // clicks: canary percent 10

	t.Run("the same client id always gets the same answer", func(t *testing.T) {
		t.Parallel()
		for i := range 200 {
			id := fmt.Sprintf("client-%d", i)
			first := tab.Route("clicks", Fetch, id, "")
			for range 3 {
				if got := tab.Route("clicks", Fetch, id, "other-group"); got != first {
					t.Fatalf("client %q routed to %s, then %s", id, first, got)
				}
			}
		}
	})

	t.Run("about the configured share of clients is selected", func(t *testing.T) {
		t.Parallel()
		n := 0
		for i := range 10000 {
			if tab.Route("clicks", Fetch, fmt.Sprintf("consumer-%d", i), "") == T {
				n++
			}
		}
		if n < 500 || n > 1500 {
			t.Errorf("%d of 10000 clients in a 10%% canary, want 500 to 1500", n)
		}
	})

	t.Run("raising the percent only adds clients", func(t *testing.T) {
		t.Parallel()
		clicks := func(p int) *Table {
			return newTable(t, fmt.Sprintf(
				"listen: 127.0.0.1:9092\nclusters: { source: { bootstrap: [s:1] }, target: { bootstrap: [t:1] } }\n"+
					"routes: { default: source, topics: { clicks: { canary: { fetch: target, percent: %d } } } }\n", p))
		}
		low, high := clicks(10), clicks(30)
		for i := range 1000 {
			id := fmt.Sprintf("c%d", i)
			if low.Route("clicks", Fetch, id, "") == T && high.Route("clicks", Fetch, id, "") != T {
				t.Fatalf("client %q is in the 10%% canary but not the 30%% one", id)
			}
		}
	})

	t.Run("a canary of 100 percent selects everyone, 0 selects nobody", func(t *testing.T) {
		t.Parallel()
		all := &canary{fetch: T, percent: 100}
		none := &canary{fetch: T}
		for i := range 1000 {
			id := fmt.Sprintf("c%d", i)
			if !all.selects(id, "") || none.selects(id, "") {
				t.Fatalf("client %q: 100%% selects %v, 0%% selects %v", id, all.selects(id, ""), none.selects(id, ""))
			}
		}
	})
}

func TestGroupHome(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	tests := []struct {
		name, group string
		want        config.Cluster
	}{
		{"a group no key matches stays on the default", "orders-app", S},
		{"a glob moves a group", "billing-us", T},
		{"the longest glob wins", "billing-eu-1", S},
		{"an exact id beats the globs", "billing-eu-archive", T},
		{"an empty group id gets the default", "", S},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tab.GroupHome(tt.group); got != tt.want {
				t.Errorf("GroupHome(%q) = %s, want %s", tt.group, got, tt.want)
			}
		})
	}
}

// A glob's '*' consumes whole characters: "*??" needs two characters, so
// the one-character group "覦" is not its (path.Match's byte-wise '*' said
// it was, and the longer glob took the group from the class that names it).
func TestGroupGlobStarConsumesWholeCharacters(t *testing.T) {
	t.Parallel()
	tab := newTable(t, `
listen: 127.0.0.1:9092
clusters:
  source: { bootstrap: [127.0.0.1:19092] }
  target: { bootstrap: [127.0.0.1:29092] }
routes:
  default: source
groups:
  default: source
  "*??": source
  "[覦]": target
state_dir: /tmp/kproxy-routing-test
`)
	if got := tab.GroupHome("覦"); got != T {
		t.Errorf("GroupHome(覦) = %s, want %s (only [覦] matches it)", got, T)
	}
	if got := tab.GroupHome("覦覦"); got != S {
		t.Errorf("GroupHome(覦覦) = %s, want %s (*?? is the longer glob)", got, S)
	}
}

func TestReplicated(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	tests := []struct {
		name, topic string
		want        bool
	}{
		{"an exact name is replicated", "orders", true},
		{"a glob match is replicated", "logs.app", true},
		{"an unlisted topic is not", "payments", false},
		{"a glob does not match a bare prefix", "logs", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tab.Replicated(tt.topic); got != tt.want {
				t.Errorf("Replicated(%q) = %v, want %v", tt.topic, got, tt.want)
			}
		})
	}
}

func TestTopicRule(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	tests := []struct {
		name, topic string
		want        RuleView
	}{
		{"an exact rule", "payments", RuleView{Pattern: "payments", Produce: S, Fetch: T}},
		{"the winning glob", "logs.audit.x", RuleView{Pattern: "logs.audit.*", Glob: true, Produce: S, Fetch: S}},
		{"a rule with a canary", "events.a", RuleView{Pattern: "events.*", Glob: true, Produce: S, Fetch: S, Canary: &config.Canary{
			Fetch: T, Clients: []string{"audit-shadow-*"}, Groups: []string{"shadow-*"},
		}}},
		{"the default when nothing matches", "a/b", RuleView{Produce: S, Fetch: S}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tab.TopicRule(tt.topic); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("TopicRule(%q) = %+v, want %+v", tt.topic, got, tt.want)
			}
		})
	}
}

func TestRules(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	var got []string
	for _, r := range tab.Rules() {
		got = append(got, r.Pattern)
	}
	want := []string{"*", "clicks", "events.*", "logs.*", "logs.audit", "logs.audit.*", "metrics.?", "orders", "payments", "refunds"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Rules() patterns = %q, want %q", got, want)
	}

	t.Run("changing the result leaves the table alone", func(t *testing.T) {
		t.Parallel()
		rules := tab.Rules()
		for _, r := range rules {
			if r.Canary != nil && len(r.Canary.Clients) > 0 {
				r.Canary.Fetch = S
				r.Canary.Clients[0] = "everyone"
			}
		}
		if got := tab.Route("events.x", Fetch, "audit-shadow-1", ""); got != T {
			t.Errorf("after editing Rules(), the canary routes to %s, want target", got)
		}
	})
}

func TestNewTableRejectsHandBuiltMistakes(t *testing.T) {
	t.Parallel()
	valid := func() *config.Config {
		return &config.Config{
			Routes: config.Routes{Default: S, Topics: map[string]config.TopicRoute{}},
			Groups: config.Groups{Default: S},
		}
	}
	tests := []struct {
		name   string
		mutate func(*config.Config)
		want   string
	}{
		{"an unknown default", func(c *config.Config) { c.Routes.Default = "tagret" },
			`routing: routes.default: unknown cluster "tagret" (want source or target)`},
		{"a missing group default", func(c *config.Config) { c.Groups.Default = "" },
			`routing: groups.default: unknown cluster "" (want source or target)`},
		{"a malformed topic glob", func(c *config.Config) { c.Routes.Topics["logs.["] = config.TopicRoute{Route: T} },
			`routing: routes.topics.logs.[: invalid glob "logs.[": syntax error in pattern`},
		{"a malformed canary glob", func(c *config.Config) {
			c.Routes.Topics["a"] = config.TopicRoute{Canary: &config.Canary{Fetch: T, Clients: []string{"["}}}
		}, `routing: routes.topics.a.canary.clients: invalid glob "[": syntax error in pattern`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mutate(c)
			if _, err := NewTable(c); err == nil || err.Error() != tt.want {
				t.Errorf("NewTable = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("a nil config", func(t *testing.T) {
		t.Parallel()
		if _, err := NewTable(nil); err == nil {
			t.Error("NewTable(nil) succeeded")
		}
	})
	t.Run("a hand-built config with unset produce and fetch falls back to the default", func(t *testing.T) {
		t.Parallel()
		c := valid()
		c.Routes.Topics["orders"] = config.TopicRoute{Fetch: T}
		tab, err := NewTable(c)
		if err != nil {
			t.Fatal(err)
		}
		if p, f := tab.Route("orders", Produce, "", ""), tab.Route("orders", Fetch, "", ""); p != S || f != T {
			t.Errorf("orders routes produce %s, fetch %s; want source, target", p, f)
		}
	})
	t.Run("ambiguous hand-built globs resolve by pattern order", func(t *testing.T) {
		t.Parallel()
		c := valid()
		c.Routes.Topics["a.*"] = config.TopicRoute{Route: T}
		c.Routes.Topics["*.b"] = config.TopicRoute{Route: S}
		for range 20 { // map order varies between builds; the answer must not
			tab, err := NewTable(c)
			if err != nil {
				t.Fatal(err)
			}
			if got := tab.Route("a.b", Produce, "", ""); got != S {
				t.Fatalf(`Route("a.b") = %s, want source from "*.b", which sorts first`, got)
			}
		}
	})
}

func TestTableIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	tab := newTable(t, routesYAML)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := fmt.Sprintf("c%d-%d", g, i)
				tab.Route("events.x", Fetch, id, "readers")
				tab.GroupHome(id)
				tab.Replicated("logs.x")
				tab.TopicRule("logs.audit.x")
				tab.Rules()
			}
		})
	}
	wg.Wait()
}

func TestDirectionString(t *testing.T) {
	t.Parallel()
	for d, want := range map[Direction]string{Produce: "produce", Fetch: "fetch", Direction(9): "Direction(9)"} {
		if got := d.String(); got != want {
			t.Errorf("Direction(%d).String() = %q, want %q", int(d), got, want)
		}
	}
}
