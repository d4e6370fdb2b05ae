package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// validator collects every problem of one Config, each located in the
// document it came from.
type validator struct {
	root *yaml.Node // the document's top-level mapping; nil when unknown
	errs []error
	// index holds the keys of each mapping the validator looked into, so
	// that locating every topic of routes.topics costs linear time, not
	// quadratic (8000 topic routes took 5 s; config/fuzz_test.go).
	index map[*yaml.Node]map[string][2]*yaml.Node
}

// find locates p in the document (yamlPath.find) through the index.
func (v *validator) find(p yamlPath) (key, val *yaml.Node) {
	return p.find(v.root, v.lookup)
}

// lookup returns the key and value nodes of key k in mapping m: the first
// pair with key k, own keys before merged ones.
func (v *validator) lookup(m *yaml.Node, k string) (key, val *yaml.Node) {
	keys, ok := v.index[m]
	if !ok {
		keys = map[string][2]*yaml.Node{}
		forEachPair(m, func(kn, vn *yaml.Node) {
			if _, dup := keys[kn.Value]; !dup {
				keys[kn.Value] = [2]*yaml.Node{kn, vn}
			}
		})
		if v.index == nil {
			v.index = map[*yaml.Node]map[string][2]*yaml.Node{}
		}
		v.index[m] = keys
	}
	kv := keys[k]
	return kv[0], kv[1]
}

// add records a problem with the value at p.
func (v *validator) add(p yamlPath, format string, args ...any) {
	_, val := v.find(p)
	v.record(p, val, format, args...)
}

// addAtKey records a problem with the key at p (a bad name rather than a bad
// value), pointing at the key's line.
func (v *validator) addAtKey(p yamlPath, format string, args ...any) {
	key, _ := v.find(p)
	v.record(p, key, format, args...)
}

func (v *validator) record(p yamlPath, n *yaml.Node, format string, args ...any) {
	e := &FieldError{Path: p.String(), Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line = n.Line
	}
	v.errs = append(v.errs, e)
}

// line returns the line of the key at p, or 0.
func (v *validator) line(p yamlPath) int {
	if key, _ := v.find(p); key != nil {
		return key.Line
	}
	return 0
}

// isShortForm reports whether p is written as a scalar in the document, as
// the short form `orders: target` is.
func (v *validator) isShortForm(p yamlPath) bool {
	_, val := v.find(p)
	return val != nil && val.Kind == yaml.ScalarNode
}

func top(k string) yamlPath { return yamlPath{}.key(k) }

// validate reports every problem in c, or nil. It checks c as decoded, before
// deriveDefaults.
func (c *Config) validate(doc *yaml.Node) error {
	v := &validator{root: doc}

	c.expandAdvertise(v)
	if c.Listen != "" {
		v.hostPort(top("listen"), c.Listen, hostOptional)
		c.validateAdvertise(v)
	}
	c.validateSecurity(v)
	c.validatePolicy(v)
	if c.ClusterID == "" {
		v.add(top("cluster_id"), "must not be empty (default %q)", DefaultClusterID)
	}
	if c.NodeID < 0 {
		v.add(top("node_id"), "must be >= 0, got %d", c.NodeID)
	}
	c.validateClusters(v)
	c.validateRoutes(v)
	c.validateGroups(v)
	c.validateReplicate(v)
	c.validateControl(v)

	r := top("replication")
	if c.Replication.FetchMaxBytes <= 0 {
		v.add(r.key("fetch_max_bytes"), "must be > 0 bytes, got %d", c.Replication.FetchMaxBytes)
	}
	if c.Replication.PartitionMaxBytes <= 0 {
		v.add(r.key("partition_max_bytes"), "must be > 0 bytes, got %d", c.Replication.PartitionMaxBytes)
	}
	if n := c.Replication.Concurrency; n < 1 || n > 1024 {
		v.add(r.key("concurrency"), "must be from 1 to 1024, got %d", n)
	}
	if d := c.Replication.ProduceTimeout; d < 5*time.Second || d > 10*time.Minute {
		v.add(r.key("produce_timeout"), "must be from 5s to 10m, got %s", d)
	}
	if d := c.Replication.WatchInterval; d < 100*time.Millisecond || d > 10*time.Minute {
		v.add(r.key("watch_interval"), "must be from 100ms to 10m, got %s", d)
	} else if d := c.Replication.Sync.Interval; d != 0 && (d < c.Replication.WatchInterval || d > time.Hour) {
		v.add(r.key("sync").key("interval"), "must be from replication.watch_interval (%s) to 1h, got %s", c.Replication.WatchInterval, d)
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{"config_keys_allow", c.Replication.Sync.ConfigKeysAllow}, {"config_keys_deny", c.Replication.Sync.ConfigKeysDeny}} {
		for i, k := range list.names {
			p := r.key("sync").key(list.key).index(i)
			if k == "" {
				v.add(p, "empty config key")
			} else if err := checkGlob(k); err != nil {
				v.add(p, "invalid glob %q: %v", k, err)
			}
		}
	}
	if n := c.Cutover.SampledVerifyRecords; n < 1 || n > 100000 {
		v.add(top("cutover").key("sampled_verify_records"), "must be from 1 to 100000, got %d", n)
	}
	if d := c.Cutover.MaxHold; d <= 0 || d > MaxMaxHold {
		v.add(top("cutover").key("max_hold"), "must be more than 0 and at most %s, got %s", MaxMaxHold, d)
	}
	for _, m := range []struct {
		key string
		d   time.Duration
	}{{"bypass_interval", c.Monitor.BypassInterval}, {"progress_interval", c.Monitor.ProgressInterval}} {
		if m.d != 0 && m.d < MinMonitorInterval {
			v.add(top("monitor").key(m.key), "must be 0 (off) or at least %s, got %s", MinMonitorInterval, m.d)
		}
	}
	for i, g := range c.Cutover.Require {
		if !slices.Contains(CutoverGates, g) {
			v.add(top("cutover").key("require").index(i), "unknown gate %q (want one of %s)", g, strings.Join(CutoverGates, ", "))
		}
	}
	if n := c.Limits.MaxFrameBytes; n < MinMaxFrameBytes {
		v.add(top("limits").key("max_frame_bytes"), "must be at least %d bytes (1 MiB), got %d", MinMaxFrameBytes, n)
	}
	if n := c.Limits.MaxInflightPerConn; n < 1 {
		v.add(top("limits").key("max_inflight_per_conn"), "must be >= 1, got %d", n)
	}
	v.limits(&c.Limits)
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		v.add(top("log").key("level"), "unknown level %q (want trace, debug, info, warn or error)", c.Log.Level)
	}
	return errors.Join(v.errs...)
}

