package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Cluster names one of the two upstream Kafka clusters.
type Cluster string

// The two clusters a migration moves between.
const (
	Source Cluster = "source"
	Target Cluster = "target"
)

// Valid reports whether c is Source or Target.
func (c Cluster) Valid() bool { return c == Source || c == Target }

// Config is one parsed, validated kproxy configuration file. Parse and Load
// return it with every default applied; treat it as immutable afterwards (a
// reload produces a new Config, it never edits a live one).
//
// The fields document the file format: each names its YAML key, its default
// and its unit.
type Config struct {
	// Listen is the host:port kproxy accepts plaintext Kafka clients on.
	// Required unless Listeners lists at least one listener. Takes effect
	// only after a restart.
	Listen string `yaml:"listen"`

	// Listeners are more addresses to accept clients on, each with its own
	// TLS and SASL settings (security.go, docs/security.md). Default none.
	// Takes effect only after a restart.
	Listeners []Listener `yaml:"listeners"`

	// Advertise is the host:port kproxy tells clients to connect to (the only
	// broker address they ever see). Default: Listen. Required when Listen's
	// host is empty, 0.0.0.0 or ::, because clients cannot dial those.
	// ${NAME} is replaced by the environment variable NAME at load time
	// (env.go), so the pods of a StatefulSet can share one file.
	Advertise string `yaml:"advertise"`

	// Admin is the host:port of the HTTP admin server (/metrics, /status,
	// /healthz, /readyz): AdminHTTP.Address, kept as its own field for the
	// code that only needs the address. Takes effect only after a restart.
	Admin string `yaml:"-"`

	// AdminHTTP is the admin key: `admin: host:port`, or a map with the
	// address and its protection (security.go). Default: no admin server.
	AdminHTTP AdminHTTP `yaml:"admin"`

	// ClusterID is the id of the one virtual cluster clients see.
	// Default "kproxy-virtual-cluster". Takes effect only after a restart;
	// clients treat a changed cluster id as a different cluster.
	ClusterID string `yaml:"cluster_id"`

	// NodeID is the virtual broker id of this kproxy instance, the leader id
	// clients see for the partitions it serves. Default 0; must be >= 0.
	// Takes effect only after a restart.
	NodeID int32 `yaml:"node_id"`

	// Instance identifies this kproxy among the instances that serve one
	// virtual cluster together (Control). Takes effect only after a restart.
	Instance Instance `yaml:"instance"`

	// Control, when set, makes this kproxy one of several instances serving
	// one virtual cluster (docs/ha.md): they find each other through a
	// membership group on the control cluster, every live instance is a
	// virtual broker, and partition leadership and group coordinators are
	// spread over them. Default: none, one instance serves alone, exactly
	// as without this section. Takes effect only after a restart.
	Control *Control `yaml:"control"`

	// StateDir is the directory for kproxy's own durable state: the virtual
	// topic ids clients have seen (they must never change, even after the
	// cluster they were first taken from is gone). Default "" keeps that
	// state in memory only, and kproxy logs a warning at start. Takes effect
	// only after a restart.
	StateDir string `yaml:"state_dir"`

	// Clusters holds the upstream clusters' bootstrap addresses.
	Clusters Clusters `yaml:"clusters"`

	// Routes says where each topic's produce and fetch requests go.
	Routes Routes `yaml:"routes"`

	// Groups says which cluster coordinates each consumer group.
	Groups Groups `yaml:"groups"`

	// Replicate lists topic names or globs the replicator copies from source
	// to target. Default empty (replicate nothing). Requires both clusters.
	Replicate []string `yaml:"replicate"`

	// Replication tunes the replicator.
	Replication Replication `yaml:"replication"`

	// Cutover bounds a topic flip.
	Cutover Cutover `yaml:"cutover"`

	// Limits bounds what clients and upstream brokers may cost.
	Limits Limits `yaml:"limits"`

	// Monitor sets how often kproxy watches what it does not drive
	// itself: writers that bypass it, and long copies. Hot-reloaded.
	Monitor Monitor `yaml:"monitor"`

	// Policy says what clients may do through kproxy (security.go).
	// Default: none, every API is forwarded. Hot-reloaded.
	Policy *Policy `yaml:"policy"`

	// Log configures kproxy's own logs.
	Log Log `yaml:"log"`

	hash string // hex SHA-256 of the bytes this Config was parsed from
}

