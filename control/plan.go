package control

// Plans: what a candidate config would do to a running kproxy, and the
// preflight gates of each cutover it would start (`kproxy plan`, POST
// /plan). The same gates guard reloads: cutover.require names the gates a
// cutover must pass, and a reload's cutover that fails one is refused for
// its topic (refusals below; cutovers.considerLocked applies them).
//
// A gate measures, it does not wait: each reports pass or fail with the
// value it measured, from the replicator's statistics (lag, retention
// risk) and the two clusters' metadata and topic configs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
	"github.com/kproxy/kproxy/verify"
)

// PlanDoc is what a reload to a candidate config would do.
type PlanDoc struct {
	// Changes are config.Diff's lines from the running config.
	Changes []string `json:"changes"`
	// Restart lists changes a reload would refuse (they need a restart).
	Restart []string     `json:"restart_required,omitempty"`
	Actions []PlanAction `json:"actions"`
	// Pass is true when every gate of every action passed.
	Pass bool `json:"pass"`
	// Refused is true when a reload to the candidate would be refused
	// (Restart), or would refuse a cutover (a required gate failed).
	Refused bool `json:"refused"`
}

// PlanAction is one thing the reload would set going.
type PlanAction struct {
	// Kind is cutover, route_switch, fetch_move, canary, group_move,
	// replication_start, replication_stop or source_removal.
	Kind    string       `json:"kind"`
	Subject string       `json:"subject"` // a topic, route pattern or group
	What    string       `json:"what"`
	Gates   []GateResult `json:"gates,omitempty"`
}

// GateResult is one preflight gate of a cutover.
type GateResult struct {
	// Gate is one of config.CutoverGates, or for a source removal one of
	// the *OffSource gates.
	Gate     string `json:"gate"`
	Pass     bool   `json:"pass"`
	Required bool   `json:"required"` // named in cutover.require
	Measured string `json:"measured"`
}

// Gate thresholds. A cutover holds produce while the copy drains what is
// left, so "caught up" means a lag the hold can absorb: a few records and
// bytes, and no uncopied record older than max_hold.
const (
	GateMaxLagRecords = 1000
	GateMaxLagBytes   = 16 << 20
)

// The topic configs whose difference changes what clients see after a
// flip (what is kept, how large a record may be, which timestamp counts,
// how many replicas must ack).
var gateConfigKeys = []string{"cleanup.policy", "retention.ms", "retention.bytes", "max.message.bytes",
	"message.timestamp.type", "compression.type", "min.insync.replicas"}

// Plan compares candidate with the running config and measures the gates
// of every cutover it would start.
func (inst *Instance) Plan(ctx context.Context, candidate *config.Config) (PlanDoc, error) {
	running := inst.Config()
	cur, err := routing.NewTable(running)
	if err != nil {
		return PlanDoc{}, err
	}
	next, err := routing.NewTable(candidate)
	if err != nil {
		return PlanDoc{}, fmt.Errorf("candidate routes: %w", err)
	}
	doc := PlanDoc{Changes: config.Diff(running, candidate), Restart: config.RestartRequired(running, candidate), Pass: true}
	doc.Refused = len(doc.Restart) > 0
	probe := &gateProbe{cfg: running, admins: inst.ctrl.admins, repl: inst.ctrl.Replication(), rp: inst.ctrl.repl,
		maxHold: candidate.Cutover.MaxHold, require: candidate.Cutover.Require, sample: candidate.Cutover.SampledVerifyRecords,
		bypass: inst.ctrl.Bypass(), compared: inst.ctrl.bypass.wasCompared}
	for _, t := range planTopics(inst, candidate) {
		doc.Actions = append(doc.Actions, inst.topicActions(ctx, probe, t, cur, next, candidate)...)
	}
	doc.Actions = append(doc.Actions, canaryActions(running, candidate)...)
	doc.Actions = append(doc.Actions, groupActions(running, candidate)...)
	doc.Actions = append(doc.Actions, replicateActions(running, candidate)...)
	if running.Clusters.Source != nil && candidate.Clusters.Source == nil {
		doc.Actions = append(doc.Actions, inst.sourceRemoval(running, cur))
	}
	for _, a := range doc.Actions {
		for _, g := range a.Gates {
			if !g.Pass {
				doc.Pass = false
				if g.Required {
					doc.Refused = true
				}
			}
		}
	}
	return doc, nil
}

