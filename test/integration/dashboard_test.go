package integration

// The Grafana dashboard (deploy/grafana/kproxy.json) must not rot: every
// metric its expressions query has to be exported by a running kproxy that
// has done what the dashboard shows (client traffic, replication, a flip).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/kproxy/kproxy/secure"
)

// metricName matches the metric names a PromQL expression of the dashboard
// can query: kproxy's own and the Go and process collectors'.
var metricName = regexp.MustCompile(`\b((?:kproxy|go|process)_[a-z0-9_]+)\b`)

// dashboardMetrics returns every metric family the dashboard queries, with
// the histogram series suffixes folded into their family name.
func dashboardMetrics(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not valid JSON: %v", path, err)
	}
	if len(dash.Panels) == 0 {
		t.Fatalf("%s has no panels", path)
	}
	set := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: expression %q names no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					n = strings.TrimSuffix(n, suf)
				}
				set[n] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// exportedFamilies scrapes /metrics and returns the metric family names that
// have at least one sample.
func exportedFamilies(t *testing.T, admin string) map[string]bool {
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
	out := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(name, "{ "); i >= 0 {
			name = name[:i]
		}
		out[name] = true
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			out[strings.TrimSuffix(name, suf)] = true
		}
	}
	return out
}

func TestDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	want := dashboardMetrics(t, filepath.Join("..", "..", "deploy", "grafana", "kproxy.json"))

	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("dashboard")
	replCreateTopic(t, topic, 2, nil)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	saslListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// SASL users and a policy, so the denial and authentication-failure
	// panels have something to count.
	users, err := secure.MarshalUsers(map[string]string{"dash-app": "dash-pw-4b1d"}, secure.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(usersFile, users, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	writeCfg := func(route string) {
		writeConfig(t, cfgPath, fmt.Sprintf("listen: %s\nlisteners:\n  - name: sasl\n    listen: %s\n    sasl: { users_file: %s, mechanisms: [PLAIN] }\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\ncutover: { max_hold: 10s }\npolicy: {}\nmonitor: { bypass_interval: 1s }\nlog: { level: info }\n",
			listen, saslListen, usersFile, admin, filepath.Join(dir, "state"), env.source, env.target, topic, route, topic))
	}
	writeCfg("source")
	runKproxy(t, exe, cfgPath)

	// Traffic, replication and one flip: what every panel shows.
	prod := replClient(t, listen, kgo.DefaultProduceTopic(topic))
	var log ackLog
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i := 0; i < 200; i++ {
		prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("dash-%06d", i))}, log.promise)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	writeCfg("target")
	waitFor(t, "the topic to flip", func() bool { return cutoverState(admin, topic) == "flipped" })
	for i := 200; i < 300; i++ {
		prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("dash-%06d", i))}, log.promise)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllReadThrough(t, listen, topic, &log, "for the dashboard run")
	// A destructive admin request the policy refuses, and a wrong password.
	if _, err := kadm.NewClient(prod).DeleteTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	bad := replClient(t, saslListen, kgo.SASL(plain.Auth{User: "dash-app", Pass: "wrong"}.AsMechanism()))
	if err := bad.Ping(ctx); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	waitFor(t, "a bypass check of the topic", func() bool {
		return bypassStatus(t, admin).Watched > 0
	})

	have := exportedFamilies(t, admin)
	var missing []string
	for _, m := range want {
		if !have[m] {
			missing = append(missing, m)
		}
	}
	t.Logf("the dashboard queries %d metrics: %s", len(want), strings.Join(want, ", "))
	if len(missing) > 0 {
		t.Fatalf("the dashboard queries metrics a running kproxy does not export: %s", strings.Join(missing, ", "))
	}
}

// cutoverState is the /status state of topic's cutover ("" when unknown).
func cutoverState(admin, topic string) string {
	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Cutovers []struct{ Topic, State string } `json:"cutovers"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return ""
	}
	for _, c := range st.Cutovers {
		if c.Topic == topic {
			return c.State
		}
	}
	return ""
}