// Instance identifies one kproxy instance.
type Instance struct {
	// ID is this instance's stable id among the instances of the virtual
	// cluster: the same across restarts (a StatefulSet pod name), unique
	// among live instances. Its virtual broker id is derived from it.
	// ${NAME} is replaced by the environment variable NAME, as in
	// advertise. Required when control is set.
	ID string `yaml:"id"`
}

// Control configures the multi-instance mode (docs/ha.md).
type Control struct {
	// Cluster is the control cluster: the one whose group coordinator
	// tracks which instances are alive. Default: target when configured,
	// else source.
	Cluster Cluster `yaml:"cluster"`

	// Group is the membership group's id on the control cluster. Default
	// "_kproxy-<cluster_id>". It is joined with the protocol type "kproxy",
	// so it can never be a consumer group's id.
	Group string `yaml:"group"`

	// SessionTimeout is how long the control cluster waits for a silent
	// instance before it drops it: the time the partitions of an instance
	// that died without leaving stay unserved. Default 10s; the broker
	// bounds it by group.min/max.session.timeout.ms (6s to 30m by default).
	SessionTimeout time.Duration `yaml:"session_timeout"`
}

// DefaultControlSessionTimeout is control.session_timeout's default.
const DefaultControlSessionTimeout = 10 * time.Second

// Clusters holds the two upstream clusters. At least one must be configured;
// a config may have only a source (before a migration starts) or only a
// target (after it has finished).
type Clusters struct {
	// Source is the cluster being migrated from. Optional.
	Source *ClusterConfig `yaml:"source"`

	// Target is the cluster being migrated to. Optional.
	Target *ClusterConfig `yaml:"target"`
}

// ClusterConfig describes how to reach one upstream cluster.
type ClusterConfig struct {
	// Bootstrap lists host:port addresses of some of the cluster's brokers.
	// At least one is required; kproxy discovers the rest via Metadata.
	Bootstrap []string `yaml:"bootstrap"`

	// TLS, when set, connects to the brokers over TLS. Default plaintext.
	// Used by the proxy, the replicator and the control plane alike.
	TLS *ClientTLS `yaml:"tls"`

	// SASL, when set, authenticates kproxy to the brokers. Default none.
	SASL *ClientSASL `yaml:"sasl"`

	// Identity is whose identity the broker connections kproxy opens for
	// a client carry: "service" (kproxy's own, the sasl section above,
	// and kproxy's policy decides what clients may do) or "passthrough"
	// (each client's own, so the brokers' ACLs, quotas and audit logs see
	// each application; docs/security.md). kproxy's metadata lookups, the
	// replicator and the control plane always use the service identity.
	// Default "service". Takes effect only after a restart.
	Identity string `yaml:"identity"`

	// Passthrough maps principals to the upstream credential their
	// connections use with identity: passthrough. A principal with an
	// entry always uses it; without one, a PLAIN client's own user name
	// and password and an OAUTHBEARER client's own token are replayed.
	// SCRAM clients and clients without SASL (mTLS, or a plaintext
	// listener's ANONYMOUS) need an entry: a SCRAM exchange cannot be
	// replayed. Keys are principal names; values are credentials as in
	// sasl (secrets from files or environment variables only). Default
	// empty.
	Passthrough map[string]ClientSASL `yaml:"passthrough"`
}

// Identities a cluster's upstream connections can carry.
const (
	IdentityService     = "service"
	IdentityPassthrough = "passthrough"
)

