package control

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// waitFor polls cond until it holds or ctx ends (then fails with what).
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func targetConfig(t *testing.T, ctx context.Context, adm *kadm.Client, topic, key string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return ""
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		return ""
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return ""
}

// The source watcher follows the source while kproxy runs: a topic created
// after start that matches a replicate glob is copied and, once its copy
// has caught up, its canary readers are served from the target (before,
// from the source); partitions added to a replicated topic are added to
// the target and copied; a source topic config change reaches the target
// (a denied key does not); the source's ACLs for replicated topics and
// groups are created on the target, and no other.
func TestSourceWatcherFollowsTopicsPartitionsConfigsAndACLs(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "logs.a"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceTo(t, ctx, src, "logs.a", 20)
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	inst := startYAML(t, ctx, fmt.Appendf(nil, `listen: %s
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
  topics:
    "logs.*": { route: source, canary: { fetch: target, clients: ["shadow"] } }
replicate: ["logs.*"]
replication:
  watch_interval: 200ms
  sync: { acls: true }
`, listen, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0]))
	defer inst.Close()
	router := func() proxy.Router { return inst.ctrl.overlay.router() }
	srcAdm, tgtAdm := kadm.NewClient(mustClient(t, src)), kadm.NewClient(mustClient(t, tgt))

	// A topic that matches the glob but is not copied is never read from
	// the target, and never written there.
	if got := router().FetchCluster("logs.none", "shadow", ""); got != proxy.Source {
		t.Errorf("canary fetch of an uncopied glob topic goes to the %s", got)
	}
	waitFor(t, ctx, "logs.a's copy to catch up and serve the canary", func() bool {
		return router().FetchCluster("logs.a", "shadow", "") == proxy.Target
	})

	// A topic created after start.
	if _, err := srcAdm.CreateTopic(ctx, 1, 1, nil, "logs.b"); err != nil {
		t.Fatal(err)
	}
	if got := router().ProduceCluster("logs.b", "x"); got != proxy.Source {
		t.Errorf("produce of a new glob topic goes to the %s", got)
	}
	produceTo(t, ctx, src, "logs.b", 10)
	waitFor(t, ctx, "logs.b to be copied", func() bool {
		for _, p := range inst.ctrl.Replication().Partitions {
			if p.Topic == "logs.b" && p.CopiedThrough == 10 {
				return true
			}
		}
		return false
	})
	waitFor(t, ctx, "logs.b's canary to read the target", func() bool {
		return router().FetchCluster("logs.b", "shadow", "") == proxy.Target
	})
	if got := router().FetchCluster("logs.b", "other", ""); got != proxy.Source {
		t.Errorf("a reader outside the canary reads logs.b from the %s", got)
	}
	if n := counterValue(t, inst.ctrl.watch.metrics.topics); n != 1 {
		t.Errorf("kproxy_sync_topics_discovered_total = %v, want 1", n)
	}

	// A partition added to a replicated topic.
	if _, err := srcAdm.UpdatePartitions(ctx, 3, "logs.a"); err != nil {
		t.Fatal(err)
	}
	p2, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.DefaultProduceTopic("logs.a"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p2.Produce(ctx, &kgo.Record{Partition: 2, Value: fmt.Append(nil, i)}, nil)
	}
	if err := p2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p2.Close()
	waitFor(t, ctx, "partition 2 of logs.a to be copied", func() bool {
		for _, p := range inst.ctrl.Replication().Partitions {
			if p.Topic == "logs.a" && p.Partition == 2 && p.CopiedThrough == 5 {
				return true
			}
		}
		return false
	})
	td, err := tgtAdm.ListTopics(ctx, "logs.a")
	if err != nil || len(td["logs.a"].Partitions) != 3 {
		t.Errorf("target logs.a: %v partitions, %v", len(td["logs.a"].Partitions), err)
	}
	if m, ok := inst.ctrl.repl.Map(proxy.Target, "logs.a", 2); !ok || m == nil {
		t.Errorf("no offset map for the new partition on the target")
	}
	if n := counterValue(t, inst.ctrl.watch.metrics.partitions.WithLabelValues("created")); n != 1 {
		t.Errorf("kproxy_sync_partitions_total{created} = %v, want 1", n)
	}

	// Topic configs: an allowed key follows, a denied one does not.
	if _, err := srcAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("3600000")},
		{Op: kadm.SetConfig, Name: "compression.type", Value: kadm.StringPtr("gzip")},
	}, "logs.a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "retention.ms to reach the target", func() bool {
		return targetConfig(t, ctx, tgtAdm, "logs.a", "retention.ms") == "3600000"
	})
	if v := targetConfig(t, ctx, tgtAdm, "logs.a", "compression.type"); v == "gzip" {
		t.Errorf("compression.type (denied by default) was synced: %q", v)
	}
	if n := counterValue(t, inst.ctrl.watch.metrics.configs.WithLabelValues("applied")); n < 1 {
		t.Errorf("kproxy_sync_topic_configs_total{applied} = %v", n)
	}

	// ACLs: kfake keeps ACLs without enforcing them.
	mk := func(rt kmsg.ACLResourceType, name string, pt kmsg.ACLResourcePatternType, principal string) aclEntry {
		return aclEntry{resType: rt, name: name, pattern: pt, principal: principal, host: "*",
			operation: kmsg.ACLOperationRead, permission: kmsg.ACLPermissionTypeAllow}
	}
	synced := []aclEntry{
		mk(kmsg.ACLResourceTypeTopic, "logs.a", kmsg.ACLResourcePatternTypeLiteral, "User:alice"),
		mk(kmsg.ACLResourceTypeTopic, "logs.", kmsg.ACLResourcePatternTypePrefixed, "User:bob"),
		mk(kmsg.ACLResourceTypeGroup, "billing", kmsg.ACLResourcePatternTypeLiteral, "User:alice"),
	}
	other := mk(kmsg.ACLResourceTypeTopic, "payments", kmsg.ACLResourcePatternTypeLiteral, "User:carol")
	errs, err := createACLs(ctx, mustClient(t, src), append(slices.Clone(synced), other))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		if e != nil {
			t.Fatal(e)
		}
	}
	tgtCl := mustClient(t, tgt)
	var onTarget []aclEntry
	waitFor(t, ctx, "the ACLs to reach the target", func() bool {
		onTarget = nil
		for _, rt := range []kmsg.ACLResourceType{kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup} {
			got, err := describeACLs(ctx, tgtCl, rt)
			if err != nil {
				return false
			}
			onTarget = append(onTarget, got...)
		}
		return len(missingACLs(synced, onTarget)) == 0
	})
	if slices.Contains(onTarget, other) {
		t.Errorf("an ACL of a topic that is not replicated was copied: %v", other)
	}
	if n := counterValue(t, inst.ctrl.watch.metrics.acls.WithLabelValues("created")); n != 3 {
		t.Errorf("kproxy_sync_acls_total{created} = %v, want 3", n)
	}
}

// The router never sends a replicated topic's produce to the target unless
// the controller pinned it there (a flip), and its fetches only once the
// target is ready; a topic that is not replicated follows the table.
func TestRouterKeepsUnreadyReplicatedTopicsOnTheSource(t *testing.T) {
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:9\nstate_dir: /tmp/x\nclusters:\n  source: { bootstrap: [a:1] }\n  target: { bootstrap: [b:1] }\nroutes:\n  default: target\nreplicate: [\"logs.*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	o := newOverlay(sinkFunc(func(proxy.Router) {}))
	o.targetReady = func(topic string) bool { return ready[topic] }
	o.setTopics(table, map[string]string{"logs.flipped": proxy.Target}, nil)
	r := o.router()
	for _, c := range []struct {
		topic, produce, fetch string
	}{
		{"logs.new", proxy.Source, proxy.Source},
		{"logs.flipped", proxy.Target, proxy.Source},
		{"other", proxy.Target, proxy.Target},
	} {
		if got := r.ProduceCluster(c.topic, ""); got != c.produce {
			t.Errorf("produce %s: %s, want %s", c.topic, got, c.produce)
		}
		if got := r.FetchCluster(c.topic, "", ""); got != c.fetch {
			t.Errorf("fetch %s: %s, want %s", c.topic, got, c.fetch)
		}
	}
	ready["logs.new"] = true
	if got := r.FetchCluster("logs.new", "", ""); got != proxy.Target {
		t.Errorf("fetch of a ready topic: %s", got)
	}
	if got := r.ProduceCluster("logs.new", ""); got != proxy.Source {
		t.Errorf("produce of a ready but unflipped topic: %s", got)
	}
}

type sinkFunc func(proxy.Router)

func (f sinkFunc) SetRouter(r proxy.Router) { f(r) }

// configChanges follows source changes and fills in what the target never
// set, but keeps a target value chosen on purpose, leaves broker defaults
// and denied keys alone.
func TestConfigChanges(t *testing.T) {
	dyn, def := kmsg.ConfigSourceDynamicTopicConfig, kmsg.ConfigSourceDefaultConfig
	rc := func(kvs ...any) kadm.ResourceConfig {
		var r kadm.ResourceConfig
		for i := 0; i < len(kvs); i += 3 {
			r.Configs = append(r.Configs, kadm.Config{Key: kvs[i].(string), Value: kadm.StringPtr(kvs[i+1].(string)), Source: kvs[i+2].(kmsg.ConfigSource)})
		}
		return r
	}
	sync := config.Sync{TopicConfigs: true, ConfigKeysDeny: config.DefaultConfigKeysDeny}
	src := rc("retention.ms", "1000", dyn, "segment.ms", "50", dyn, "max.message.bytes", "9", dyn, "compression.type", "gzip", dyn, "flush.ms", "1", def)
	tgt := rc("retention.ms", "2000", dyn, "segment.ms", "60", def, "max.message.bytes", "9", dyn, "compression.type", "producer", dyn, "flush.ms", "2", def)
	names := func(cs []kadm.AlterConfig) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name+"="+*c.Value)
		}
		return fmt.Sprint(out)
	}
	// First sight: segment.ms is filled in; retention.ms (set on both) is
	// kept; compression.type is denied; flush.ms is two broker defaults.
	if got := names(configChanges(sync, src, tgt, nil)); got != "[segment.ms=50]" {
		t.Errorf("first pass: %s", got)
	}
	// The source changed retention.ms since the last pass: it follows.
	seen := map[string]string{"retention.ms": "5000", "segment.ms": "50", "max.message.bytes": "9", "compression.type": "zstd", "flush.ms": "1"}
	if got := names(configChanges(sync, src, tgt, seen)); got != "[retention.ms=1000]" {
		t.Errorf("after a source change: %s", got)
	}
	// Nothing changed on the source: a target edit stays.
	if got := names(configChanges(sync, src, tgt, sourceValues(src))); got != "[]" {
		t.Errorf("no source change: %s", got)
	}
}

// The acls gate fails while the target lacks an ACL the source has for the
// topic and passes once it has it; sampled_verify passes on a true copy and
// fails once the copy lost records the source still has.
func TestACLAndSampledVerifyGates(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceTo(t, ctx, src, "orders", 40)
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nreplicate: [orders]\n",
		listen, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0])
	inst := startYAML(t, ctx, []byte(base+"routes:\n  default: source\n"))
	defer inst.Close()
	waitFor(t, ctx, "the copy of 40 records", func() bool {
		var n int64
		for _, p := range inst.ctrl.Replication().Partitions {
			n += p.CopiedThrough
		}
		return n == 40
	})
	cand, err := config.Parse([]byte(base + "routes:\n  default: source\n  topics:\n    orders: target\ncutover:\n  sampled_verify_records: 5\n  require: [acls, sampled_verify]\n"))
	if err != nil {
		t.Fatal(err)
	}
	plan := func() (GateResult, GateResult) {
		doc, err := inst.Plan(ctx, cand)
		if err != nil {
			t.Fatal(err)
		}
		return gateOf(t, doc, "orders", config.GateACLs), gateOf(t, doc, "orders", config.GateSampledVerify)
	}
	var want int64 // the last 5 offsets of each partition (all data records)
	for _, p := range inst.ctrl.Replication().Partitions {
		want += min(5, p.CopiedThrough)
	}
	a, v := plan()
	if !a.Pass || !a.Required || !strings.Contains(a.Measured, "0 ACLs on the source cover orders") {
		t.Errorf("acls with no ACLs anywhere: %+v", a)
	}
	if !v.Pass || !v.Required || !strings.Contains(v.Measured, fmt.Sprintf(": %d records equal", want)) {
		t.Errorf("sampled_verify of a true copy: %+v", v)
	}

	acl := aclEntry{resType: kmsg.ACLResourceTypeTopic, name: "ord", pattern: kmsg.ACLResourcePatternTypePrefixed, principal: "User:alice",
		host: "*", operation: kmsg.ACLOperationWrite, permission: kmsg.ACLPermissionTypeAllow}
	if errs, err := createACLs(ctx, mustClient(t, src), []aclEntry{acl}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	if a, _ = plan(); a.Pass || !strings.Contains(a.Measured, "missing on the target") || !strings.Contains(a.Measured, "User:alice") {
		t.Errorf("acls with one missing on the target: %+v", a)
	}
	if errs, err := createACLs(ctx, mustClient(t, tgt), []aclEntry{acl}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	if a, _ = plan(); !a.Pass {
		t.Errorf("acls once the target has it: %+v", a)
	}

	// Delete the copy's records: the source still has them.
	tadm := kadm.NewClient(mustClient(t, tgt))
	ends, err := tadm.ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tadm.DeleteRecords(ctx, kadm.Offsets(ends.Offsets())); err != nil {
		t.Fatal(err)
	}
	if _, v = plan(); v.Pass || !strings.Contains(v.Measured, "gone from it") {
		t.Errorf("sampled_verify of a copy that lost records: %+v", v)
	}
}

// Topic configs are compared every replication.sync.interval, not every
// watch pass: describing every replicated topic's configs on both clusters
// is the part of a pass that grows with the topics (at 1,000 topics it
// cost kproxy 10% of a core and the source broker 17%, idle). New
// partitions are still followed every pass.
func TestSourceWatcherSyncsConfigsEverySyncInterval(t *testing.T) {
	inst, src, tgt, ctx := startWatcher(t, "watch_interval: 200ms\n  sync: { interval: 1h }")
	srcAdm, tgtAdm := kadm.NewClient(mustClient(t, src)), kadm.NewClient(mustClient(t, tgt))
	waitFor(t, ctx, "the first pass's config sync", func() bool {
		return !inst.ctrl.watch.lastSync().IsZero()
	})

	if _, err := srcAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("3600000")},
	}, "logs.a"); err != nil {
		t.Fatal(err)
	}
	if _, err := srcAdm.UpdatePartitions(ctx, 2, "logs.a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "partition 1 of logs.a to be followed", func() bool {
		for _, p := range inst.ctrl.Replication().Partitions {
			if p.Topic == "logs.a" && p.Partition == 1 {
				return true
			}
		}
		return false
	})
	time.Sleep(600 * time.Millisecond) // three more passes
	if v := targetConfig(t, ctx, tgtAdm, "logs.a", "retention.ms"); v == "3600000" {
		t.Errorf("retention.ms was synced within sync.interval (1h): %q", v)
	}
}

// A topic whose copy a cutover stopped to seal it is in no copy and has no
// new home until the flip is adopted. The source watcher must not take it
// for a new topic then: it restarted the copy into the target mid-flip in
// a clean-clone run, and 12 records were written twice. Here the window
// is held open (the copy stopped as the seal does, no flip adopted) for
// several passes.
func TestSourceWatcherLeavesATopicInAFlipAlone(t *testing.T) {
	inst, _, _, ctx := startWatcher(t, "watch_interval: 100ms")
	waitFor(t, ctx, "logs.a to be copied", func() bool {
		for _, p := range inst.ctrl.Replication().Partitions {
			if p.Topic == "logs.a" && p.CopiedThrough == 5 {
				return true
			}
		}
		return false
	})
	if _, err := inst.ctrl.repl.stopCopy("logs.a", proxy.Target); err != nil {
		t.Fatal(err)
	}
	before := counterValue(t, inst.ctrl.watch.metrics.topics)
	time.Sleep(time.Second) // ten watch passes
	if inst.ctrl.repl.copiesInto("logs.a", proxy.Target) {
		t.Fatalf("the watcher copied logs.a into the target again while its flip was sealing it")
	}
	if n := counterValue(t, inst.ctrl.watch.metrics.topics); n != before {
		t.Fatalf("kproxy_sync_topics_total went from %v to %v during the flip", before, n)
	}
	// An aborted flip resumes the copy: the topic is an ordinary copied
	// topic again.
	if err := inst.ctrl.repl.startCopy("logs.a", proxy.Target); err != nil {
		t.Fatal(err)
	}
	if !inst.ctrl.repl.copiesInto("logs.a", proxy.Target) || !inst.ctrl.repl.knows("logs.a") {
		t.Fatalf("after the copy resumed: copies %v knows %v", inst.ctrl.repl.copiesInto("logs.a", proxy.Target), inst.ctrl.repl.knows("logs.a"))
	}
}

// startWatcher starts an instance that replicates "logs.*" from a kfake
// source holding logs.a (one partition, 5 records) into an empty kfake
// target, with the given keys under replication:. The context ends with
// the test (60 s at most).
func startWatcher(t *testing.T, replication string) (*Instance, *kfake.Cluster, *kfake.Cluster, context.Context) {
	t.Helper()
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "logs.a"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	produceTo(t, ctx, src, "logs.a", 5)
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	inst := startYAML(t, ctx, fmt.Appendf(nil, `listen: %s
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes: { default: source }
replicate: ["logs.*"]
replication:
  %s
`, listen, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0], replication))
	t.Cleanup(func() { inst.Close() })
	return inst, src, tgt, ctx
}
