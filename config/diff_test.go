package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	t.Parallel()
	base := minimal + `  topics:
    orders: source
    payments: { produce: source, fetch: target }
groups:
  "billing-*": target
replicate: [orders]
state_dir: /var/lib/kproxy
`
	tests := []struct {
		name     string
		old, new string
		want     []string
	}{
		{"identical configs have no diff", base, base, nil},
		{
			"a topic cut over",
			base, strings.Replace(base, "orders: source", "orders: target", 1),
			[]string{"route orders: produce source→target, fetch source→target"},
		},
		{
			"consumers moved first",
			base, strings.Replace(base, "orders: source", "orders: { produce: source, fetch: target }", 1),
			[]string{"route orders: fetch source→target"},
		},
		{
			"a route added with a canary",
			base, strings.Replace(base, "    orders: source\n", "    orders: source\n    \"logs.*\": { route: source, canary: { fetch: target, clients: [audit-*], percent: 10 } }\n", 1),
			[]string{"route added logs.*: produce source, fetch source, canary fetch target for clients [audit-*] or 10% of client ids"},
		},
		{
			"a route removed",
			base, strings.Replace(base, "    payments: { produce: source, fetch: target }\n", "", 1),
			[]string{"route removed payments (was produce source, fetch target; now follows routes.default source)"},
		},
		{
			"a canary added to an existing route",
			base, strings.Replace(base, "orders: source", "orders: { route: source, canary: { fetch: target, groups: [shadow-*] } }", 1),
			[]string{"route orders: canary none → fetch target for groups [shadow-*]"},
		},
		{
			"a new default moves the topics that inherit it",
			minimal + "  topics: { payments: { fetch: target } }\n",
			strings.Replace(minimal, "default: source", "default: target", 1) + "  topics: { payments: { fetch: target } }\n",
			[]string{"routes.default: source→target", "route payments: produce source→target"},
		},
		{
			"group homes changed",
			base, strings.Replace(base, `"billing-*": target`, "default: target\n  \"billing-*\": source\n  audit: target", 1),
			[]string{"groups.default: source→target", "group added audit: target", "group billing-*: target→source"},
		},
		{
			"replication list changed",
			base, strings.Replace(base, "replicate: [orders]", `replicate: ["logs.*"]`, 1),
			[]string{"replicate added logs.*", "replicate removed orders"},
		},
		{
			"a bootstrap list changed",
			base, strings.Replace(base, "[127.0.0.1:29092]", "[127.0.0.1:29092, 127.0.0.2:29092]", 1),
			[]string{"cluster target bootstrap: [127.0.0.1:29092] → [127.0.0.1:29092, 127.0.0.2:29092]"},
		},
		{
			"the source cluster retired",
			"listen: 127.0.0.1:9092\nclusters: { source: { bootstrap: [s:1] }, target: { bootstrap: [t:1] } }\nroutes: { default: target }\ngroups: { default: target }\n",
			"listen: 127.0.0.1:9092\nclusters: { target: { bootstrap: [t:1] } }\nroutes: { default: target }\n",
			[]string{"cluster source removed (was bootstrap [s:1])"},
		},
		{
			"live settings changed",
			base, base + "cutover: { max_hold: 10s }\nlog: { level: debug }\nadvertise: kproxy:9092\n",
			[]string{"advertise: 127.0.0.1:9092→kproxy:9092", "cutover.max_hold: 5s→10s", "log.level: info→debug"},
		},
		{
			"restart-only settings are left to RestartRequired",
			base, base + "node_id: 3\n",
			nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Diff(mustParse(t, tt.old), mustParse(t, tt.new))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Diff:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRestartRequired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		add  string
		want []string
	}{
		{"route changes need no restart", "  topics: { orders: target }\n", nil},
		{
			"identity and listener changes do",
			"listen: 127.0.0.1:9093\nadmin: 127.0.0.1:9644\nnode_id: 2\ncluster_id: other\n",
			[]string{
				"listen: 127.0.0.1:9092→127.0.0.1:9093 (takes effect after a restart)",
				`admin: ""→127.0.0.1:9644 (takes effect after a restart)`,
				"node_id: 0→2 (takes effect after a restart)",
				"cluster_id: kproxy-virtual-cluster→other (takes effect after a restart)",
			},
		},
		{
			// Reloads used to apply bootstrap edits to the replicator
			// and admin clients while the proxy kept its start-up
			// clusters.
			"cluster edits do",
			"clusters:\n  source: { bootstrap: [127.0.0.1:19093] }\n",
			[]string{
				"clusters.source.bootstrap: [127.0.0.1:19092]→[127.0.0.1:19093] (takes effect after a restart)",
				"clusters.target: removed (takes effect after a restart)",
			},
		},
		{
			// The proxy reads its limits once; a reload that changed
			// them used to be reported as applied.
			"limits do",
			"limits: { buffer_bytes: 2097152, idle_timeout: 1m }\n",
			[]string{
				"limits.buffer_bytes: 536870912→2097152 (takes effect after a restart)",
				"limits.idle_timeout: 10m0s→1m0s (takes effect after a restart)",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			newYAML := minimal + tt.add
			if strings.HasPrefix(tt.add, "listen:") {
				newYAML = strings.Replace(minimal, "listen: 127.0.0.1:9092\n", "", 1) + tt.add
			}
			if strings.HasPrefix(tt.add, "clusters:") {
				newYAML = "listen: 127.0.0.1:9092\nroutes:\n  default: source\n" + tt.add
			}
			got := RestartRequired(mustParse(t, minimal), mustParse(t, newYAML))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RestartRequired:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