// IsPassthrough reports whether the cluster's connections for clients
// carry each client's own identity.
func (cc *ClusterConfig) IsPassthrough() bool {
	return cc != nil && cc.Identity == IdentityPassthrough
}

// Get returns the configuration of cluster c, or nil when it is not configured.
func (cs Clusters) Get(c Cluster) *ClusterConfig {
	switch c {
	case Source:
		return cs.Source
	case Target:
		return cs.Target
	}
	return nil
}

// Routes says where topics' requests go.
type Routes struct {
	// Default is the cluster for produce and fetch of every topic that no key
	// in Topics matches. Required: source or target, and configured.
	Default Cluster `yaml:"default"`

	// Topics maps an exact topic name or a glob (path.Match syntax: * ? [..])
	// to its route. An exact name beats any glob; among matching globs the
	// longest (see GlobLength) wins; two globs of equal length that can match
	// the same topic are rejected as ambiguous. Default empty.
	Topics map[string]TopicRoute `yaml:"topics"`
}

// TopicRoute is one entry of routes.topics. The short form `orders: target`
// sets Route; the map form sets any of the fields below.
type TopicRoute struct {
	// Route sends both produce and fetch to one cluster (map key "route", or
	// the whole short form). Default: routes.default.
	Route Cluster `yaml:"route"`

	// Produce is where produce requests for the topic go.
	// Default: Route. After Parse it is always set.
	Produce Cluster `yaml:"produce"`

	// Fetch is where fetch requests for the topic go (for consumers that no
	// canary selects). Default: Route. After Parse it is always set.
	Fetch Cluster `yaml:"fetch"`

	// Canary sends the fetches of some consumers elsewhere. Optional.
	Canary *Canary `yaml:"canary"`
}

// Effective returns where produce and fetch go, filling unset fields from
// Route and then from routesDefault, the rule Parse applies.
func (r TopicRoute) Effective(routesDefault Cluster) (produce, fetch Cluster) {
	produce, fetch = r.Produce, r.Fetch
	if produce == "" {
		produce = r.Route
	}
	if fetch == "" {
		fetch = r.Route
	}
	if produce == "" {
		produce = routesDefault
	}
	if fetch == "" {
		fetch = routesDefault
	}
	return produce, fetch
}

// Canary routes the fetches of selected consumers of a topic to another
// cluster, for shadow reads before a cutover. It never affects produce. A
// consumer is selected when its client.id matches one of Clients, or its group
// id matches one of Groups, or a stable hash of its client.id falls under
// Percent. At least one selector is required.
type Canary struct {
	// Fetch is where selected consumers' fetches go. Required: source or
	// target, and configured.
	Fetch Cluster `yaml:"fetch" json:"fetch"`

	// Clients lists client.id values or globs to select. Default empty.
	Clients []string `yaml:"clients" json:"clients,omitempty"`

	// Groups lists consumer group ids or globs to select. Default empty.
	// A consumer's group is the one its client instance joined (source
	// IP, client.id and client software; docs/runbook.md, "Canary"):
	// two consumers of one instance in different groups that read the
	// same topic are selected by neither.
	Groups []string `yaml:"groups" json:"groups,omitempty"`

	// Percent selects this share of client.ids, by a stable hash of the
	// client.id (the same client.id is always in or always out). 0 to 100;
	// default 0.
	Percent int `yaml:"percent" json:"percent,omitempty"`
}

// Groups says which cluster coordinates each consumer group (its home). In
// YAML it is one map: the key "default" sets Default, every other key is a
// group id or glob (so a group literally named "default" cannot have its own
// entry; it follows Default).
type Groups struct {
	// Default is the home of every group no key in Homes matches.
	// Default: source, or target when only target is configured.
	Default Cluster `yaml:"default"`

	// Homes maps exact group ids or globs to their home cluster, with the
	// same precedence as routes.topics. Default empty.
	Homes map[string]Cluster `yaml:"-"`
}