// planTopics is every topic a plan looks at: the ones clients used, the
// ones replicated, and the exact names the candidate routes or replicates.
func planTopics(inst *Instance, candidate *config.Config) []string {
	seen := map[string]bool{}
	for _, t := range inst.srv.KnownTopics() {
		seen[t] = true
	}
	for _, t := range inst.ctrl.repl.resolvedTopics() {
		seen[t] = true
	}
	for name := range candidate.Routes.Topics {
		if !strings.ContainsAny(name, "*?[") {
			seen[name] = true
		}
	}
	for _, name := range candidate.Replicate {
		if !strings.ContainsAny(name, "*?[") {
			seen[name] = true
		}
	}
	for t := range seen {
		if internalTopic(t) {
			delete(seen, t) // the clusters' internal topics are never routed
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// topicActions is what the candidate does to one topic's routes.
func (inst *Instance) topicActions(ctx context.Context, probe *gateProbe, t string, cur, next *routing.Table, candidate *config.Config) []PlanAction {
	home := inst.ctrl.repl.home(t)
	replicated := next.Replicated(t) || cur.Replicated(t) || home != proxy.Source
	op, of := string(cur.Route(t, routing.Produce, "", "")), string(cur.Route(t, routing.Fetch, "", ""))
	np, nf := string(next.Route(t, routing.Produce, "", "")), string(next.Route(t, routing.Fetch, "", ""))
	var out []PlanAction
	switch {
	case replicated && np != home:
		out = append(out, PlanAction{Kind: "cutover", Subject: t,
			What:  fmt.Sprintf("cutover of %s to the %s: produce held (max_hold %s) until the copy has every record, then flipped", t, np, candidate.Cutover.MaxHold),
			Gates: probe.cutoverGates(ctx, t, home, np)})
	case !replicated && np != op:
		out = append(out, PlanAction{Kind: "route_switch", Subject: t,
			What: fmt.Sprintf("produce of %s switches %s → %s at once: the topic is not replicated, so there is no hold and no copy", t, op, np)})
	}
	if nf != of {
		how := "at once"
		if replicated && nf != home {
			how = "reading the copy through its offset map, current to the replication lag"
		}
		out = append(out, PlanAction{Kind: "fetch_move", Subject: t, What: fmt.Sprintf("fetches of %s move %s → %s, %s", t, of, nf, how)})
	}
	return out
}

func canaryActions(running, candidate *config.Config) []PlanAction {
	var out []PlanAction
	for _, name := range slices.Sorted(maps.Keys(candidate.Routes.Topics)) {
		n := candidate.Routes.Topics[name].Canary
		o := running.Routes.Topics[name].Canary
		if n == nil || (o != nil && canaryText(o) == canaryText(n)) {
			continue
		}
		out = append(out, PlanAction{Kind: "canary", Subject: name, What: "canary rule starts: " + canaryText(n)})
	}
	for _, name := range slices.Sorted(maps.Keys(running.Routes.Topics)) {
		if running.Routes.Topics[name].Canary != nil && candidate.Routes.Topics[name].Canary == nil {
			out = append(out, PlanAction{Kind: "canary", Subject: name, What: "canary rule ends: " + canaryText(running.Routes.Topics[name].Canary)})
		}
	}
	return out
}

func canaryText(k *config.Canary) string {
	var sel []string
	if len(k.Clients) > 0 {
		sel = append(sel, "clients "+strings.Join(k.Clients, ","))
	}
	if len(k.Groups) > 0 {
		sel = append(sel, "groups "+strings.Join(k.Groups, ","))
	}
	if k.Percent > 0 {
		sel = append(sel, fmt.Sprintf("%d%% of client ids", k.Percent))
	}
	return fmt.Sprintf("fetches of %s go to the %s", strings.Join(sel, " or "), k.Fetch)
}

func groupActions(running, candidate *config.Config) []PlanAction {
	var out []PlanAction
	move := func(subject string, from, to config.Cluster) {
		out = append(out, PlanAction{Kind: "group_move", Subject: subject,
			What: fmt.Sprintf("%s moves home %s → %s: coordinator requests held while committed offsets are copied", subject, from, to)})
	}
	if running.Groups.Default != candidate.Groups.Default {
		move("groups.default", running.Groups.Default, candidate.Groups.Default)
	}
	names := map[string]bool{}
	for g := range running.Groups.Homes {
		names[g] = true
	}
	for g := range candidate.Groups.Homes {
		names[g] = true
	}
	for _, g := range slices.Sorted(maps.Keys(names)) {
		o, ok := running.Groups.Homes[g]
		if !ok {
			o = running.Groups.Default
		}
		n, ok := candidate.Groups.Homes[g]
		if !ok {
			n = candidate.Groups.Default
		}
		if o != n {
			move("group "+g, o, n)
		}
	}
	return out
}

func replicateActions(running, candidate *config.Config) []PlanAction {
	var out []PlanAction
	for _, name := range candidate.Replicate {
		if !slices.Contains(running.Replicate, name) {
			out = append(out, PlanAction{Kind: "replication_start", Subject: name, What: "replication of " + name + " starts (source → target, from the earliest offset)"})
		}
	}
	for _, name := range running.Replicate {
		if !slices.Contains(candidate.Replicate, name) {
			out = append(out, PlanAction{Kind: "replication_stop", Subject: name, What: "replication of " + name + " stops"})
		}
	}
	return out
}

// The gates of removing clusters.source: nothing may still depend on it.
const (
	GateTopicsOffSource  = "topics_off_source"
	GateGroupsOffSource  = "groups_off_source"
	GateClientsOffSource = "clients_off_source"
	GateWritersOffSource = "writers_off_source"
)

// sourceRemoval is the action of a candidate without clusters.source, with
// what still depends on the source: topics whose home or route is there,
// groups coordinated there, and clients whose requests reached it (open
// connections and those closed in the last ten minutes).
func (inst *Instance) sourceRemoval(running *config.Config, cur *routing.Table) PlanAction {
	a := PlanAction{Kind: "source_removal", Subject: "clusters.source",
		What: "the source cluster is removed (takes effect after a restart): kproxy serves everything from the target"}
	var topics []string
	for _, t := range planTopics(inst, running) {
		home := inst.ctrl.repl.home(t)
		replicated := cur.Replicated(t) || home != proxy.Source
		onSource := string(cur.Route(t, routing.Produce, "", "")) == proxy.Source || string(cur.Route(t, routing.Fetch, "", "")) == proxy.Source
		if onSource || (replicated && home == proxy.Source) {
			topics = append(topics, t)
		}
	}
	a.Gates = append(a.Gates, dependents(GateTopicsOffSource, "topics still produced to, fetched from or at home on the source", topics))

	var groups []string
	if running.Groups.Default == config.Source {
		groups = append(groups, "groups.default")
	}
	seen := map[string]bool{}
	for g, home := range running.Groups.Homes {
		if home == config.Source {
			seen[g] = true
		}
	}
	clients := map[string]bool{}
	for _, c := range inst.Clients() {
		for _, g := range c.Groups {
			if cur.GroupHome(g) == config.Source {
				seen[g] = true
			}
		}
		if slices.Contains(c.Clusters, proxy.Source) {
			id := c.ClientID
			if id == "" {
				id = "(no client.id) from " + c.Remote
			}
			clients[id] = true
		}
	}
	groups = append(groups, slices.Sorted(maps.Keys(seen))...)
	a.Gates = append(a.Gates, dependents(GateGroupsOffSource, "groups coordinated on the source", groups))
	a.Gates = append(a.Gates, dependents(GateClientsOffSource, "clients whose requests reached the source in the last 10 min", slices.Sorted(maps.Keys(clients))))
	// Writers kproxy never sees: the bypass check's topics with records
	// written around kproxy in the last hour (their applications lose
	// the source with it).
	var around []string
	for _, bt := range inst.ctrl.Bypass().Topics {
		if time.Since(bt.LastSeen) < time.Hour {
			around = append(around, bt.Topic)
		}
	}
	a.Gates = append(a.Gates, dependents(GateWritersOffSource, "source topics written around kproxy in the last hour", around))
	return a
}

func dependents(gate, what string, names []string) GateResult {
	g := GateResult{Gate: gate, Pass: len(names) == 0, Measured: "none"}
	if len(names) > 0 {
		const show = 10
		list := strings.Join(names[:min(len(names), show)], ", ")
		if len(names) > show {
			list += fmt.Sprintf(" and %d more", len(names)-show)
		}
		g.Measured = fmt.Sprintf("%d %s: %s", len(names), what, list)
	}
	return g
}

// gateProbe measures gates against the running clusters.
type gateProbe struct {
	cfg     *config.Config // the running config: the clusters to ask
	admins  *clusterAdmins
	repl    ReplicationStatus
	rp      *replication // the live maps, for sampled_verify
	maxHold time.Duration
	require []string
	sample  int // cutover.sampled_verify_records
	// bypass is the bypass check's view (its status and interval);
	// compared says whether a topic has had a window compared yet.
	bypass   BypassStatus
	compared func(topic string) bool
}

// cutoverGates measures every gate of moving topic from -> to.
func (p *gateProbe) cutoverGates(ctx context.Context, topic, from, to string) []GateResult {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	parts := p.copyOf(topic, to)
	out := []GateResult{
		p.caughtUp(topic, to, parts),
		p.partitions(ctx, topic, from, to),
		p.topicConfigs(ctx, topic, from, to),
		p.retentionHeadroom(topic, to, parts),
		p.acls(ctx, topic, from, to),
		p.sampledVerify(ctx, topic, from, to, parts),
		p.noBypass(topic, from),
	}
	for i := range out {
		out[i].Required = slices.Contains(p.require, out[i].Gate)
	}
	return out
}

// noBypass passes when the bypass check has seen no record written to the
// source topic around kproxy. Only the source is watched: a topic leaving
// the target (a rollback) passes with "not watched". A topic not compared
// yet (the check needs two looks at it, monitor.bypass_interval apart)
// passes with a note, unless the gate is required: a required gate must be
// measured.
func (p *gateProbe) noBypass(topic, from string) GateResult {
	g := GateResult{Gate: config.GateNoBypass}
	required := slices.Contains(p.require, config.GateNoBypass)
	switch {
	case from != proxy.Source:
		g.Pass, g.Measured = true, "not watched: only the source cluster is checked for writers around kproxy"
	case p.bypass.Interval == "0s":
		g.Pass, g.Measured = !required, "not measured: monitor.bypass_interval is 0 (off)"
	case p.compared == nil || !p.compared(topic):
		g.Pass, g.Measured = !required, fmt.Sprintf("not measured yet: the topic's first window ends within %s of kproxy seeing it; nothing seen so far", p.bypass.Interval)
	default:
		g.Pass, g.Measured = true, fmt.Sprintf("no records written around kproxy (checked every %s)", p.bypass.Interval)
		for _, t := range p.bypass.Topics {
			if t.Topic == topic {
				g.Pass = false
				g.Measured = fmt.Sprintf("%d records written to the source around kproxy, the last %d at %s: repoint that writer to kproxy first",
					t.Records, t.LastRecords, t.LastSeen.UTC().Format(time.RFC3339))
			}
		}
	}
	return g
}

// copyOf is the replicator's view of the copy of topic into to.
func (p *gateProbe) copyOf(topic, to string) []replicator.PartitionStatus {
	all := p.repl.Partitions
	if to == proxy.Source {
		all = p.repl.ToSource
	}
	var out []replicator.PartitionStatus
	for _, ps := range all {
		if ps.Topic == topic {
			out = append(out, ps)
		}
	}
	return out
}

func (p *gateProbe) caughtUp(topic, to string, parts []replicator.PartitionStatus) GateResult {
	g := GateResult{Gate: config.GateCaughtUp}
	if len(parts) == 0 {
		g.Measured = fmt.Sprintf("nothing copies %s into the %s yet", topic, to)
		return g
	}
	var records, bytes, age int64
	var errs []string
	for _, ps := range parts {
		records += ps.LagRecords
		bytes += ps.LagBytes
		age = max(age, ps.RecordLagMillis)
		if ps.Fatal {
			errs = append(errs, fmt.Sprintf("partition %d stopped: %s", ps.Partition, ps.Err))
		}
	}
	hold := p.maxHold.Milliseconds()
	g.Pass = records <= GateMaxLagRecords && bytes <= GateMaxLagBytes && age <= hold && len(errs) == 0
	g.Measured = fmt.Sprintf("lag %d records, %s, oldest uncopied record %s old (limits %d, %s, max_hold %s)",
		records, humanBytes(bytes), time.Duration(age)*time.Millisecond, GateMaxLagRecords, humanBytes(GateMaxLagBytes), p.maxHold)
	if len(errs) > 0 {
		g.Measured += "; " + strings.Join(errs, "; ")
	}
	return g
}

func (p *gateProbe) partitions(ctx context.Context, topic, from, to string) GateResult {
	g := GateResult{Gate: config.GatePartitions}
	count := func(cluster string) (int, error) {
		adm, err := p.admins.get(p.cfg, cluster)
		if err != nil {
			return 0, err
		}
		td, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return 0, err
		}
		d, ok := td[topic]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("no topic %s on the %s", topic, cluster)
		}
		return len(d.Partitions), nil
	}
	nf, err := count(from)
	if err != nil {
		g.Measured = err.Error()
		return g
	}
	nt, err := count(to)
	if err != nil {
		g.Measured = err.Error()
		return g
	}
	g.Pass = nf == nt
	g.Measured = fmt.Sprintf("%s %d, %s %d", from, nf, to, nt)
	return g
}

func (p *gateProbe) topicConfigs(ctx context.Context, topic, from, to string) GateResult {
	g := GateResult{Gate: config.GateTopicConfigs}
	describe := func(cluster string) (map[string]string, error) {
		adm, err := p.admins.get(p.cfg, cluster)
		if err != nil {
			return nil, err
		}
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return nil, err
		}
		rc, err := rcs.On(topic, nil)
		if err != nil {
			return nil, fmt.Errorf("topic configs of %s on the %s: %w", topic, cluster, err)
		}
		vals := map[string]string{}
		for _, c := range rc.Configs {
			vals[c.Key] = c.MaybeValue()
		}
		return vals, nil
	}
	fv, err := describe(from)
	if err != nil {
		g.Measured = err.Error()
		return g
	}
	tv, err := describe(to)
	if err != nil {
		g.Measured = err.Error()
		return g
	}
	var diff []string
	for _, k := range gateConfigKeys {
		if fv[k] != tv[k] {
			diff = append(diff, fmt.Sprintf("%s %s=%q, %s=%q", k, from, fv[k], to, tv[k]))
		}
	}
	g.Pass = len(diff) == 0
	if g.Pass {
		g.Measured = fmt.Sprintf("%d configs equal", len(gateConfigKeys))
	} else {
		g.Measured = "differ: " + strings.Join(diff, "; ")
	}
	return g
}

