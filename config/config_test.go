package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid config; tests append to it.
const minimal = `
listen: 127.0.0.1:9092
clusters:
  source: { bootstrap: [127.0.0.1:19092] }
  target: { bootstrap: [127.0.0.1:29092] }
routes:
  default: source
`

func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseExample(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Listen:    "127.0.0.1:9092",
		Advertise: "kproxy.internal:9092",
		Admin:     "127.0.0.1:9644",
		AdminHTTP: AdminHTTP{Address: "127.0.0.1:9644"},
		ClusterID: "kproxy",
		Clusters: Clusters{
			Source: &ClusterConfig{Bootstrap: []string{"127.0.0.1:19092"}},
			Target: &ClusterConfig{Bootstrap: []string{"127.0.0.1:29092", "127.0.0.2:29092"}},
		},
		Routes: Routes{
			Default: Source,
			Topics: map[string]TopicRoute{
				"orders":   {Route: Target, Produce: Target, Fetch: Target},
				"payments": {Produce: Source, Fetch: Target},
				"logs.*": {Route: Source, Produce: Source, Fetch: Source, Canary: &Canary{
					Fetch: Target, Clients: []string{"audit-shadow-*"}, Groups: []string{"shadow-*"}, Percent: 10,
				}},
			},
		},
		Groups:    Groups{Default: Source, Homes: map[string]Cluster{"billing-*": Target}},
		Replicate: []string{"orders", "logs.*"},
		Replication: Replication{FetchMaxBytes: 52428800, PartitionMaxBytes: 1048576, Concurrency: 4, ReverseAfterCutover: true, StateDir: "/var/lib/kproxy/replicator",
			WatchInterval: DefaultWatchInterval, ProduceTimeout: DefaultProduceTimeout, Sync: Sync{TopicConfigs: true, Partitions: true, ConfigKeysDeny: DefaultConfigKeysDeny, Interval: 12 * DefaultWatchInterval}},
		Cutover: Cutover{MaxHold: 5 * time.Second, SampledVerifyRecords: DefaultSampledVerifyRecords},
		Limits: Limits{
			MaxFrameBytes: 104857600, MaxInflightPerConn: 128,
			MaxConnections: DefaultMaxConnections, MaxConnectionsPerIP: DefaultMaxConnectionsPerIP, BufferBytes: DefaultBufferBytes,
			IdleTimeout: DefaultIdleTimeout, ReadTimeout: DefaultReadTimeout, WriteTimeout: DefaultWriteTimeout,
			DialTimeout: DefaultDialTimeout, UpstreamWriteTimeout: DefaultUpstreamWriteTimeout,
			DialBackoffMin: DefaultDialBackoffMin, DialBackoffMax: DefaultDialBackoffMax,
			StartGrace:   DefaultStartGrace,
			ProducerIdle: DefaultProducerIdle, TransactionalIdle: DefaultTransactionalIdle, GroupMembershipGrace: DefaultGroupMembershipGrace,
		},
		Monitor: Monitor{BypassInterval: DefaultBypassInterval, ProgressInterval: DefaultProgressInterval},
		Log:     Log{Level: "info"},
		hash:    hashBytes(data),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(example.yaml)\n got %+v\nwant %+v", got, want)
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		yaml  string
		check func(*Config) any
		want  any
	}{
		{"advertise defaults to listen", minimal, func(c *Config) any { return c.Advertise }, "127.0.0.1:9092"},
		{"admin is off by default", minimal, func(c *Config) any { return c.Admin }, ""},
		{"cluster id has a default", minimal, func(c *Config) any { return c.ClusterID }, "kproxy-virtual-cluster"},
		{"node id defaults to zero", minimal, func(c *Config) any { return c.NodeID }, int32(0)},
		{"groups default to the source", minimal, func(c *Config) any { return c.Groups.Default }, Source},
		{"max hold defaults to five seconds", minimal, func(c *Config) any { return c.Cutover.MaxHold }, 5 * time.Second},
		{"frame limit defaults to 100 MiB", minimal, func(c *Config) any { return c.Limits.MaxFrameBytes }, int32(100 << 20)},
		{"in-flight limit defaults to 128", minimal, func(c *Config) any { return c.Limits.MaxInflightPerConn }, 128},
		{"reverse replication defaults to on", minimal, func(c *Config) any { return c.Replication.ReverseAfterCutover }, true},
		{"replication concurrency defaults to 4", minimal, func(c *Config) any { return c.Replication.Concurrency }, 4},
		{"log level defaults to info", minimal, func(c *Config) any { return c.Log.Level }, "info"},
		{
			"a partial limits map keeps the other default",
			minimal + "limits: { max_frame_bytes: 2097152 }\n",
			func(c *Config) any { return c.Limits.MaxInflightPerConn }, 128,
		},
		{
			"limits default to the documented values",
			minimal,
			func(c *Config) any { return c.Limits },
			Limits{
				MaxFrameBytes: 100 << 20, MaxInflightPerConn: 128,
				MaxConnections: 10000, MaxConnectionsPerIP: 1000, BufferBytes: 512 << 20,
				IdleTimeout: 10 * time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
				DialTimeout: 10 * time.Second, UpstreamWriteTimeout: 30 * time.Second,
				DialBackoffMin: 100 * time.Millisecond, DialBackoffMax: 10 * time.Second,
				StartGrace:   30 * time.Second,
				ProducerIdle: 7 * 24 * time.Hour, TransactionalIdle: 7 * 24 * time.Hour, GroupMembershipGrace: 5 * time.Minute,
			},
		},
		{
			"limits parse durations and sizes",
			minimal + "limits: { max_connections: 50, max_connections_per_ip: 5, buffer_bytes: 8388608, idle_timeout: 90s, read_timeout: 5s, write_timeout: 7s, dial_timeout: 2s, upstream_write_timeout: 3s, dial_backoff_min: 10ms, dial_backoff_max: 1s, start_grace: 4s, producer_idle: 48h, transactional_idle: 24h, group_membership_grace: 1m }\n",
			func(c *Config) any {
				l := c.Limits
				return []any{l.MaxConnections, l.MaxConnectionsPerIP, l.BufferBytes, l.IdleTimeout, l.ReadTimeout, l.WriteTimeout, l.DialTimeout, l.UpstreamWriteTimeout, l.DialBackoffMin, l.DialBackoffMax, l.StartGrace, l.ProducerIdle, l.TransactionalIdle, l.GroupMembershipGrace}
			},
			[]any{50, 5, int64(8 << 20), 90 * time.Second, 5 * time.Second, 7 * time.Second, 2 * time.Second, 3 * time.Second, 10 * time.Millisecond, time.Second, 4 * time.Second, 48 * time.Hour, 24 * time.Hour, time.Minute},
		},
		{
			"reverse replication can be turned off",
			minimal + "replication: { reverse_after_cutover: false }\n",
			func(c *Config) any { return c.Replication.ReverseAfterCutover }, false,
		},
		{
			"groups default to the target when it is the only cluster",
			"listen: 127.0.0.1:9092\nclusters: { target: { bootstrap: [t:9092] } }\nroutes: { default: target }\n",
			func(c *Config) any { return c.Groups.Default }, Target,
		},
		{
			"a topic's produce falls back to routes.default when only fetch is set",
			minimal + "  topics: { payments: { fetch: target } }\n",
			func(c *Config) any { return c.Routes.Topics["payments"] }, TopicRoute{Produce: Source, Fetch: Target},
		},
		{
			"produce and fetch override the route shorthand",
			minimal + "  topics: { payments: { route: target, fetch: source } }\n",
			func(c *Config) any { return c.Routes.Topics["payments"] }, TopicRoute{Route: Target, Produce: Target, Fetch: Source},
		},
		{
			"a canary-only entry follows routes.default",
			minimal + "  topics: { orders: { canary: { fetch: target, percent: 5 } } }\n",
			func(c *Config) any { r := c.Routes.Topics["orders"]; return [2]Cluster{r.Produce, r.Fetch} }, [2]Cluster{Source, Source},
		},
		{
			"YAML anchors and merge keys are understood",
			minimal + "  topics:\n    a: &r { produce: target, fetch: source }\n    b: { <<: *r, fetch: target }\n",
			func(c *Config) any { return c.Routes.Topics["b"] }, TopicRoute{Produce: Target, Fetch: Target},
		},
		{
			"an explicit listen host keeps advertise optional",
			"listen: kproxy-0.kproxy:9092\nclusters: { source: { bootstrap: [s:9092] } }\nroutes: { default: source }\n",
			func(c *Config) any { return c.Advertise }, "kproxy-0.kproxy:9092",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.check(mustParse(t, tt.yaml)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // each must appear as one line of the error
	}{
		{
			"an unknown top-level key",
			minimal + "listn: x\n",
			[]string{"listn (line 8): unknown key (known keys here: listen, listeners, advertise, admin, cluster_id, node_id, instance, control, state_dir, clusters, routes, groups, replicate, replication, cutover, limits, monitor, policy, log)"},
		},
		{
			"an unknown key inside a cluster",
			strings.Replace(minimal, "target: { bootstrap: [127.0.0.1:29092] }", "target: { bootstrap: [127.0.0.1:29092], tsl: {} }", 1),
			[]string{"clusters.target.tsl (line 5): unknown key (known keys here: bootstrap, tls, sasl, identity, passthrough)"},
		},
		{
			"an unknown key in a topic route's map form",
			minimal + "  topics:\n    payments: { produce: source, fecth: target }\n",
			[]string{"routes.topics.payments.fecth (line 9): unknown key (known keys here: route, produce, fetch, canary)"},
		},
		{
			"an unknown key in a canary",
			minimal + "  topics:\n    \"logs.*\":\n      canary: { fetch: target, client: [a] }\n",
			[]string{`routes.topics."logs.*".canary.client (line 10): unknown key (known keys here: fetch, clients, groups, percent)`},
		},
		{
			"a misspelled cluster in a fetch route",
			minimal + "  topics:\n    orders: target\n    payments: { produce: source, fetch: tagret }\n",
			[]string{`routes.topics.payments.fetch (line 10): unknown cluster "tagret" (want source or target)`},
		},
		{
			"a misspelled cluster in the short form",
			minimal + "  topics:\n    orders: tagret\n",
			[]string{`routes.topics.orders (line 9): unknown cluster "tagret" (want source or target)`},
		},
		{
			"a route to a cluster that is not configured",
			"listen: 127.0.0.1:9092\nclusters: { source: { bootstrap: [s:9092] } }\nroutes:\n  default: source\n  topics: { orders: target }\n",
			[]string{`routes.topics.orders (line 5): cluster "target" is not configured (add clusters.target)`},
		},
		{
			"an empty topic entry",
			minimal + "  topics:\n    orders:\n",
			[]string{"routes.topics.orders (line 9): empty route"},
		},
		{
			"a missing listen address",
			strings.Replace(minimal, "listen: 127.0.0.1:9092", "", 1),
			[]string{"listen: required (host:port)"},
		},
		{
			"a listen address without a port",
			strings.Replace(minimal, "127.0.0.1:9092", "localhost", 1),
			[]string{`listen (line 2): "localhost" is not host:port (missing port in address)`},
		},
		{
			"port zero",
			strings.Replace(minimal, "127.0.0.1:9092", "127.0.0.1:0", 1),
			[]string{`listen (line 2): "127.0.0.1:0": port "0" is not a number from 1 to 65535`},
		},
		{
			"a named port",
			minimal + "admin: localhost:http\n",
			[]string{`admin (line 8): "localhost:http": port "http" is not a number from 1 to 65535`},
		},
		{
			"a wildcard listen address without advertise",
			strings.Replace(minimal, "127.0.0.1:9092", "0.0.0.0:9092", 1),
			[]string{`advertise: required when listen's host is "0.0.0.0"`},
		},
		{
			"an empty listen host without advertise",
			strings.Replace(minimal, "127.0.0.1:9092", `":9092"`, 1),
			[]string{`advertise: required when listen's host is ""`},
		},
		{
			"an advertised wildcard address",
			minimal + "advertise: \"[::]:9092\"\n",
			[]string{`advertise (line 8): "[::]:9092": host "::" is not an address clients can connect to`},
		},
		{
			"an empty cluster id",
			minimal + "cluster_id: \"\"\n",
			[]string{"cluster_id (line 8): must not be empty"},
		},
		{
			"a negative node id",
			minimal + "node_id: -1\n",
			[]string{"node_id (line 8): must be >= 0, got -1"},
		},
		{
			"no clusters at all",
			"listen: 127.0.0.1:9092\nroutes: { default: source }\n",
			[]string{"clusters: configure source, target or both"},
		},
		{
			"a cluster without bootstrap servers",
			strings.Replace(minimal, "[127.0.0.1:29092]", "[]", 1),
			[]string{"clusters.target.bootstrap (line 5): at least one host:port is required"},
		},
		{
			"a bootstrap server without a port",
			strings.Replace(minimal, "[127.0.0.1:29092]", "[127.0.0.1:29092, new-2]", 1),
			[]string{`clusters.target.bootstrap[1] (line 5): "new-2" is not host:port (missing port in address)`},
		},
		{
			"the same bootstrap server in both clusters",
			strings.Replace(minimal, "[127.0.0.1:29092]", "[127.0.0.1:19092]", 1),
			[]string{"clusters.target.bootstrap[0] (line 5): 127.0.0.1:19092 is also a source bootstrap server"},
		},
		{
			"a missing routes.default",
			strings.Replace(minimal, "  default: source\n", "  topics: { orders: target }\n", 1),
			[]string{"routes.default: required (source or target)"},
		},
		{
			"a canary percent above 100",
			minimal + "  topics: { orders: { canary: { fetch: target, percent: 101 } } }\n",
			[]string{"routes.topics.orders.canary.percent (line 8): must be from 0 to 100, got 101"},
		},
		{
			"a canary that selects nobody",
			minimal + "  topics:\n    orders:\n      canary: { fetch: target }\n",
			[]string{"routes.topics.orders.canary (line 10): selects no consumer; set clients, groups or a percent above 0"},
		},
		{
			"a canary without a fetch cluster",
			minimal + "  topics: { orders: { canary: { clients: [a] } } }\n",
			[]string{"routes.topics.orders.canary.fetch: required (source or target)"},
		},
		{
			"a canary that fetches from a produce-like name",
			minimal + "  topics: { orders: { canary: { fetch: both, clients: [a] } } }\n",
			[]string{`routes.topics.orders.canary.fetch (line 8): unknown cluster "both" (want source or target)`},
		},
		{
			"a malformed canary client glob",
			minimal + "  topics:\n    orders:\n      canary: { fetch: target, clients: [\"audit-[\"] }\n",
			[]string{`routes.topics.orders.canary.clients[0] (line 10): invalid glob "audit-[": syntax error in pattern`},
		},
		{
			"a malformed topic glob",
			minimal + "  topics:\n    \"logs.[a-\": target\n",
			[]string{`routes.topics."logs.[a-" (line 9): invalid glob "logs.[a-": syntax error in pattern`},
		},
		{
			"an exact topic name Kafka would refuse",
			minimal + "  topics:\n    \"my orders\": target\n",
			[]string{`routes.topics."my orders" (line 9): "my orders" is not a valid Kafka topic name`},
		},
		{
			"two globs of equal length that match the same topic",
			minimal + "  topics:\n    \"logs.*\": target\n    \"*.eu.*\": source\n    \"*.logs\": source\n",
			[]string{`routes.topics."logs.*" (line 9): ambiguous with "*.logs" (line 11): both globs have length 5 and both match topic "logs.logs"`},
		},
		{
			"a group home on an unknown cluster",
			minimal + "groups: { \"billing-*\": tagret }\n",
			[]string{`groups."billing-*" (line 8): unknown cluster "tagret" (want source or target)`},
		},
		{
			"a group default on a missing cluster",
			"listen: 127.0.0.1:9092\nclusters: { source: { bootstrap: [s:9092] } }\nroutes: { default: source }\ngroups: { default: target }\n",
			[]string{`groups.default (line 4): cluster "target" is not configured (add clusters.target)`},
		},
		{
			"two group globs of equal length that overlap",
			minimal + "groups:\n  \"billing-*\": target\n  \"*-billing\": source\n  \"bill*ing-\": source\n",
			[]string{`groups."billing-*" (line 9): ambiguous with "*-billing" (line 10): both globs have length 8 and both match group "billing-billing"`},
		},
		{
			"replication with only one cluster",
			"listen: 127.0.0.1:9092\nclusters: { source: { bootstrap: [s:9092] } }\nroutes: { default: source }\nreplicate: [orders]\n",
			[]string{"replicate (line 4): replication needs both clusters.source and clusters.target"},
		},
		{
			"a topic replicated twice",
			minimal + "state_dir: /tmp/k\nreplicate: [orders, \"logs.*\", orders]\n",
			[]string{`replicate[2] (line 9): "orders" is already listed at replicate[0]`},
		},
		{
			"replication without a state directory",
			minimal + "replicate: [orders]\n",
			[]string{"replicate (line 8): replication keeps offset maps on disk: set state_dir (or replication.state_dir)"},
		},
		{
			"a zero max hold",
			minimal + "cutover: { max_hold: 0s }\n",
			[]string{"cutover.max_hold (line 8): must be more than 0 and at most 2m0s, got 0s"},
		},
		{
			"a max hold above two minutes",
			minimal + "cutover: { max_hold: 3m }\n",
			[]string{"cutover.max_hold (line 8): must be more than 0 and at most 2m0s, got 3m0s"},
		},
		{
			"a max hold without a unit",
			minimal + "cutover: { max_hold: 5 }\n",
			[]string{"cutover.max_hold (line 8): got 5, want a duration such as 5s or 1500ms"},
		},
		{
			"a frame limit below 1 MiB",
			minimal + "limits: { max_frame_bytes: 1000 }\n",
			[]string{"limits.max_frame_bytes (line 8): must be at least 1048576 bytes (1 MiB), got 1000"},
		},
		{
			"a zero in-flight limit",
			minimal + "limits: { max_inflight_per_conn: 0 }\n",
			[]string{"limits.max_inflight_per_conn (line 8): must be >= 1, got 0"},
		},
		{
			"connection limits out of range",
			minimal + "limits: { max_connections: 10, max_connections_per_ip: 11 }\n",
			[]string{"limits.max_connections_per_ip (line 8): must be from 1 to max_connections (10), got 11"},
		},
		{
			"a zero connection limit",
			minimal + "limits: { max_connections: 0 }\n",
			[]string{"limits.max_connections (line 8): must be >= 1, got 0"},
		},
		{
			"a buffer budget below 1 MiB",
			minimal + "limits: { buffer_bytes: 4096 }\n",
			[]string{"limits.buffer_bytes (line 8): must be at least 1048576 bytes (1 MiB), got 4096"},
		},
		{
			"zero and negative timeouts",
			minimal + "limits: { idle_timeout: 0s, write_timeout: -1s }\n",
			[]string{
				"limits.idle_timeout (line 8): must be more than 0, got 0s",
				"limits.write_timeout (line 8): must be more than 0, got -1s",
			},
		},
		{
			"a dial backoff whose max is below its min",
			minimal + "limits: { dial_backoff_min: 2s, dial_backoff_max: 1s }\n",
			[]string{"limits.dial_backoff_max (line 8): must be at least dial_backoff_min (2s), got 1s"},
		},
		{
			"zero replication concurrency",
			minimal + "replication: { concurrency: 0 }\n",
			[]string{"replication.concurrency (line 8): must be from 1 to 1024, got 0"},
		},
		{
			"an unknown log level",
			minimal + "log: { level: verbose }\n",
			[]string{`log.level (line 8): unknown level "verbose" (want trace, debug, info, warn or error)`},
		},
		{
			"a percent that is not a number",
			minimal + "  topics: { orders: { canary: { fetch: target, percent: lots } } }\n",
			[]string{`routes.topics.orders.canary.percent (line 8): got "lots", want a whole number`},
		},
		{
			"a route given as a list",
			minimal + "  topics:\n    orders: [target]\n",
			[]string{"routes.topics.orders (line 9): got a list, want a map"},
		},
		{
			"a topic listed twice",
			minimal + "  topics:\n    orders: target\n    orders: source\n",
			[]string{`line 10: mapping key "orders" already defined at line 9`},
		},
		{
			"an empty file",
			"\n# nothing here\n",
			[]string{"config is empty"},
		},
		{
			"two YAML documents",
			minimal + "---\nlisten: x\n",
			[]string{"config holds more than one YAML document"},
		},
		{
			"a top level that is a list",
			"- listen: 127.0.0.1:9092\n",
			[]string{"line 1: the top level must be a map"},
		},
		{
			"broken YAML syntax",
			"listen: [127.0.0.1:9092\n",
			[]string{"yaml: line"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			for _, w := range tt.want {
				if !hasLinePrefix(err.Error(), w) {
					t.Errorf("error does not have a line starting with\n\t%s\ngot:\n%v", w, err)
				}
			}
		})
	}
}

// hasLinePrefix reports whether some line of s starts with prefix.
func hasLinePrefix(s, prefix string) bool {
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

func TestParseReportsEveryProblemAsAFieldError(t *testing.T) {
	t.Parallel()
	yaml := `
listen: 0.0.0.0:9092
clusters:
  source: { bootstrap: [127.0.0.1:19092] }
routes:
  default: tagret
  topics:
    orders: { produce: target, fetch: source }
cutover: { max_hold: 10m }
`
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("Parse accepted an invalid config")
	}
	want := []string{
		`advertise: required when listen's host is "0.0.0.0", which clients cannot connect to; set the host:port clients should use`,
		`routes.default (line 6): unknown cluster "tagret" (want source or target)`,
		`routes.topics.orders.produce (line 8): cluster "target" is not configured (add clusters.target)`,
		`cutover.max_hold (line 9): must be more than 0 and at most 2m0s, got 10m0s`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "advertise" {
		t.Errorf("errors.As(*FieldError) = %+v, want the advertise problem", fe)
	}
}

func TestParseAcceptsGlobsThatOnlyLookAlike(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, topics string }{
		{"globs of different lengths", `{ "logs.*": target, "logs.eu.*": source, "*": source }`},
		{"equal-length globs that cannot match the same name", `{ "logs.*": target, "data.*": source }`},
		{"an exact name next to a glob that matches it", `{ "logs.*": target, "logs.audit": source }`},
		{"classes that do not intersect", `{ "[a-f]*.x": target, "[g-z]*.x": source }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mustParse(t, minimal+"  topics: "+tt.topics+"\n")
		})
	}
}

func TestLoadRecordsTheContentHash(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kproxy.yaml")
	if err := os.WriteFile(path, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(minimal))
	if got, want := c.Hash(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Hash() = %s, want %s", got, want)
	}
	if other := mustParse(t, minimal+"\n"); other.Hash() == c.Hash() {
		t.Error("different content gave the same hash")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.HasPrefix(err.Error(), "read config: ") {
		t.Errorf("Load(missing) = %v, want a read config error", err)
	}
}

// A merge key that names a mapping containing it is refused with YAML's
// own error; kproxy's key walk followed the merge into itself until the
// stack overflowed, which took the process down (a reload of such a file
// too). Found by FuzzParse (testdata/fuzz/FuzzParse/c1be25d000cc2182).
func TestSelfMergingMappingIsAnErrorNotACrash(t *testing.T) {
	_, err := Parse([]byte("listen: 127.0.0.1:9092\nclusters: &c\n  source: {bootstrap: [127.0.0.1:1]}\n  <<: *c\nroutes: {default: source}\n"))
	if err == nil || !strings.Contains(err.Error(), "contains itself") {
		t.Fatalf("a mapping merging itself: %v", err)
	}
}