// Replication tunes the replicator.
type Replication struct {
	// FetchMaxBytes caps one replicator fetch response, in bytes.
	// Default 52428800 (50 MiB); must be > 0.
	FetchMaxBytes int32 `yaml:"fetch_max_bytes"`

	// PartitionMaxBytes caps one partition within a replicator fetch, in
	// bytes. Default 1048576 (1 MiB); must be > 0.
	PartitionMaxBytes int32 `yaml:"partition_max_bytes"`

	// Concurrency is how many replication streams run at once.
	// Default 4; 1 to 1024.
	Concurrency int `yaml:"concurrency"`

	// ReverseAfterCutover starts target → source replication of a topic once
	// it has flipped, so that flipping back loses nothing. Default true.
	ReverseAfterCutover bool `yaml:"reverse_after_cutover"`

	// StateDir is the directory where the replicator keeps its offset maps.
	// Default "": <state_dir>/replicator. Replication needs one of the two.
	StateDir string `yaml:"state_dir"`

	// WatchInterval is how often the source's metadata is read again: a
	// topic created later that matches a replicate glob starts copying, a
	// replicated topic's new partitions start copying, and Sync runs. A Go
	// duration. Default 5s; at least 100ms and at most 10m.
	WatchInterval time.Duration `yaml:"watch_interval"`

	// ProduceTimeout is how long the copy waits for the target to answer
	// one produce request before it drops the connection and starts its
	// session again: a hung target broker (a paused process, a stalled
	// disk) is noticed by then, and the copy's lag and retention risk,
	// which its fetches update, show it. A Go duration. Default 60s; at
	// least 5s and at most 10m. Taken when replication starts.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`

	// Sync is what of the source's metadata around a replicated topic is
	// applied to its copy on the target (each switchable).
	Sync Sync `yaml:"sync"`
}

// Sync says which metadata of replicated topics follows the source.
// Mismatches it does not fix stay visible as plan gates (topic_configs,
// partitions, acls).
type Sync struct {
	// TopicConfigs applies the source topic's config changes to the
	// target copy (IncrementalAlterConfigs): a key whose source value
	// changes is set on the target; when kproxy first sees a topic, keys
	// the source topic sets and the target topic does not are filled in.
	// A key set differently on the target and not changed on the source
	// since is kept (the topic_configs gate shows it). Default true.
	TopicConfigs bool `yaml:"topic_configs"`
	// ConfigKeysAllow, when not empty, limits TopicConfigs to these keys
	// (exact names or globs). Default empty: every key not denied.
	ConfigKeysAllow []string `yaml:"config_keys_allow"`
	// ConfigKeysDeny are keys (exact names or globs) never synced; it
	// wins over ConfigKeysAllow. Setting it replaces the default,
	// DefaultConfigKeysDeny: keys the replicator sets itself or that
	// depend on the target's brokers.
	ConfigKeysDeny []string `yaml:"config_keys_deny"`
	// Partitions follows partition count increases: the target topic
	// gets the new partitions (CreatePartitions) before they are copied.
	// Without it, new source partitions are copied only once the target
	// has them. Default true.
	Partitions bool `yaml:"partitions"`
	// ACLs creates on the target the ACLs the source has for replicated
	// topics and for the groups named in groups: (DescribeAcls on the
	// source, CreateAcls on the target). It never deletes an ACL. Default
	// false.
	ACLs bool `yaml:"acls"`
	// Interval is how often TopicConfigs and ACLs compare the two
	// clusters: each pass describes the configs (and ACLs) of every
	// replicated topic on both, which at 1,000 topics cost kproxy 10% of a
	// core and the source broker 17% when done every watch_interval
	// (bench/scale). New topics and partitions are still followed every
	// watch_interval. A Go duration, at least watch_interval and at most
	// 1h. Default: 12 x watch_interval (1m with the default 5s).
	Interval time.Duration `yaml:"interval"`
}

