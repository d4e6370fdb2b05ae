package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
)

func gateOf(t *testing.T, doc PlanDoc, topic, gate string) GateResult {
	t.Helper()
	for _, a := range doc.Actions {
		if a.Kind == "cutover" && a.Subject == topic {
			for _, g := range a.Gates {
				if g.Gate == gate {
					return g
				}
			}
		}
	}
	t.Fatalf("plan has no %s gate for a cutover of %s: %+v", gate, topic, doc.Actions)
	return GateResult{}
}

// A plan lists what a candidate config would do and measures each
// cutover's gates; a gate that cutover.require names refuses the reload's
// cutover of that topic with the gate's reason; once the cause is fixed,
// the re-measured gates pass and the topic is cut over without a reload.
func TestPlanGatesAndRequiredGateRefusesCutover(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "payments"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceTo(t, ctx, src, "orders", 100)
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\n",
		listen, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0])
	parse := func(rest string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(base + rest))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := parse("routes:\n  default: source\nreplicate: [orders]\n")
	inst, err := Start(ctx, running, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	// Wait until the copy has all 100 records.
	for {
		var copied int64
		for _, p := range inst.ctrl.Replication().Partitions {
			copied += p.CopiedThrough
		}
		if copied == 100 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replication did not copy 100 records: %+v", inst.ctrl.Replication())
		}
		time.Sleep(20 * time.Millisecond)
	}

	candidate := parse("routes:\n  default: source\n  topics:\n    orders: target\n    payments: target\nreplicate: [orders, payments]\ngroups:\n  billing: target\n")
	doc, err := inst.Plan(ctx, candidate)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{config.GateCaughtUp, config.GatePartitions, config.GateTopicConfigs, config.GateRetentionHeadroom} {
		if r := gateOf(t, doc, "orders", g); !r.Pass || r.Required {
			t.Errorf("orders %s: %+v, want a pass, not required", g, r)
		}
	}
	// payments is not copied yet: caught_up fails and says why; the
	// target lacks the topic, so partitions fails too.
	if r := gateOf(t, doc, "payments", config.GateCaughtUp); r.Pass || !strings.Contains(r.Measured, "nothing copies payments into the target") {
		t.Errorf("payments caught_up: %+v", r)
	}
	if r := gateOf(t, doc, "payments", config.GatePartitions); r.Pass || !strings.Contains(r.Measured, "no topic payments on the target") {
		t.Errorf("payments partitions: %+v", r)
	}
	if doc.Pass || doc.Refused {
		t.Errorf("pass %v refused %v: want a failed gate, nothing required", doc.Pass, doc.Refused)
	}
	kinds := map[string]bool{}
	for _, a := range doc.Actions {
		kinds[a.Kind+" "+a.Subject] = true
	}
	for _, want := range []string{"cutover orders", "cutover payments", "group_move group billing", "replication_start payments"} {
		if !kinds[want] {
			t.Errorf("plan lacks %q: %+v", want, doc.Actions)
		}
	}

	// Removing the source: the topics, groups and clients that still
	// depend on it are named.
	noSource, err := config.Parse(fmt.Appendf(nil, "listen: %s\nstate_dir: %s\nclusters:\n  target: { bootstrap: [%s] }\nroutes:\n  default: target\n",
		listen, t.TempDir(), tgt.ListenAddrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	prx, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.ClientID("still-on-source"))
	if err != nil {
		t.Fatal(err)
	}
	defer prx.Close()
	if err := prx.ProduceSync(ctx, &kgo.Record{Topic: "payments", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A writer around kproxy, as the bypass check reports it.
	inst.ctrl.bypass.mu.Lock()
	inst.ctrl.bypass.report("audit", 12, time.Now())
	inst.ctrl.bypass.mu.Unlock()
	doc, err = inst.Plan(ctx, noSource)
	if err != nil {
		t.Fatal(err)
	}
	removal := map[string]GateResult{}
	for _, a := range doc.Actions {
		if a.Kind == "source_removal" {
			for _, g := range a.Gates {
				removal[g.Gate] = g
			}
		}
	}
	if g := removal[GateClientsOffSource]; g.Pass || !strings.Contains(g.Measured, "still-on-source") {
		t.Errorf("clients_off_source: %+v", g)
	}
	if g := removal[GateTopicsOffSource]; g.Pass || !strings.Contains(g.Measured, "orders") || !strings.Contains(g.Measured, "payments") {
		t.Errorf("topics_off_source: %+v", g)
	}
	if g := removal[GateGroupsOffSource]; g.Pass || !strings.Contains(g.Measured, "groups.default") {
		t.Errorf("groups_off_source: %+v", g)
	}
	if g := removal[GateWritersOffSource]; g.Pass || !strings.Contains(g.Measured, "audit") {
		t.Errorf("writers_off_source: %+v", g)
	}

	// The target's copy of orders keeps records for a shorter time.
	tadm := kadm.NewClient(mustClient(t, tgt))
	if _, err := tadm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("3600000")}}, "orders"); err != nil {
		t.Fatal(err)
	}
	cut := parse("routes:\n  default: source\n  topics:\n    orders: target\nreplicate: [orders]\ncutover:\n  require: [topic_configs]\n")
	doc, err = inst.Plan(ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	r := gateOf(t, doc, "orders", config.GateTopicConfigs)
	if r.Pass || !r.Required || !strings.Contains(r.Measured, `retention.ms source="604800000", target="3600000"`) {
		t.Errorf("orders topic_configs after the change: %+v", r)
	}
	if !doc.Refused {
		t.Error("a failed required gate: the plan says the reload would be refused")
	}
	inst.gateRecheckEvery = 50 * time.Millisecond
	inst.Apply(cut)
	st := cutoverOf(inst, "orders")
	if st.State != StateRefused || st.Home != "source" || !strings.Contains(st.Reason, "cutover.require: gate topic_configs failed") {
		t.Fatalf("orders after a reload failing a required gate: %+v", st)
	}
	// Fixed on the target, the cutover starts by itself: the refused
	// cutover's gates are measured again, with no second reload.
	if _, err := tadm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("604800000")}}, "orders"); err != nil {
		t.Fatal(err)
	}
	for st = cutoverOf(inst, "orders"); st.State != "flipped"; st = cutoverOf(inst, "orders") {
		if ctx.Err() != nil || st.State == "aborted" {
			t.Fatalf("orders after the fix: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cutoverOf(inst *Instance, topic string) CutoverStatus {
	for _, c := range inst.Cutovers() {
		if c.Topic == topic {
			return c
		}
	}
	return CutoverStatus{}
}

// A removal gate passes with no dependents and lists at most ten names.
func TestDependentsGate(t *testing.T) {
	if g := dependents(GateGroupsOffSource, "groups", nil); !g.Pass || g.Measured != "none" {
		t.Errorf("no dependents: %+v", g)
	}
	var names []string
	for i := range 12 {
		names = append(names, fmt.Sprintf("g%02d", i))
	}
	g := dependents(GateGroupsOffSource, "groups coordinated on the source", names)
	if g.Pass || g.Measured != "12 groups coordinated on the source: g00, g01, g02, g03, g04, g05, g06, g07, g08, g09 and 2 more" {
		t.Errorf("twelve dependents: %+v", g)
	}
}

// The no_bypass gate: fails with the count when the source topic was
// written around kproxy; passes when compared and clean; not yet compared
// (or the check off) passes with a note unless the gate is required.
func TestNoBypassGate(t *testing.T) {
	seen := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	st := BypassStatus{Interval: "30s", Checked: seen, Topics: []BypassTopic{{Topic: "audit", Records: 60, LastRecords: 20, LastSeen: seen}}}
	yes := func(string) bool { return true }
	no := func(string) bool { return false }
	for _, c := range []struct {
		name, topic, from string
		st                BypassStatus
		compared          func(string) bool
		require           []string
		pass              bool
		measured          string
	}{
		{"written around", "audit", "source", st, yes, nil, false, "60 records written to the source around kproxy, the last 20 at 2026-12-07T01:00:00Z"},
		{"clean", "orders", "source", st, yes, nil, true, "no records written around kproxy"},
		{"not compared yet", "orders", "source", st, no, nil, true, "not measured yet"},
		{"not compared yet, required", "orders", "source", st, no, []string{"no_bypass"}, false, "not measured yet"},
		{"check off, required", "orders", "source", BypassStatus{Interval: "0s"}, no, []string{"no_bypass"}, false, "monitor.bypass_interval is 0"},
		{"leaving the target", "audit", "target", st, yes, nil, true, "only the source cluster is checked"},
	} {
		g := (&gateProbe{bypass: c.st, compared: c.compared, require: c.require}).noBypass(c.topic, c.from)
		if g.Pass != c.pass || !strings.Contains(g.Measured, c.measured) {
			t.Errorf("%s: pass %v %q; want pass %v and %q", c.name, g.Pass, g.Measured, c.pass, c.measured)
		}
	}
}
