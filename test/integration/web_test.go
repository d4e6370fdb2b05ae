package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
)

// chromium is Debian's headless browser (apt-get install chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: apt-get install -y chromium (these tests do not skip)")
	return ""
}

// browse runs headless Chromium on url with args (--dump-dom,
// --screenshot=...) and returns its stdout.
func browse(t *testing.T, exe, profile, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir=" + profile, "--window-size=1400,900"}, append(args, url)...)...)
	cmd.Dir = profile
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}

// The status page in a real browser during a live cutover on real Kafka:
// an open transaction on the topic keeps the cutover holding, the page
// (as Chromium renders it) shows the topic holding on its source home;
// once the transaction commits the cutover drains and flips, and the page
// shows it flipped with the target as home. Before the reload, `kproxy
// plan` (the binary) measures the cutover's gates against both clusters:
// with the target's retention.ms changed, the required topic_configs gate
// fails (exit 1) and a reload is refused for the topic; put back, every
// gate passes (exit 0).
// With KPROXY_SCREENSHOT_DIR set, the test saves the two screenshots the
// README shows.
func TestStatusPageInChromiumDuringCutover(t *testing.T) {
	browser := chromium(t)
	profile := t.TempDir()
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("page")
	replCreateTopic(t, topic, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nreplicate: [%q]\ncutover: { max_hold: 90s }\ngroups:\n  billing: source\n",
		listen, admin, filepath.Join(dir, "state"), env.source, env.target, topic)
	cfg, err := config.Parse([]byte(base + "routes:\n  default: source\n"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := control.Start(ctx, cfg, hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: hclog.Warn, Output: os.Stderr}))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()

	writer := replClient(t, listen, kgo.ClientID("billing-writer"), kgo.DefaultProduceTopic(topic))
	for i := range 300 {
		writer.Produce(ctx, &kgo.Record{Key: fmt.Append(nil, i), Value: fmt.Appendf(nil, "order-%d", i)}, nil)
	}
	if err := writer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reader := replClient(t, listen, kgo.ClientID("billing-reader"), kgo.ConsumerGroup("billing"), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for n := 0; n < 300 && ctx.Err() == nil; {
		n += reader.PollFetches(ctx).NumRecords()
	}
	if err := reader.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the copy to catch up", func() bool {
		var copied int64
		for _, p := range inst.Status().Replication.Partitions {
			if p.Topic == topic {
				copied += p.CopiedThrough
			}
		}
		return copied == 300
	})

	flip := base + fmt.Sprintf("routes:\n  default: source\n  topics:\n    %q: target\n", topic) + "cutover:\n  max_hold: 90s\n  require: [caught_up, topic_configs]\n"
	flip = strings.Replace(flip, "cutover: { max_hold: 90s }\n", "", 1)
	planFile := filepath.Join(dir, "flip.yaml")
	writeConfig(t, planFile, flip)
	runPlan := func() (string, int) {
		plan := exec.CommandContext(ctx, exe, "plan", "-admin", admin, "-c", planFile)
		out, _ := plan.CombinedOutput()
		t.Logf("kproxy plan -c flip.yaml (exit %d):\n%s", plan.ProcessState.ExitCode(), out)
		return string(out), plan.ProcessState.ExitCode()
	}
	next, err := config.Parse([]byte(flip))
	if err != nil {
		t.Fatal(err)
	}

	// The target's copy keeps records for an hour, the source's for a
	// week: topic_configs fails, and being required, refuses the cutover.
	tadm := kadm.NewClient(replClient(t, env.target))
	setRetention := func(v string) {
		if _, err := tadm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr(v)}}, topic); err != nil {
			t.Fatal(err)
		}
	}
	setRetention("3600000")
	out, code := runPlan()
	if code != 1 || !regexp.MustCompile(`topic_configs \(required\)\s+fail\s+differ: retention.ms source="604800000", target="3600000"`).MatchString(out) {
		t.Errorf("plan with the retention differing: exit %d, want 1 and a failed required topic_configs gate", code)
	}
	inst.Apply(next)
	refused := false
	for _, c := range inst.Cutovers() {
		refused = refused || (c.Topic == topic && c.State == control.StateRefused && strings.Contains(c.Reason, "gate topic_configs failed"))
	}
	if !refused {
		t.Fatalf("a reload failing a required gate: cutovers %+v", inst.Cutovers())
	}
	// An open transaction will hold the cutover (opened before the
	// cause is fixed: the refused cutover is re-measured every 10 s and
	// may start on its own).
	txn := replClient(t, listen, kgo.ClientID("billing-txn"), kgo.TransactionalID(topic+"-txn"), kgo.DefaultProduceTopic(topic),
		kgo.TransactionTimeout(3*time.Minute)) // the hold outlasts several browser runs on a loaded machine
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte("in-txn")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	setRetention("604800000")
	out, code = runPlan()
	if code != 0 || !regexp.MustCompile(`caught_up \(required\)\s+pass`).MatchString(out) || !strings.Contains(out, "cutover of "+topic+" to the target") {
		t.Errorf("plan with the retention fixed: exit %d, want 0 with every gate passing", code)
	}

	inst.Apply(next)

	row := regexp.MustCompile(`<tr id="topic-` + regexp.QuoteMeta(topic) + `" data-state="([a-z]+)" data-home="([a-z]+)">`)
	stateOnPage := func() (string, string) {
		dom := browse(t, browser, profile, "http://"+admin+"/?refresh=0", "--dump-dom")
		m := row.FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("the page has no row for %s:\n%s", topic, dom)
		}
		return m[1], m[2]
	}
	state, home := stateOnPage()
	if state != "holding" && state != "draining" || home != "source" {
		t.Fatalf("during the open transaction the page shows %s on %s, want holding on the source", state, home)
	}
	shots := os.Getenv("KPROXY_SCREENSHOT_DIR")
	if shots != "" {
		browse(t, browser, profile, "http://"+admin+"/?refresh=0", "--screenshot="+filepath.Join(shots, "status-holding.png"))
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	for state != "flipped" {
		if ctx.Err() != nil || state == "aborted" {
			t.Fatalf("after the commit the page shows %s on %s, want flipped", state, home)
		}
		time.Sleep(200 * time.Millisecond)
		state, home = stateOnPage()
	}
	if home != "target" {
		t.Errorf("flipped, the page shows home %s, want target", home)
	}
	// Produce through the flipped route so the page shows traffic on both.
	if err := writer.ProduceSync(ctx, &kgo.Record{Value: []byte("after-flip")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The last `kproxy plan` is on the page too, with its gates, and
	// shows as applied: the running config is its candidate.
	dom := browse(t, browser, profile, "http://"+admin+"/?refresh=0", "--dump-dom")
	for _, want := range []string{`data-client-id="billing-writer"`, `id="group-billing"`, `id="cluster-target" data-state="reachable"`,
		`<div id="plan" data-pass="true" data-refused="false" data-applied="true">`,
		`<tr class="plan-action" data-kind="cutover" data-subject="` + topic + `">`, `data-gate="topic_configs" data-pass="true"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if shots != "" {
		browse(t, browser, profile, "http://"+admin+"/?refresh=0", "--screenshot="+filepath.Join(shots, "status-flipped.png"))
		browse(t, browser, profile, "http://"+admin+"/?refresh=0", "--window-size=1400,2000", "--screenshot="+filepath.Join(shots, "status-plan.png"))
	}
}
