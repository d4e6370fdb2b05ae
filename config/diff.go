package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Diff describes, one line each, what changes when new replaces old: clusters,
// routes (compared by effective produce/fetch, so a change of routes.default
// also lists the topics that inherit it), group homes, replicated topics and
// the other live settings (advertise, replication, cutover, log).
// Settings that only take effect after a restart are left to RestartRequired.
// Lines come in a stable order; nil means no difference.
//
//	cluster target bootstrap: [a:9092] → [b:9092]
//	route orders: produce source→target, fetch source→target
//	route added logs.*: produce source, fetch source, canary fetch target for clients [audit-*]
func Diff(old, new *Config) []string {
	var out []string
	for _, name := range []Cluster{Source, Target} {
		o, n := old.Clusters.Get(name), new.Clusters.Get(name)
		switch {
		case o == nil && n != nil:
			out = append(out, fmt.Sprintf("cluster %s added: bootstrap %s", name, list(n.Bootstrap)))
		case o != nil && n == nil:
			out = append(out, fmt.Sprintf("cluster %s removed (was bootstrap %s)", name, list(o.Bootstrap)))
		case o != nil && !slices.Equal(o.Bootstrap, n.Bootstrap):
			out = append(out, fmt.Sprintf("cluster %s bootstrap: %s → %s", name, list(o.Bootstrap), list(n.Bootstrap)))
		}
	}

	if old.Routes.Default != new.Routes.Default {
		out = append(out, fmt.Sprintf("routes.default: %s→%s", old.Routes.Default, new.Routes.Default))
	}
	for _, name := range unionKeys(old.Routes.Topics, new.Routes.Topics) {
		o, inOld := old.Routes.Topics[name]
		n, inNew := new.Routes.Topics[name]
		op, of := o.Effective(old.Routes.Default)
		np, nf := n.Effective(new.Routes.Default)
		switch {
		case !inOld:
			out = append(out, fmt.Sprintf("route added %s: %s", name, describeRoute(np, nf, n.Canary)))
		case !inNew:
			out = append(out, fmt.Sprintf("route removed %s (was %s; now follows routes.default %s)",
				name, describeRoute(op, of, o.Canary), new.Routes.Default))
		default:
			var parts []string
			if op != np {
				parts = append(parts, fmt.Sprintf("produce %s→%s", op, np))
			}
			if of != nf {
				parts = append(parts, fmt.Sprintf("fetch %s→%s", of, nf))
			}
			if oc, nc := describeCanary(o.Canary), describeCanary(n.Canary); oc != nc {
				parts = append(parts, fmt.Sprintf("canary %s → %s", oc, nc))
			}
			if len(parts) > 0 {
				out = append(out, fmt.Sprintf("route %s: %s", name, strings.Join(parts, ", ")))
			}
		}
	}

	if old.Groups.Default != new.Groups.Default {
		out = append(out, fmt.Sprintf("groups.default: %s→%s", old.Groups.Default, new.Groups.Default))
	}
	for _, name := range unionKeys(old.Groups.Homes, new.Groups.Homes) {
		o, inOld := old.Groups.Homes[name]
		n, inNew := new.Groups.Homes[name]
		switch {
		case !inOld:
			out = append(out, fmt.Sprintf("group added %s: %s", name, n))
		case !inNew:
			out = append(out, fmt.Sprintf("group removed %s (was %s; now follows groups.default %s)", name, o, new.Groups.Default))
		case o != n:
			out = append(out, fmt.Sprintf("group %s: %s→%s", name, o, n))
		}
	}

	for _, name := range new.Replicate {
		if !slices.Contains(old.Replicate, name) {
			out = append(out, "replicate added "+name)
		}
	}
	for _, name := range old.Replicate {
		if !slices.Contains(new.Replicate, name) {
			out = append(out, "replicate removed "+name)
		}
	}

	if old.Advertise != new.Advertise {
		out = append(out, fmt.Sprintf("advertise: %s→%s", old.Advertise, new.Advertise))
	}
	out = append(out, diffFields("replication", old.Replication, new.Replication)...)
	out = append(out, diffFields("cutover", old.Cutover, new.Cutover)...)
	out = append(out, diffFields("log", old.Log, new.Log)...)
	out = append(out, diffFields("monitor", old.Monitor, new.Monitor)...)
	if !reflect.DeepEqual(old.Policy, new.Policy) {
		out = append(out, "policy: changed")
	}
	return out
}