// DefaultConfigKeysDeny are the topic config keys Sync leaves alone unless
// replication.sync.config_keys_deny says otherwise: the replicator sets
// message.timestamp.type (CreateTime keeps the source's timestamps) and
// compression.type (producer keeps the copied batches as they are); the
// others depend on the target's brokers (replicas, throttles, tiered
// storage) or on one vendor's brokers.
var DefaultConfigKeysDeny = []string{
	"message.timestamp.type", "compression.type", "min.insync.replicas",
	"leader.replication.throttled.replicas", "follower.replication.throttled.replicas",
	"remote.storage.enable", "local.retention.ms", "local.retention.bytes",
	"message.downconversion.enable", "confluent.*",
}

// SyncsConfigKey says whether Sync applies topic config key k.
func (s Sync) SyncsConfigKey(k string) bool {
	for _, d := range s.ConfigKeysDeny {
		if d == k || MatchGlob(d, k) {
			return false
		}
	}
	if len(s.ConfigKeysAllow) == 0 {
		return true
	}
	for _, a := range s.ConfigKeysAllow {
		if a == k || MatchGlob(a, k) {
			return true
		}
	}
	return false
}

// Cutover bounds a topic flip.
type Cutover struct {
	// MaxHold is the longest kproxy holds a topic's produce requests while it
	// waits for the target to catch up; on expiry the flip is aborted and the
	// held requests go to the source. A Go duration ("5s", "1500ms").
	// Default 5s; more than 0 and at most 120s.
	MaxHold time.Duration `yaml:"max_hold"`

	// Require names the preflight gates (CutoverGates) a cutover must pass
	// when a reload starts it; `kproxy plan` shows every gate either way. A
	// reload whose cutover of a topic fails a required gate is refused for
	// that topic (the topic keeps its home; /status gives the gate's
	// reason) until its gates, measured again every 10 s, pass; the other
	// changes of the reload apply. Default empty.
	Require []string `yaml:"require"`

	// SampledVerifyRecords is how many of the last records of each
	// partition the sampled_verify gate compares between the old home and
	// the copy. Default 100; 1 to 100000.
	SampledVerifyRecords int `yaml:"sampled_verify_records"`
}

// The preflight gates of a cutover (`kproxy plan`, cutover.require).
const (
	// GateCaughtUp: the copy into the new home lags the old home by at most
	// a few records, bytes and the max_hold in record age.
	GateCaughtUp = "caught_up"
	// GatePartitions: both clusters have the topic with as many partitions.
	GatePartitions = "partitions"
	// GateTopicConfigs: the topic configs that change what clients see
	// (cleanup.policy, retention, max.message.bytes, ...) are equal.
	GateTopicConfigs = "topic_configs"
	// GateRetentionHeadroom: the old home's retention will not delete a
	// record the copy has not read.
	GateRetentionHeadroom = "retention_headroom"
	// GateACLs: the new home holds every ACL the old home has for the
	// topic. Not applicable (and passing) when either cluster cannot
	// describe ACLs (no authorizer).
	GateACLs = "acls"
	// GateSampledVerify: the last cutover.sampled_verify_records records
	// of each partition are equal on both clusters through the offset map.
	GateSampledVerify = "sampled_verify"
	// GateNoBypass: no writer around kproxy has grown the source topic
	// since kproxy started (monitor.bypass_interval, the bypass check).
	GateNoBypass = "no_bypass"
)

// CutoverGates lists every gate name, in the order plans show them.
var CutoverGates = []string{GateCaughtUp, GatePartitions, GateTopicConfigs, GateRetentionHeadroom, GateACLs, GateSampledVerify, GateNoBypass}

