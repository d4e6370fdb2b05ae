package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
)

// Every plan gate fails once and passes once on real Kafka, read from the
// admin API's POST /plan as `kproxy plan -o json` reads it. Both clusters
// are private Kafka 3.9.2 brokers with StandardAuthorizer and SASL_SSL
// (the passthrough test's broker; kproxy's user is a super user), so the
// acls gate compares real ACLs and ACL sync copies them. Topic t carries
// most gates; topic tp the partition count.
//
//   - fail: t's target copy has max.message.bytes set differently
//     (topic_configs), the source has ACLs for t and a group the target
//     lacks (acls), t's copy lost its records (sampled_verify), tp gained a
//     partition on the source with partition sync off (partitions); with
//     the target broker paused (SIGSTOP) 1,500 records wait uncopied in a
//     topic whose retention is 30 minutes (caught_up, retention_headroom);
//     records written straight to the source (no_bypass,
//     writers_off_source); topics, groups and a client still on the source
//     (topics_off_source, groups_off_source, clients_off_source).
//   - pass: the same gates once the target's override is gone, partition
//     and ACL sync are switched on by a reload (the target then has tp's
//     new partition, and the source's topic and group ACLs: ACL sync on
//     real Kafka), the broker resumed and the copy caught up with new
//     records; the removal gates on a kproxy whose routes, groups and
//     client are all on the target.
func TestEveryPlanGateFailsAndPassesOnRealKafka(t *testing.T) {
	const pw = "kproxy-gates-pw-51c8"
	bs := startSecureBrokers(t,
		secureBrokerOpts{user: "kproxy", pass: pw, authorizer: true, ports: lanePorts(t, 1)},
		secureBrokerOpts{user: "kproxy", pass: pw, authorizer: true, ports: lanePorts(t, 2)})
	src, tgt := bs[0], bs[1]
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	manual := kgo.RecordPartitioner(kgo.ManualPartitioner())
	srcCl, tgtCl := src.client(t, "kproxy", pw, manual), tgt.client(t, "kproxy", pw)
	defer srcCl.Close()
	defer tgtCl.Close()
	srcAdm, tgtAdm := kadm.NewClient(srcCl), kadm.NewClient(tgtCl)

	stamp := time.Now().UnixNano()
	topic, tp, group := fmt.Sprintf("gates-%d", stamp), fmt.Sprintf("gates-parts-%d", stamp), "gates-billing"
	// 30 minutes of retention: uncopied records are then within the
	// replicator's hour of warning (retention_headroom), and nothing is
	// deleted while the test runs.
	if _, err := srcAdm.CreateTopic(ctx, 2, 1, map[string]*string{"retention.ms": kadm.StringPtr("1800000")}, topic); err != nil {
		t.Fatal(err)
	}
	src.createTopic(t, "kproxy", pw, tp, 1)

	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	t.Setenv("KPROXY_IT_GATES_PASSWORD", pw)
	clusters := func(bs ...*secureBroker) string {
		s := "clusters:\n"
		for i, b := range bs {
			name := []string{"source", "target"}[i+2-len(bs)]
			s += fmt.Sprintf("  %s:\n    bootstrap: [%s]\n    tls: { ca_file: %s }\n    sasl: { mechanism: SCRAM-SHA-512, username: kproxy, password_env: KPROXY_IT_GATES_PASSWORD }\n",
				name, b.addr, b.caFile)
		}
		return s
	}
	head := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\n", listen, admin, filepath.Join(dir, "state")) + clusters(src, tgt) +
		fmt.Sprintf("replicate: [%q, %q]\nmonitor:\n  bypass_interval: 1s\n", topic, tp)
	running := func(sync bool) *config.Config {
		c, err := config.Parse(fmt.Appendf(nil, "%sroutes:\n  default: source\nreplication:\n  watch_interval: 500ms\n  produce_timeout: 5s\n  sync: { partitions: %v, acls: %v }\n", head, sync, sync))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	inst, err := control.Start(ctx, running(false), hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: hclog.Info, Output: os.Stderr}))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()

	cutover := head + fmt.Sprintf("routes:\n  default: source\n  topics:\n    %q: target\n    %q: target\ncutover:\n  sampled_verify_records: 5\n", topic, tp)
	// The source removed: kproxy serves everything from the target.
	removal := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\n", listen, admin, filepath.Join(dir, "state")) + clusters(tgt) +
		"routes:\n  default: target\n"

	// Every record of t goes through kproxy, so the bypass check sees
	// only kproxy's own writes until the test writes around it.
	app := replClient(t, listen, kgo.ClientID("gates-app"), manual)
	produce := func(cl *kgo.Client, topic string, partition int32, n int, tag string) {
		t.Helper()
		for i := range n {
			cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: partition, Value: fmt.Appendf(nil, "%s-%d", tag, i)}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for p := range int32(2) {
		produce(app, topic, p, 20, fmt.Sprint("old", p))
	}
	caughtUp := func(p0, p1 int64) func() bool {
		return func() bool { return copiedThrough(inst, topic, 0) == p0 && copiedThrough(inst, topic, 1) == p1 }
	}
	waitFor(t, "the copy of 2 x 20 records", caughtUp(20, 20))

	// The mismatches.
	if _, err := tgtAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("2000000")}}, topic); err != nil {
		t.Fatal(err)
	}
	src.allowUser(t, "kproxy", pw, "alice", topic)
	groupACL := kadm.NewACLs().Allow("User:alice").Groups(group).Operations(kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral)
	if _, err := srcAdm.CreateACLs(ctx, groupACL); err != nil {
		t.Fatal(err)
	}
	if _, err := srcAdm.UpdatePartitions(ctx, 2, tp); err != nil {
		t.Fatal(err)
	}
	ends, err := tgtAdm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tgtAdm.DeleteRecords(ctx, ends.Offsets()); err != nil {
		t.Fatal(err)
	}

	type gateKey struct{ subject, gate string }
	seen := map[string][2]string{} // gate → first fail, first pass (for the log)
	plan := func(candidate string) map[gateKey]control.GateResult {
		t.Helper()
		resp, err := http.Post("http://"+admin+"/plan", "application/yaml", bytes.NewReader([]byte(candidate)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /plan: %s: %s", resp.Status, body)
		}
		var doc control.PlanDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("POST /plan answered %s: %v", body, err)
		}
		out := map[gateKey]control.GateResult{}
		for _, a := range doc.Actions {
			for _, g := range a.Gates {
				out[gateKey{a.Subject, g.Gate}] = g
			}
		}
		return out
	}
	// want checks one gate's result, and that its measured value says
	// what it measured.
	want := func(gs map[gateKey]control.GateResult, subject, gate string, pass bool, measured string) {
		t.Helper()
		g, ok := gs[gateKey{subject, gate}]
		switch {
		case !ok:
			t.Errorf("the plan has no gate %s of %s", gate, subject)
			return
		case g.Pass != pass || !strings.Contains(g.Measured, measured):
			t.Errorf("gate %s of %s: pass %v, measured %q; want pass %v and %q", gate, subject, g.Pass, g.Measured, pass, measured)
		}
		t.Logf("%s of %s: pass=%v: %s", gate, subject, g.Pass, g.Measured)
		s := seen[gate]
		if i := map[bool]int{false: 0, true: 1}[g.Pass]; s[i] == "" {
			s[i] = g.Measured
		}
		seen[gate] = s
	}
	// The bypass check needs two looks at t before it measures.
	var gs map[gateKey]control.GateResult
	waitFor(t, "the bypass check to compare "+topic, func() bool {
		gs = plan(cutover)
		return strings.HasPrefix(gs[gateKey{topic, config.GateNoBypass}].Measured, "no records written around kproxy")
	})
	want(gs, topic, config.GateCaughtUp, true, "lag 0 records")
	want(gs, topic, config.GatePartitions, true, "source 2, target 2")
	want(gs, tp, config.GatePartitions, false, "source 2, target 1")
	want(gs, topic, config.GateTopicConfigs, false, `max.message.bytes source="1048588", target="2000000"`)
	want(gs, topic, config.GateRetentionHeadroom, true, "no uncopied record is within reach of retention")
	want(gs, topic, config.GateACLs, false, "3 of 3 ACLs on the source for "+topic+" missing on the target")
	want(gs, topic, config.GateSampledVerify, false, "gone from it")
	want(gs, topic, config.GateNoBypass, true, "no records written around kproxy")
	gs = plan(removal)
	want(gs, "clusters.source", control.GateTopicsOffSource, false, "2 topics still produced to, fetched from or at home on the source: "+topic+", "+tp)
	want(gs, "clusters.source", control.GateGroupsOffSource, false, "groups.default")
	want(gs, "clusters.source", control.GateClientsOffSource, false, "gates-app")
	want(gs, "clusters.source", control.GateWritersOffSource, true, "none")

	// The target paused: the next records wait uncopied.
	if err := tgt.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			_ = tgt.proc.Signal(syscall.SIGCONT)
		}
	}()
	produce(app, topic, 0, 1500, "held")
	// The copy learns the source's new end once its produce to the paused
	// target times out (replication.produce_timeout, 5 s here), and the
	// risk at the monitor's next pass.
	if !poll(150*time.Second, 250*time.Millisecond, func() bool {
		for _, p := range inst.Status().Replication.Partitions {
			if p.Topic == topic && p.Partition == 0 {
				return p.LagRecords >= 1500 && p.RetentionAtRisk
			}
		}
		return false
	}) {
		t.Fatalf("the copy of %s/0 did not report 1,500 records of lag at retention risk: %+v", topic, inst.Status().Replication.Partitions)
	}
	gs = plan(cutover)
	want(gs, topic, config.GateCaughtUp, false, "lag 1500 records")
	want(gs, topic, config.GateRetentionHeadroom, false, "retention deletes uncopied records of partitions 0 within")
	if err := tgt.proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	paused = false

	// The fixes: the target's override removed, partition and ACL sync
	// switched on, and new records for the sample.
	if _, err := tgtAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "max.message.bytes"}}, topic); err != nil {
		t.Fatal(err)
	}
	inst.Apply(running(true))
	produce(app, topic, 1, 10, "new1")
	if !poll(120*time.Second, 250*time.Millisecond, caughtUp(1520, 30)) {
		t.Fatalf("the copy did not catch up after the target resumed: %+v", inst.Status().Replication.Partitions)
	}
	// ACL sync on real Kafka: the source's topic and group ACLs are on
	// the target, created by kproxy.
	waitFor(t, "the source's ACLs on the target", func() bool {
		res, err := tgtAdm.DescribeACLs(ctx, kadm.NewACLs().AnyResource().Allow("User:alice").AllowHosts().
			Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny))
		if err != nil {
			return false
		}
		var n int
		for _, r := range res {
			for _, d := range r.Described {
				if d.Principal == "User:alice" && (d.Name == topic || d.Name == group) {
					n++
				}
			}
		}
		return n == 4
	})
	waitFor(t, "partition sync to add "+tp+"'s partition on the target", func() bool {
		td, err := tgtAdm.ListTopics(ctx, tp)
		return err == nil && len(td[tp].Partitions) == 2
	})
	// Counted: the 3 topic ACLs and the group's, and tp's partition.
	wants := []string{`kproxy_sync_acls_total{result="created"} 4`, `kproxy_sync_partitions_total{result="created"} 1`}
	waitMetrics(t, admin, "kproxy_sync_", wants)
	gs = plan(cutover)
	want(gs, topic, config.GateCaughtUp, true, "lag 0 records")
	want(gs, tp, config.GatePartitions, true, "source 2, target 2")
	want(gs, topic, config.GateTopicConfigs, true, "configs equal")
	want(gs, topic, config.GateRetentionHeadroom, true, "no uncopied record is within reach of retention")
	want(gs, topic, config.GateACLs, true, "3 ACLs on the source cover "+topic+", all on the target")
	want(gs, topic, config.GateSampledVerify, true, ": 10 records equal on both clusters")

	// A writer around kproxy.
	produce(srcCl, topic, 1, 7, "direct")
	waitFor(t, "the bypass check to report "+topic, func() bool {
		gs = plan(cutover)
		return !gs[gateKey{topic, config.GateNoBypass}].Pass
	})
	want(gs, topic, config.GateNoBypass, false, "7 records written to the source around kproxy")
	gs = plan(removal)
	want(gs, "clusters.source", control.GateWritersOffSource, false, "1 source topics written around kproxy in the last hour: "+topic)

	// A kproxy with every route, group and client on the target may lose
	// the source.
	listen2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	onTarget, err := config.Parse([]byte(fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\n", listen2, admin2, filepath.Join(dir, "state2")) +
		clusters(src, tgt) + "routes:\n  default: target\ngroups:\n  default: target\nmonitor:\n  bypass_interval: 1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	inst2, err := control.Start(ctx, onTarget, hclog.New(&hclog.LoggerOptions{Name: "kproxy2", Level: hclog.Info, Output: os.Stderr}))
	if err != nil {
		t.Fatal(err)
	}
	defer inst2.Close()
	onlyTarget := fmt.Sprintf("gates-target-%d", stamp)
	if _, err := tgtAdm.CreateTopic(ctx, 1, 1, nil, onlyTarget); err != nil {
		t.Fatal(err)
	}
	app2 := replClient(t, listen2, kgo.ClientID("gates-app-on-target"), manual)
	produce(app2, onlyTarget, 0, 5, "on-target")
	admin = admin2
	gs = plan(fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\n", listen2, admin2, filepath.Join(dir, "state2")) + clusters(tgt) + "routes:\n  default: target\n")
	for _, g := range []string{control.GateTopicsOffSource, control.GateGroupsOffSource, control.GateClientsOffSource, control.GateWritersOffSource} {
		want(gs, "clusters.source", g, true, "none")
	}

	for _, g := range append(append([]string(nil), config.CutoverGates...), control.GateTopicsOffSource, control.GateGroupsOffSource, control.GateClientsOffSource, control.GateWritersOffSource) {
		if s := seen[g]; s[0] == "" || s[1] == "" {
			t.Errorf("gate %s: failed with %q, passed with %q; want one of each", g, s[0], s[1])
		}
	}
}