// hostRule says whether a host:port may leave the host empty (listen on every
// interface) or must name something a client can dial.
type hostRule int

const (
	hostOptional hostRule = iota // listen, admin
	hostDialable                 // advertise, bootstrap
)

// hostPort checks s is host:port with a numeric port from 1 to 65535.
func (v *validator) hostPort(p yamlPath, s string, rule hostRule) (host string, ok bool) {
	if s == "" {
		v.add(p, "required (host:port)")
		return "", false
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		v.add(p, "%q is not host:port (%v)", s, err)
		return "", false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.add(p, "%q: port %q is not a number from 1 to 65535", s, port)
		return "", false
	}
	if rule == hostDialable && unspecifiedHost(host) {
		v.add(p, "%q: host %q is not an address clients can connect to", s, host)
		return "", false
	}
	return host, true
}

func unspecifiedHost(h string) bool {
	if h == "" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}

func (c *Config) validateAdvertise(v *validator) {
	if c.Advertise != "" {
		v.hostPort(top("advertise"), c.Advertise, hostDialable)
		return
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err == nil && unspecifiedHost(host) {
		v.add(top("advertise"), "required when listen's host is %q, which clients cannot connect to; set the host:port clients should use", host)
	}
}

func (c *Config) validateClusters(v *validator) {
	cs := top("clusters")
	if c.Clusters.Source == nil && c.Clusters.Target == nil {
		v.add(cs, "configure source, target or both")
		return
	}
	seen := map[string]Cluster{}
	for _, name := range []Cluster{Source, Target} {
		cc := c.Clusters.Get(name)
		if cc == nil {
			continue
		}
		bp := cs.key(string(name)).key("bootstrap")
		if len(cc.Bootstrap) == 0 {
			v.add(bp, "at least one host:port is required")
		}
		for i, addr := range cc.Bootstrap {
			if _, ok := v.hostPort(bp.index(i), addr, hostDialable); !ok {
				continue
			}
			if other, dup := seen[addr]; dup && other != name {
				v.add(bp.index(i), "%s is also a %s bootstrap server; source and target must be different clusters", addr, other)
			}
			seen[addr] = name
		}
	}
}

// cluster checks a reference to a cluster: a valid name of a configured one.
func (c *Config) cluster(v *validator, p yamlPath, name Cluster, required bool) {
	switch {
	case name == "":
		if required {
			v.add(p, "required (source or target)")
		}
	case !name.Valid():
		v.add(p, "unknown cluster %q (want source or target)", name)
	case c.Clusters.Get(name) == nil:
		v.add(p, "cluster %q is not configured (add clusters.%s)", name, name)
	}
}

func (c *Config) validateRoutes(v *validator) {
	rp := top("routes")
	c.cluster(v, rp.key("default"), c.Routes.Default, true)

	tp := rp.key("topics")
	for _, name := range sortedKeys(c.Routes.Topics) {
		r := c.Routes.Topics[name]
		p := tp.key(name)
		v.checkName(p, name, true)
		if r.Route == "" && r.Produce == "" && r.Fetch == "" && r.Canary == nil {
			v.add(p, "empty route (write a cluster, or a map of route, produce, fetch or canary)")
			continue
		}
		if v.isShortForm(p) {
			c.cluster(v, p, r.Route, false)
		} else {
			c.cluster(v, p.key("route"), r.Route, false)
		}
		c.cluster(v, p.key("produce"), r.Produce, false)
		c.cluster(v, p.key("fetch"), r.Fetch, false)
		if r.Canary != nil {
			c.validateCanary(v, p.key("canary"), r.Canary)
		}
	}
	v.checkAmbiguity(tp, slices.Collect(maps.Keys(c.Routes.Topics)), "topic")
}

func (c *Config) validateCanary(v *validator, p yamlPath, k *Canary) {
	c.cluster(v, p.key("fetch"), k.Fetch, true)
	for i, g := range k.Clients {
		v.checkGlobItem(p.key("clients").index(i), g)
	}
	for i, g := range k.Groups {
		v.checkGlobItem(p.key("groups").index(i), g)
	}
	if k.Percent < 0 || k.Percent > 100 {
		v.add(p.key("percent"), "must be from 0 to 100, got %d", k.Percent)
	}
	if len(k.Clients) == 0 && len(k.Groups) == 0 && k.Percent <= 0 {
		v.add(p, "selects no consumer; set clients, groups or a percent above 0")
	}
}

func (c *Config) validateGroups(v *validator) {
	gp := top("groups")
	c.cluster(v, gp.key("default"), c.Groups.Default, false)
	for _, name := range sortedKeys(c.Groups.Homes) {
		p := gp.key(name)
		v.checkName(p, name, false)
		c.cluster(v, p, c.Groups.Homes[name], true)
	}
	v.checkAmbiguity(gp, slices.Collect(maps.Keys(c.Groups.Homes)), "group")
}

func (c *Config) validateReplicate(v *validator) {
	rp := top("replicate")
	if len(c.Replicate) > 0 && (c.Clusters.Source == nil || c.Clusters.Target == nil) {
		v.add(rp, "replication needs both clusters.source and clusters.target")
	}
	if len(c.Replicate) > 0 && c.StateDir == "" && c.Replication.StateDir == "" {
		v.add(rp, "replication keeps offset maps on disk: set state_dir (or replication.state_dir)")
	}
	seen := map[string]int{}
	for i, name := range c.Replicate {
		p := rp.index(i)
		v.checkName(p, name, true)
		if j, dup := seen[name]; dup {
			v.add(p, "%q is already listed at replicate[%d]", name, j)
		}
		seen[name] = i
	}
}

// checkName checks a key or list item that is an exact name or a glob.
// Exact topic names must be valid Kafka topic names, or they could never match.
func (v *validator) checkName(p yamlPath, name string, topic bool) {
	switch {
	case name == "":
		v.addAtKey(p, "empty name")
	case IsGlob(name):
		if err := checkGlob(name); err != nil {
			v.addAtKey(p, "invalid glob %q: %v", name, err)
		}
	case topic && !validTopicName(name):
		v.addAtKey(p, "%q is not a valid Kafka topic name (letters, digits, '.', '_' and '-', at most 249)", name)
	}
}

// checkGlobItem checks one client.id or group glob of a canary.
func (v *validator) checkGlobItem(p yamlPath, g string) {
	if g == "" {
		v.add(p, "empty glob")
		return
	}
	if err := checkGlob(g); err != nil {
		v.add(p, "invalid glob %q: %v", g, err)
	}
}

// checkAmbiguity rejects pairs of globs (among keys, under p) of equal
// GlobLength that some name matches, because neither would win for that
// name. Exact names and globs of different lengths never conflict.
func (v *validator) checkAmbiguity(p yamlPath, keys []string, what string) {
	var globs []string
	for _, k := range keys {
		if IsGlob(k) && checkGlob(k) == nil {
			globs = append(globs, k)
		}
	}
	slices.Sort(globs)
	for i, a := range globs {
		for _, b := range globs[i+1:] {
			if GlobLength(a) != GlobLength(b) {
				continue
			}
			if name, ok := globOverlap(a, b); ok {
				other := strconv.Quote(a)
				if l := v.line(p.key(a)); l > 0 {
					other = fmt.Sprintf("%s (line %d)", other, l)
				}
				v.addAtKey(p.key(b), "ambiguous with %s: both globs have length %d and both match %s %q; make one longer or list that %s by its exact name",
					other, GlobLength(a), what, name, what)
			}
		}
	}
}

// validTopicName applies Kafka's topic name rules (Topic.validate).
func validTopicName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 249 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) < 0
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// limits checks the limits section beyond max_frame_bytes and
// max_inflight_per_conn.
func (v *validator) limits(l *Limits) {
	lim := top("limits")
	if n := l.MaxConnections; n < 1 {
		v.add(lim.key("max_connections"), "must be >= 1, got %d", n)
	}
	if n := l.MaxConnectionsPerIP; n < 1 || (l.MaxConnections >= 1 && n > l.MaxConnections) {
		v.add(lim.key("max_connections_per_ip"), "must be from 1 to max_connections (%d), got %d", l.MaxConnections, n)
	}
	if n := l.BufferBytes; n < MinBufferBytes {
		v.add(lim.key("buffer_bytes"), "must be at least %d bytes (1 MiB), got %d", MinBufferBytes, n)
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{
		{"idle_timeout", l.IdleTimeout},
		{"read_timeout", l.ReadTimeout},
		{"write_timeout", l.WriteTimeout},
		{"dial_timeout", l.DialTimeout},
		{"upstream_write_timeout", l.UpstreamWriteTimeout},
		{"dial_backoff_min", l.DialBackoffMin},
		{"dial_backoff_max", l.DialBackoffMax},
		{"start_grace", l.StartGrace},
		{"producer_idle", l.ProducerIdle},
		{"transactional_idle", l.TransactionalIdle},
		{"group_membership_grace", l.GroupMembershipGrace},
	} {
		if d.val <= 0 {
			v.add(lim.key(d.key), "must be more than 0, got %s", d.val)
		}
	}
	if l.DialBackoffMin > 0 && l.DialBackoffMax > 0 && l.DialBackoffMin > l.DialBackoffMax {
		v.add(lim.key("dial_backoff_max"), "must be at least dial_backoff_min (%s), got %s", l.DialBackoffMin, l.DialBackoffMax)
	}
}

// validateControl checks the multi-instance mode's settings (docs/ha.md).
func (c *Config) validateControl(v *validator) {
	ct := c.Control
	if ct == nil {
		if c.Instance.ID != "" {
			v.add(top("instance").key("id"), "is used only with a control section (several instances); remove it or add control:")
		}
		return
	}
	p := top("control")
	if c.NodeID != 0 {
		v.add(top("node_id"), "is derived from instance.id with control (each instance is its own virtual broker); remove node_id")
	}
	if c.Instance.ID == "" {
		v.add(top("instance").key("id"), "required with control: a stable id per instance (e.g. ${POD_NAME})")
	} else if len(c.Instance.ID) > 249 || strings.ContainsAny(c.Instance.ID, " \t\n") {
		v.add(top("instance").key("id"), "%q: at most 249 characters, no spaces", c.Instance.ID)
	}
	if ct.Cluster != "" {
		if !ct.Cluster.Valid() {
			v.add(p.key("cluster"), "unknown cluster %q (want source or target)", ct.Cluster)
		} else if c.Clusters.Get(ct.Cluster) == nil {
			v.add(p.key("cluster"), "names the %s cluster, which is not configured", ct.Cluster)
		}
	}
	if d := ct.SessionTimeout; d != 0 && (d < time.Second || d > 30*time.Minute) {
		v.add(p.key("session_timeout"), "must be from 1s to 30m, got %s", d)
	}
	// The copy is fenced per source partition by the broker (each
	// partition copied where it is led, by a transactional producer), and
	// a replicated topic's cutover and a group's home move run through
	// the control topic: every instance holds, drains and flips together
	// (docs/ha.md, "Coordinated cutover" and "Group home moves with
	// several instances"), so routes and group homes may leave the
	// source. A read of the copy for some clients (canary) is still
	// served by each instance alone: with several instances the copy's
	// map lives with the partition's copier, so a canary read of the
	// target is refused (at a reload too, keeping the last good config).
	if len(c.Replicate) == 0 {
		return
	}
	onSource := func(p yamlPath, cl Cluster, what string) {
		if cl != "" && cl != Source {
			v.add(p, "is %s, but with control and replicate %s stays on the source: it is not coordinated across instances yet (docs/ha.md, \"Coordinated cutover\"); run it with a single instance", cl, what)
		}
	}
	for _, name := range sortedKeys(c.Routes.Topics) {
		r, p := c.Routes.Topics[name], top("routes").key("topics").key(name)
		if produce, fetch := r.Effective(c.Routes.Default); produce != fetch {
			onSource(p.key("fetch"), fetch, "a read of the copy (fetch on another cluster than produce)")
		}
		if r.Canary != nil {
			onSource(p.key("canary").key("fetch"), r.Canary.Fetch, "a canary read")
		}
	}
}