// Monitor sets the intervals of kproxy's watches (docs/operations.md).
type Monitor struct {
	// BypassInterval is how often kproxy compares the end offsets of every
	// source topic it serves with what it wrote there itself (its clients'
	// produces and the copy back); growth it did not cause is a writer
	// that bypasses kproxy (control/bypass.go). A Go duration. Default
	// 30s; 0 turns the check off; otherwise at least 100ms.
	BypassInterval time.Duration `yaml:"bypass_interval"`

	// ProgressInterval is how often a copy that is behind (an initial
	// sync, or a copy catching up after a pause) logs its progress and
	// ETA per topic. A Go duration. Default 30s; 0 turns the lines off;
	// otherwise at least 100ms. The ETA is also the metric
	// kproxy_replicator_catch_up_seconds, and is in /status either way.
	ProgressInterval time.Duration `yaml:"progress_interval"`
}

// Limits bounds what clients and upstream brokers can cost kproxy. Every
// key is optional; docs/operations.md lists each with its default and the
// metric that shows it. Limits take effect only after a restart.
type Limits struct {
	// MaxFrameBytes is the largest request frame kproxy accepts, in bytes;
	// a larger size prefix closes the connection. Default 104857600
	// (100 MiB); at least 1048576 (1 MiB).
	MaxFrameBytes int32 `yaml:"max_frame_bytes"`

	// MaxInflightPerConn is how many requests of one connection kproxy
	// works on at once before it stops reading more. Default 128; >= 1.
	MaxInflightPerConn int `yaml:"max_inflight_per_conn"`

	// MaxConnections caps open client connections; more are closed as
	// they are accepted. Default 10000; >= 1.
	MaxConnections int `yaml:"max_connections"`

	// MaxConnectionsPerIP caps open client connections from one source IP.
	// Default 1000; from 1 to max_connections.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`

	// BufferBytes is the budget of client request and response bytes
	// kproxy buffers at once, over all connections; reading waits while it
	// is spent. Default 536870912 (512 MiB); at least 1048576 (1 MiB).
	BufferBytes int64 `yaml:"buffer_bytes"`

	// IdleTimeout closes a client connection with no request outstanding
	// that sends nothing for this long. A Go duration. Default 10m; > 0.
	IdleTimeout time.Duration `yaml:"idle_timeout"`

	// ReadTimeout is how long a client has to send each 64 KiB of a frame
	// (or the whole frame, if smaller) once it has started. Default 60s; > 0.
	ReadTimeout time.Duration `yaml:"read_timeout"`

	// WriteTimeout is how long a client has to read one response before
	// kproxy disconnects it. Default 60s; > 0.
	WriteTimeout time.Duration `yaml:"write_timeout"`

	// DialTimeout bounds one dial to an upstream broker, DNS included.
	// Default 10s; > 0.
	DialTimeout time.Duration `yaml:"dial_timeout"`

	// UpstreamWriteTimeout bounds writing one request to a broker; on
	// expiry the upstream connection is closed and its requests get
	// retriable errors. Default 30s; > 0.
	UpstreamWriteTimeout time.Duration `yaml:"upstream_write_timeout"`

	// DialBackoffMin and DialBackoffMax bound how long requests for a
	// broker whose dial failed fail fast before kproxy dials it again
	// (doubling per failure, jittered). Defaults 100ms and 10s; > 0, and
	// min <= max.
	DialBackoffMin time.Duration `yaml:"dial_backoff_min"`
	DialBackoffMax time.Duration `yaml:"dial_backoff_max"`

	// StartGrace is how long kproxy waits at start for every upstream
	// cluster before it listens with the ones that answered (at least
	// one); a cluster that answers later is picked up then. Default 30s; > 0.
	StartGrace time.Duration `yaml:"start_grace"`

	// ProducerIdle forgets an idempotent producer's upstream sessions
	// (and their lines in producer-sessions.jsonl) after it produced
	// nothing for this long. It must not be shorter than the brokers'
	// producer.id.expiration.ms (1 day by default): a session kproxy
	// forgets while a broker still remembers it would send a resent batch
	// to a new session, which the broker appends again. Default 168h
	// (7 days, Kafka's transactional.id.expiration.ms); > 0.
	ProducerIdle time.Duration `yaml:"producer_idle"`

	// TransactionalIdle forgets a transactional.id that sent no request
	// for this long, as a transaction coordinator does after
	// transactional.id.expiration.ms. Default 168h (7 days, that
	// setting's default); > 0.
	TransactionalIdle time.Duration `yaml:"transactional_idle"`

	// GroupMembershipGrace is how long a client instance still counts as
	// a member of a consumer group, for canary rules that select by group,
	// after its last connection carrying that membership closed. Default
	// 5m; > 0.
	GroupMembershipGrace time.Duration `yaml:"group_membership_grace"`
}