func (p *gateProbe) retentionHeadroom(topic, to string, parts []replicator.PartitionStatus) GateResult {
	g := GateResult{Gate: config.GateRetentionHeadroom}
	if len(parts) == 0 {
		g.Measured = fmt.Sprintf("nothing copies %s into the %s yet", topic, to)
		return g
	}
	var risky []string
	nearest := int64(-1)
	for _, ps := range parts {
		if ps.RetentionRiskMillis >= 0 && (nearest < 0 || ps.RetentionRiskMillis < nearest) {
			nearest = ps.RetentionRiskMillis
		}
		if ps.RetentionAtRisk {
			risky = append(risky, fmt.Sprint(ps.Partition))
		}
	}
	g.Pass = len(risky) == 0
	switch {
	case len(risky) > 0:
		g.Measured = fmt.Sprintf("retention deletes uncopied records of partitions %s within %s", strings.Join(risky, ","), time.Duration(nearest)*time.Millisecond)
	case nearest < 0:
		g.Measured = "no uncopied record is within reach of retention"
	default:
		g.Measured = fmt.Sprintf("the nearest uncopied record is deleted by retention in %s", time.Duration(nearest)*time.Millisecond)
	}
	return g
}

// acls: the new home holds every ACL the old home has for the topic
// (literal, prefixed and wildcard patterns that cover it). Without an
// authorizer on either cluster there is nothing to compare: the gate
// passes and says it does not apply.
func (p *gateProbe) acls(ctx context.Context, topic, from, to string) GateResult {
	g := GateResult{Gate: config.GateACLs}
	list := func(cluster string) ([]aclEntry, error) {
		cl, err := p.admins.client(p.cfg, cluster)
		if err != nil {
			return nil, err
		}
		all, err := describeACLs(ctx, cl, kmsg.ACLResourceTypeTopic)
		if err != nil {
			return nil, fmt.Errorf("the %s: %w", cluster, err)
		}
		return all, nil
	}
	fa, err := list(from)
	if err == nil {
		var ta []aclEntry
		if ta, err = list(to); err == nil {
			want := topicACLs(fa, []string{topic})
			missing := missingACLs(want, ta)
			g.Pass = len(missing) == 0
			if g.Pass {
				g.Measured = fmt.Sprintf("%d ACLs on the %s cover %s, all on the %s", len(want), from, topic, to)
				return g
			}
			names := make([]string, len(missing))
			for i, a := range missing {
				names[i] = a.String()
			}
			g.Measured = dependents("", fmt.Sprintf("of %d ACLs on the %s for %s missing on the %s", len(want), from, topic, to), names).Measured
			return g
		}
	}
	if errors.Is(err, errNoAuthorizer) {
		g.Pass = true
		g.Measured = "not applicable: " + err.Error() + "; no ACLs to compare"
		return g
	}
	g.Measured = err.Error()
	return g
}

