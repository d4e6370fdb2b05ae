package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kproxy/kproxy/config"
)

// captureStdout runs f with os.Stdout redirected and returns what it wrote.
func captureStdout(t *testing.T, f func() error) string {
	t.Helper()
	old := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	ferr := f()
	w.Close()
	os.Stdout = old
	out := <-done
	if ferr != nil {
		t.Fatalf("%v\n%s", ferr, out)
	}
	return string(out)
}

// `kproxy status` shows every topic's effective produce and fetch route and
// its canary rule, as a table and as JSON, from a running instance.
func TestStatusShowsEffectiveRoutesPerTopic(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "payments", "logs.app"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "payments", "logs.app"))
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`listen: %s
admin: %s
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
  topics:
    orders: target
    payments: { produce: source, fetch: target }
    "logs.*": { route: source, canary: { fetch: target, clients: ["shadow-*"] } }
`, listen, admin, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0])
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := start(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()

	table := captureStdout(t, func() error { return statusCmd([]string{"-admin", admin}) })
	for _, want := range []string{
		"orders    target   target",
		"payments  source   target",
		"logs.app  source   source   fetch target for clients [shadow-*]  logs.*",
	} {
		if !strings.Contains(collapse(table), collapse(want)) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
	raw := captureStdout(t, func() error { return statusCmd([]string{"-admin", admin, "-o", "json"}) })
	var doc statusDoc
	if err := json.NewDecoder(bytes.NewReader([]byte(raw))).Decode(&doc); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, raw)
	}
	found := false
	for _, ts := range doc.Topics {
		if ts.Topic == "payments" {
			found = ts.Rule.Produce == "source" && ts.Rule.Fetch == "target"
		}
	}
	if !found {
		t.Errorf("json status lacks payments with produce source, fetch target: %+v", doc.Topics)
	}
}

// collapse folds runs of spaces so table assertions don't depend on widths.
func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }
