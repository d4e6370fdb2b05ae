package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/proxy"
)

// produceN writes n records to one partition of topic on a cluster directly
// (values "<tag>-<i>") and waits for their acks.
func produceN(t *testing.T, ctx context.Context, boot, topic string, partition int32, n int, tag string) {
	t.Helper()
	cl := replClient(t, boot, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Partition: partition, Value: fmt.Appendf(nil, "%s-%d", tag, i)}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// readThrough consumes one partition of topic from the start through
// kproxy as clientID until it has n records, and returns their values.
func readThrough(t *testing.T, ctx context.Context, listen, clientID, topic string, partition int32, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cl := replClient(t, listen, kgo.ClientID(clientID), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {partition: kgo.NewOffset().AtStart()}}))
	var out []string
	for len(out) < n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("%s reading %s/%d: %v", clientID, topic, partition, err) })
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
	}
	cl.Close()
	return out
}

// clustersOf is the upstream clusters the connections of clientID reached.
func clustersOf(inst *control.Instance, clientID string) []string {
	var out []string
	for _, c := range inst.Clients() {
		if c.ClientID == clientID {
			for _, cl := range c.Clusters {
				if !slices.Contains(out, cl) {
					out = append(out, cl)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func copiedThrough(inst *control.Instance, topic string, partition int32) int64 {
	for _, p := range inst.Status().Replication.Partitions {
		if p.Topic == topic && p.Partition == partition {
			return p.CopiedThrough
		}
	}
	return -1
}

func topicConfig(t *testing.T, ctx context.Context, adm *kadm.Client, topic, key string) string {
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

// Replicate globs, partitions and topic configs followed on real Kafka
// while kproxy runs:
//   - a topic created on the source after start that matches the glob is
//     copied, and a canary reader through kproxy reads it from the target
//     once its copy has caught up;
//   - a topic that matches the glob but cannot be copied (its target topic
//     has another partition count) is read from the source by the same
//     canary, with every record;
//   - a partition added to a replicated topic is added to the target and
//     copied, and the canary reads it from the target;
//   - retention.ms changed on the source reaches the target copy.
func TestSourceWatcherFollowsGlobsPartitionsAndConfigs(t *testing.T) {
	base := replTopic("watch")
	a, b, broken := base+"-a", base+"-b", base+"-broken"
	replCreateTopic(t, a, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	produceN(t, ctx, env.source, a, 0, 10, "a0")

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, err := config.Parse(fmt.Appendf(nil, `listen: %s
admin: %s
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
  topics:
    %q: { route: source, canary: { fetch: target, clients: ["shadow-*"] } }
replicate: [%q]
replication:
  watch_interval: 500ms
`, listen, admin, filepath.Join(t.TempDir(), "state"), env.source, env.target, base+"-*", base+"-*"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := control.Start(ctx, cfg, hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: hclog.Info, Output: os.Stderr}))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	srcAdm, tgtAdm := kadm.NewClient(replClient(t, env.source)), kadm.NewClient(replClient(t, env.target))

	// A topic created after start.
	replCreateTopic(t, b, 1, nil)
	produceN(t, ctx, env.source, b, 0, 30, "b")
	waitFor(t, b+" to be copied and caught up", func() bool {
		st := inst.Status().Replication
		return copiedThrough(inst, b, 0) == 30 && slices.Contains(st.Topics, b) && !slices.Contains(st.NotReady, b)
	})
	got := readThrough(t, ctx, listen, "shadow-b", b, 0, 30)
	if len(got) != 30 || got[0] != "b-0" || got[29] != "b-29" {
		t.Errorf("shadow-b read %d records of %s: %v", len(got), b, got)
	}
	if c := clustersOf(inst, "shadow-b"); !slices.Equal(c, []string{proxy.Target}) {
		t.Errorf("shadow-b's requests reached %v, want only the target (the canary reads the copy)", c)
	}

	// A glob topic whose copy cannot start: the target topic exists with
	// another partition count. Its canary readers stay on the source.
	if _, err := tgtAdm.CreateTopic(ctx, 1, 1, nil, broken); err != nil {
		t.Fatal(err)
	}
	replCreateTopic(t, broken, 2, nil)
	produceN(t, ctx, env.source, broken, 1, 20, "x")
	waitFor(t, "the watcher to try "+broken, func() bool {
		for _, p := range inst.Status().Replication.Partitions {
			if p.Topic == broken && p.Err != "" {
				return true
			}
		}
		return false
	})
	got = readThrough(t, ctx, listen, "shadow-broken", broken, 1, 20)
	if len(got) != 20 || got[19] != "x-19" {
		t.Errorf("shadow-broken read %d records of %s: %v", len(got), broken, got)
	}
	if c := clustersOf(inst, "shadow-broken"); !slices.Equal(c, []string{proxy.Source}) {
		t.Errorf("shadow-broken's requests reached %v, want only the source (nothing copies the topic)", c)
	}

	// A partition added to a replicated topic.
	if _, err := srcAdm.UpdatePartitions(ctx, 3, a); err != nil {
		t.Fatal(err)
	}
	produceN(t, ctx, env.source, a, 2, 15, "a2")
	waitFor(t, "partition 2 of "+a+" to be copied and caught up", func() bool {
		return copiedThrough(inst, a, 2) == 15 && !slices.Contains(inst.Status().Replication.NotReady, a)
	})
	td, err := tgtAdm.ListTopics(ctx, a)
	if err != nil || len(td[a].Partitions) != 3 {
		t.Fatalf("the target copy of %s has %d partitions (%v), want 3", a, len(td[a].Partitions), err)
	}
	got = readThrough(t, ctx, listen, "shadow-a2", a, 2, 15)
	if len(got) != 15 || got[0] != "a2-0" || got[14] != "a2-14" {
		t.Errorf("shadow-a2 read %d records of %s/2: %v", len(got), a, got)
	}
	if c := clustersOf(inst, "shadow-a2"); !slices.Equal(c, []string{proxy.Target}) {
		t.Errorf("shadow-a2's requests reached %v, want only the target", c)
	}

	// A topic config changed on the source.
	if _, err := srcAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("3600000")}}, a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "retention.ms of "+a+" to reach the target", func() bool {
		return topicConfig(t, ctx, tgtAdm, a, "retention.ms") == "3600000"
	})
	// Counted: 2 topics found after start (b and broken), 1 partition
	// added to the target, retention.ms applied.
	// (The target has the value a moment before the counter moves.)
	wants := []string{"kproxy_sync_topics_discovered_total 2", `kproxy_sync_partitions_total{result="created"} 1`,
		`kproxy_sync_topic_configs_total{result="applied"} 1`, `kproxy_sync_acls_total{result="created"} 0`}
	waitMetrics(t, admin, "kproxy_sync_", wants)
}

// waitMetrics waits up to 10 s until kproxy's /metrics lines that start
// with prefix contain each of wants; otherwise the test fails (and goes on)
// showing the lines it saw last.
func waitMetrics(t *testing.T, admin, prefix string, wants []string) {
	t.Helper()
	var metrics string
	if !poll(10*time.Second, 100*time.Millisecond, func() bool {
		metrics = strings.Join(scrape(t, admin, prefix), "\n")
		for _, w := range wants {
			if !strings.Contains(metrics, w) {
				return false
			}
		}
		return true
	}) {
		t.Errorf("metrics lack one of %q:\n%s", wants, metrics)
	}
}

// scrape returns the lines of kproxy's /metrics that start with prefix.
func scrape(t *testing.T, admin, prefix string) []string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// The acls and sampled_verify gates on the harness's brokers, which run
// without an authorizer: acls reports "not applicable" and passes (its
// failing case against real ACLs is TestEveryPlanGateFailsAndPassesOnRealKafka).
// sampled_verify passes on a true copy, fails once the copy lost records
// the source still has (DeleteRecords on the target), refuses a cutover
// that requires it, and passes again once the last records are new ones.
func TestACLAndSampledVerifyGatesOnRealKafka(t *testing.T) {
	topic := replTopic("gates")
	replCreateTopic(t, topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for p := range int32(2) {
		produceN(t, ctx, env.source, topic, p, 20, fmt.Sprint("old", p))
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := fmt.Sprintf("listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nreplicate: [%q]\n",
		listen, filepath.Join(t.TempDir(), "state"), env.source, env.target, topic)
	cfg, err := config.Parse([]byte(base + "routes:\n  default: source\n"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := control.Start(ctx, cfg, hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: hclog.Info, Output: os.Stderr}))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	caughtUp := func(n int64) func() bool {
		return func() bool { return copiedThrough(inst, topic, 0) == n && copiedThrough(inst, topic, 1) == n }
	}
	waitFor(t, "the copy of 2 x 20 records", caughtUp(20))

	cand, err := config.Parse(fmt.Appendf(nil, "%sroutes:\n  default: source\n  topics:\n    %q: target\ncutover:\n  sampled_verify_records: 5\n  require: [acls, sampled_verify]\n", base, topic))
	if err != nil {
		t.Fatal(err)
	}
	gates := func() map[string]control.GateResult {
		t.Helper()
		doc, err := inst.Plan(ctx, cand)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]control.GateResult{}
		for _, a := range doc.Actions {
			if a.Kind == "cutover" && a.Subject == topic {
				for _, g := range a.Gates {
					out[g.Gate] = g
				}
			}
		}
		return out
	}
	g := gates()
	t.Logf("acls: %+v", g[config.GateACLs])
	t.Logf("sampled_verify: %+v", g[config.GateSampledVerify])
	if r := g[config.GateACLs]; !r.Pass || !r.Required || !strings.Contains(r.Measured, "not applicable") || !strings.Contains(r.Measured, "SECURITY_DISABLED") {
		t.Errorf("acls without an authorizer: %+v", r)
	}
	if r := g[config.GateSampledVerify]; !r.Pass || !strings.Contains(r.Measured, ": 10 records equal") {
		t.Errorf("sampled_verify of a true copy: %+v", r)
	}

	// The copy loses its records; the source still has them.
	tadm := kadm.NewClient(replClient(t, env.target))
	ends, err := tadm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tadm.DeleteRecords(ctx, ends.Offsets()); err != nil {
		t.Fatal(err)
	}
	g = gates()
	t.Logf("sampled_verify after DeleteRecords on the copy: %+v", g[config.GateSampledVerify])
	if r := g[config.GateSampledVerify]; r.Pass || !strings.Contains(r.Measured, "gone from it") {
		t.Errorf("sampled_verify of a copy that lost records: %+v", r)
	}
	// Required: a reload's cutover of the topic is refused with the reason.
	inst.Apply(cand)
	var st control.CutoverStatus
	for _, c := range inst.Cutovers() {
		if c.Topic == topic {
			st = c
		}
	}
	if st.State != control.StateRefused || !strings.Contains(st.Reason, "gate sampled_verify failed") {
		t.Errorf("cutover after a reload failing sampled_verify: %+v", st)
	}

	// New records: the last 5 of each partition are copies again, the
	// refused cutover's gates are measured again and it flips.
	for p := range int32(2) {
		produceN(t, ctx, env.source, topic, p, 10, fmt.Sprint("new", p))
	}
	waitFor(t, "the copy of 10 more records per partition", caughtUp(30))
	g = gates()
	if r := g[config.GateSampledVerify]; !r.Pass {
		t.Errorf("sampled_verify once the last records are copies: %+v", r)
	}
	waitFor(t, "the refused cutover to flip once its gates pass", func() bool {
		for _, c := range inst.Cutovers() {
			if c.Topic == topic && c.State == "flipped" {
				return true
			}
		}
		return false
	})
}