// sampledVerify: the last cutover.sampled_verify_records offsets of each
// partition, read on both clusters and compared through the copy's live
// offset map (verify.Sample, the comparison `kproxy verify` runs).
func (p *gateProbe) sampledVerify(ctx context.Context, topic, from, to string, parts []replicator.PartitionStatus) GateResult {
	g := GateResult{Gate: config.GateSampledVerify}
	var r *replicator.Replicator
	if p.rp != nil {
		r = p.rp.copyInto(to)
	}
	if len(parts) == 0 || r == nil {
		g.Measured = fmt.Sprintf("nothing copies %s into the %s yet", topic, to)
		return g
	}
	fc, err := p.admins.client(p.cfg, from)
	if err != nil {
		g.Measured = err.Error()
		return g
	}
	tc, err := p.admins.client(p.cfg, to)
	if err != nil {
		g.Measured = err.Error()
		return g
	}
	var records int64
	var problems []string
	for _, ps := range parts {
		if ps.Partition < 0 {
			problems = append(problems, ps.Err)
			continue
		}
		m := r.Map(topic, ps.Partition)
		if m == nil {
			problems = append(problems, fmt.Sprintf("partition %d has no offset map yet", ps.Partition))
			continue
		}
		res := verify.Sample(ctx, fc, tc, m, p.sample)
		records += res.Records
		if !res.OK {
			problems = append(problems, fmt.Sprintf("partition %d: %s", ps.Partition, res.Problem))
		}
	}
	g.Pass = len(problems) == 0
	if g.Pass {
		g.Measured = fmt.Sprintf("the last %d offsets of %d partitions: %d records equal on both clusters", p.sample, len(parts), records)
	} else {
		g.Measured = fmt.Sprintf("%d records compared; %s", records, strings.Join(problems, "; "))
	}
	return g
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// requiredGateRefusals measures the required gates of every cutover a
// reload to next would start and returns, per topic failing one, the
// refusal reason. Nothing is measured when next requires no gate.
func (inst *Instance) requiredGateRefusals(ctx context.Context, next *config.Config) map[string]string {
	if len(next.Cutover.Require) == 0 {
		return nil
	}
	doc, err := inst.Plan(ctx, next)
	if err != nil {
		return nil // the reload itself reports a bad table
	}
	out := map[string]string{}
	for _, a := range doc.Actions {
		if a.Kind != "cutover" {
			continue
		}
		var failed []string
		for _, g := range a.Gates {
			if g.Required && !g.Pass {
				failed = append(failed, fmt.Sprintf("gate %s failed: %s", g.Gate, g.Measured))
			}
		}
		if len(failed) > 0 {
			sort.Strings(failed)
			out[a.Subject] = "cutover.require: " + strings.Join(failed, "; ")
		}
	}
	return out
}

// LastPlan is the last plan asked for through POST /plan, which the
// status page shows until a newer one.
type LastPlan struct {
	At time.Time
	// Candidate is the hash of the candidate config; the page says
	// "applied" once the running config is that one.
	Candidate string
	Plan      PlanDoc
}

// servePlan answers POST /plan: the body is a candidate config file, the
// answer its PlanDoc as JSON (400 with the problems when it is invalid).
func (inst *Instance) servePlan(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	candidate, err := config.Parse(body)
	if err != nil {
		http.Error(w, "the candidate config is invalid:\n"+err.Error(), http.StatusBadRequest)
		return
	}
	doc, err := inst.Plan(r.Context(), candidate)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	inst.lastPlan.Store(&LastPlan{At: time.Now(), Candidate: candidate.Hash(), Plan: doc})
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}

// defaultGateRecheck is how often cutovers refused by a required gate are
// measured again.
const defaultGateRecheck = 10 * time.Second

// startGateRecheck starts, unless it runs, the loop that re-measures the
// required gates of refused cutovers and starts each cutover whose gates
// pass now: an operator fixes the cause (the copy catches up, a topic
// config is aligned) and the flip follows, with no second edit of the
// config. The loop ends when no refusal is left or the instance closes
// (Close cancels it and waits for it).
func (inst *Instance) startGateRecheck() {
	if !inst.gateRecheck.CompareAndSwap(false, true) {
		return
	}
	inst.recheckDone.Add(1)
	go func() {
		defer inst.recheckDone.Done()
		defer inst.gateRecheck.Store(false)
		t := time.NewTicker(inst.gateRecheckEvery)
		defer t.Stop()
		for {
			select {
			case <-inst.recheckCtx.Done():
				return
			case <-t.C:
			}
			if !inst.recheckGates() {
				return
			}
		}
	}()
}

// recheckGates measures the required gates of the running config's
// cutovers again and installs the result; it reports whether refusals
// remain.
func (inst *Instance) recheckGates() bool {
	cfg := inst.Config()
	refusals := inst.requiredGateRefusals(inst.recheckCtx, cfg)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.cfg != cfg {
		// A reload came in meanwhile and measured the gates itself.
		return len(inst.ctrl.cuts.gateRefusalsNow()) > 0
	}
	before := inst.ctrl.cuts.gateRefusalsNow()
	for t := range before {
		if _, still := refusals[t]; !still {
			inst.log.Info("the required gates of a refused cutover pass now; the cutover starts", "topic", t)
		}
	}
	inst.ctrl.cuts.setGateRefusals(refusals)
	inst.ctrl.recheck(cfg)
	return len(refusals) > 0
}
