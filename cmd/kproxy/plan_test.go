package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/control"
)

// `kproxy plan` posts the candidate file to /plan, prints the actions with
// their gates, and exits 1 exactly when a gate failed.
func TestPlanCommandPrintsGatesAndExitCode(t *testing.T) {
	var doc control.PlanDoc
	var posted []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/plan" {
			http.NotFound(w, r)
			return
		}
		posted, _ = io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(doc)
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "new.yaml")
	if err := os.WriteFile(file, []byte("routes: {default: target}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimPrefix(srv.URL, "http://")

	doc = control.PlanDoc{Changes: []string{"route orders: produce source→target, fetch source→target"}, Pass: false, Actions: []control.PlanAction{
		{Kind: "cutover", Subject: "orders", What: "cutover of orders to the target", Gates: []control.GateResult{
			{Gate: "caught_up", Pass: true, Measured: "lag 0 records"},
			{Gate: "topic_configs", Pass: false, Required: true, Measured: `differ: retention.ms source="604800000", target="3600000"`},
		}}}}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"plan", "-admin", admin, "-c", file}, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d with a failed gate, want 1; stderr %q", code, stderr.String())
	}
	if string(posted) != "routes: {default: target}\n" {
		t.Errorf("posted %q", posted)
	}
	out := collapse(stdout.String())
	for _, want := range []string{
		"route orders: produce source→target",
		"cutover orders cutover of orders to the target",
		"caught_up pass lag 0 records",
		`topic_configs (required) fail differ: retention.ms source="604800000", target="3600000"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, stdout.String())
		}
	}

	doc.Pass = true
	doc.Actions[0].Gates[1].Pass = true
	stdout.Reset()
	if code := run([]string{"plan", "-admin", admin, "-c", file, "-o", "json"}, &stdout, &stderr); code != 0 {
		t.Errorf("exit %d with every gate passing, want 0", code)
	}
	var got control.PlanDoc
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || !got.Pass {
		t.Errorf("-o json: %v %+v", err, got)
	}
}