// Log configures kproxy's own logs.
type Log struct {
	// Level is the lowest level logged: trace, debug, info, warn or error.
	// Default info.
	Level string `yaml:"level"`

	// JSON writes one JSON object per line instead of text. Default false.
	JSON bool `yaml:"json"`
}

// Default values, also used by tests and documentation.
const (
	DefaultClusterID         = "kproxy-virtual-cluster"
	DefaultFetchMaxBytes     = 50 << 20
	DefaultPartitionMaxBytes = 1 << 20
	DefaultProduceTimeout    = 60 * time.Second
	DefaultConcurrency       = 4
	DefaultMaxHold           = 5 * time.Second
	DefaultWatchInterval     = 5 * time.Second
	// syncPasses is replication.sync.interval's default in watch passes.
	syncPasses                  = 12
	DefaultSampledVerifyRecords = 100
	MaxMaxHold                  = 120 * time.Second
	DefaultMaxFrameBytes        = 100 << 20
	MinMaxFrameBytes            = 1 << 20
	DefaultMaxInflightPerConn   = 128
	DefaultMaxConnections       = 10000
	DefaultMaxConnectionsPerIP  = 1000
	DefaultBufferBytes          = 512 << 20
	MinBufferBytes              = 1 << 20
	DefaultIdleTimeout          = 10 * time.Minute // a broker's connections.max.idle.ms
	DefaultReadTimeout          = 60 * time.Second
	DefaultWriteTimeout         = 60 * time.Second
	DefaultDialTimeout          = 10 * time.Second
	DefaultUpstreamWriteTimeout = 30 * time.Second
	DefaultDialBackoffMin       = 100 * time.Millisecond
	DefaultDialBackoffMax       = 10 * time.Second
	DefaultStartGrace           = 30 * time.Second
	DefaultProducerIdle         = 7 * 24 * time.Hour
	DefaultTransactionalIdle    = 7 * 24 * time.Hour
	DefaultGroupMembershipGrace = 5 * time.Minute
	DefaultLogLevel             = "info"
	DefaultBypassInterval       = 30 * time.Second
	DefaultProgressInterval     = 30 * time.Second
	MinMonitorInterval          = 100 * time.Millisecond
)