// RestartRequired lists the changes from old to new that a running kproxy
// cannot apply (listen, admin, node_id, cluster_id, clusters, limits), one
// line each, starting with the key. A reload that changes any of them is
// refused as a whole (control.Instance.Apply), so that kproxy never runs a
// config it only half applied.
//
// Clusters are restart-only: the proxy, the replicator and the control
// plane's admin clients each open their connections from the start-up
// config, and applying a bootstrap edit to some of them (as reloads once
// did) splits kproxy between two views of a cluster in the middle of a
// migration. TLS and SASL settings of a cluster are cluster edits too
// (securityChanges); rotating a credential by rewriting the file the
// config names is not a config edit and needs no restart (docs/security.md).
func RestartRequired(old, new *Config) []string {
	var out []string
	add := func(key string, o, n any) {
		if o != n {
			out = append(out, fmt.Sprintf("%s: %v→%v (takes effect after a restart)", key, quoteEmpty(o), quoteEmpty(n)))
		}
	}
	add("listen", old.Listen, new.Listen)
	for _, name := range []Cluster{Source, Target} {
		o, n := old.Clusters.Get(name), new.Clusters.Get(name)
		key := "clusters." + string(name)
		switch {
		case o == nil && n != nil:
			out = append(out, key+": added (takes effect after a restart)")
		case o != nil && n == nil:
			out = append(out, key+": removed (takes effect after a restart)")
		case o != nil && !slices.Equal(o.Bootstrap, n.Bootstrap):
			out = append(out, fmt.Sprintf("%s.bootstrap: %s→%s (takes effect after a restart)", key, list(o.Bootstrap), list(n.Bootstrap)))
		}
	}
	add("admin", old.Admin, new.Admin)
	for _, k := range securityChanges(old, new) {
		out = append(out, k+": changed (takes effect after a restart)")
	}
	add("node_id", old.NodeID, new.NodeID)
	add("instance.id", old.Instance.ID, new.Instance.ID)
	var oc, nc Control
	if old.Control != nil {
		oc = *old.Control
	}
	if new.Control != nil {
		nc = *new.Control
	}
	add("control", oc, nc)
	add("cluster_id", old.ClusterID, new.ClusterID)
	add("state_dir", old.StateDir, new.StateDir)
	// The proxy sizes its budgets, limiters and timeouts once, at start.
	for _, l := range diffFields("limits", old.Limits, new.Limits) {
		out = append(out, l+" (takes effect after a restart)")
	}
	return out
}

func quoteEmpty(v any) any {
	if v == "" {
		return `""`
	}
	return v
}

func describeRoute(produce, fetch Cluster, k *Canary) string {
	s := fmt.Sprintf("produce %s, fetch %s", produce, fetch)
	if k != nil {
		s += ", canary " + describeCanary(k)
	}
	return s
}

func describeCanary(k *Canary) string {
	if k == nil {
		return "none"
	}
	var sel []string
	if len(k.Clients) > 0 {
		sel = append(sel, "clients "+list(k.Clients))
	}
	if len(k.Groups) > 0 {
		sel = append(sel, "groups "+list(k.Groups))
	}
	if k.Percent > 0 {
		sel = append(sel, fmt.Sprintf("%d%% of client ids", k.Percent))
	}
	return fmt.Sprintf("fetch %s for %s", k.Fetch, strings.Join(sel, " or "))
}

func list(s []string) string { return "[" + strings.Join(s, ", ") + "]" }

// diffFields compares two structs of scalar fields, naming each changed field
// by its YAML key under prefix.
func diffFields[T any](prefix string, old, new T) []string {
	var out []string
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(new)
	for _, f := range reflect.VisibleFields(ov.Type()) {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		o, n := ov.FieldByIndex(f.Index).Interface(), nv.FieldByIndex(f.Index).Interface()
		// DeepEqual: a list (cutover.require) is no comparable value.
		if !reflect.DeepEqual(o, n) {
			out = append(out, fmt.Sprintf("%s.%s: %v→%v", prefix, name, quoteEmpty(o), quoteEmpty(n)))
		}
	}
	return out
}

func unionKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