// defaults returns a Config holding every default that does not depend on
// other fields. Parse decodes the file over it, so a key that is present,
// even with a zero value, overrides the default and is then validated.
func defaults() *Config {
	return &Config{
		ClusterID: DefaultClusterID,
		Replication: Replication{
			FetchMaxBytes:       DefaultFetchMaxBytes,
			PartitionMaxBytes:   DefaultPartitionMaxBytes,
			Concurrency:         DefaultConcurrency,
			ReverseAfterCutover: true,
			WatchInterval:       DefaultWatchInterval,
			ProduceTimeout:      DefaultProduceTimeout,
			Sync: Sync{TopicConfigs: true, Partitions: true,
				ConfigKeysDeny: slices.Clone(DefaultConfigKeysDeny)},
		},
		Cutover: Cutover{MaxHold: DefaultMaxHold, SampledVerifyRecords: DefaultSampledVerifyRecords},
		Limits: Limits{
			MaxFrameBytes:        DefaultMaxFrameBytes,
			MaxInflightPerConn:   DefaultMaxInflightPerConn,
			MaxConnections:       DefaultMaxConnections,
			MaxConnectionsPerIP:  DefaultMaxConnectionsPerIP,
			BufferBytes:          DefaultBufferBytes,
			IdleTimeout:          DefaultIdleTimeout,
			ReadTimeout:          DefaultReadTimeout,
			WriteTimeout:         DefaultWriteTimeout,
			DialTimeout:          DefaultDialTimeout,
			UpstreamWriteTimeout: DefaultUpstreamWriteTimeout,
			DialBackoffMin:       DefaultDialBackoffMin,
			DialBackoffMax:       DefaultDialBackoffMax,
			StartGrace:           DefaultStartGrace,
			ProducerIdle:         DefaultProducerIdle,
			TransactionalIdle:    DefaultTransactionalIdle,
			GroupMembershipGrace: DefaultGroupMembershipGrace,
		},
		Monitor: Monitor{BypassInterval: DefaultBypassInterval, ProgressInterval: DefaultProgressInterval},
		Log:     Log{Level: DefaultLogLevel},
	}
}

// deriveDefaults fills the defaults that depend on other fields. It runs
// after validation, so it may assume the fields it reads are valid.
func (c *Config) deriveDefaults() {
	c.Admin = c.AdminHTTP.Address
	for i := range c.Listeners {
		if s := c.Listeners[i].SASL; s != nil {
			if len(s.Mechanisms) == 0 {
				if s.UsersFile != "" {
					s.Mechanisms = slices.Clone(usersMechanisms)
				}
				if s.OAuthBearer != nil {
					s.Mechanisms = append(s.Mechanisms, MechOAuthBearer)
				}
			}
			if o := s.OAuthBearer; o != nil && o.ClockSkew == 0 {
				o.ClockSkew = DefaultClockSkew
			}
		}
		if c.Listeners[i].Advertise == "" {
			c.Listeners[i].Advertise = c.Listeners[i].Listen
		}
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if c.Replication.Sync.Interval == 0 {
		c.Replication.Sync.Interval = syncPasses * c.Replication.WatchInterval
	}
	if ct := c.Control; ct != nil {
		if ct.Cluster == "" {
			ct.Cluster = Target
			if c.Clusters.Target == nil {
				ct.Cluster = Source
			}
		}
		if ct.Group == "" {
			ct.Group = "_kproxy-" + c.ClusterID
		}
		if ct.SessionTimeout == 0 {
			ct.SessionTimeout = DefaultControlSessionTimeout
		}
	}
	if c.Groups.Default == "" {
		c.Groups.Default = Source
		if c.Clusters.Source == nil {
			c.Groups.Default = Target
		}
	}
	for name, r := range c.Routes.Topics {
		r.Produce, r.Fetch = r.Effective(c.Routes.Default)
		c.Routes.Topics[name] = r
	}
}

// Parse decodes, validates and completes a configuration file's content.
// Unknown keys are errors. The error reports every problem found, one per
// line, each naming its YAML path and line (see FieldError).
func Parse(data []byte) (*Config, error) {
	c, err := parse(data)
	if err != nil {
		return nil, err
	}
	c.hash = hashBytes(data)
	return c, nil
}

// Load reads and parses the file at path (see Parse). The returned Config's
// Hash identifies the file content it came from.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Hash is the hex SHA-256 of the file content c was parsed from ("" for a
// Config not built by Parse or Load). Equal hashes mean identical files.
func (c *Config) Hash() string { return c.hash }

func hashBytes(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ReplicationStateDir is where the offset maps of the copy into the target
// live: replication.state_dir, or <state_dir>/replicator.
func (c *Config) ReplicationStateDir() string {
	if c.Replication.StateDir != "" {
		return c.Replication.StateDir
	}
	return filepath.Join(c.StateDir, "replicator")
}
