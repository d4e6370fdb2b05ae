package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
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
	inst, err := control.Start(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()

	table := captureStdout(t, func() error { return statusCmd(os.Stdout, []string{"-admin", admin}) })
	for _, want := range []string{
		"orders    target   target",
		"payments  source   target",
		"logs.app  source   source   fetch target for clients [shadow-*]  logs.*",
	} {
		if !strings.Contains(collapse(table), collapse(want)) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
	raw := captureStdout(t, func() error { return statusCmd(os.Stdout, []string{"-admin", admin, "-o", "json"}) })
	var doc control.StatusDoc
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

// The cutover table shows each topic's home and state, a drain's progress
// line while it runs, and the reason of an aborted or refused one.
func TestPrintCutovers(t *testing.T) {
	flipped := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	err := printCutovers(&b, marker{}, []control.CutoverStatus{
		{Topic: "orders", From: "source", To: "target", Home: "source", State: "draining", HoldMillis: 120, Held: 4, Progress: "2 of 3 partitions copied to the frozen end, 17 offsets to go"},
		{Topic: "payments", From: "source", To: "target", Home: "target", State: "flipped", HoldMillis: 80, FlippedAt: flipped},
		{Topic: "refunds", From: "target", To: "source", Home: "target", State: "refused", Reason: "moving back to the source needs replication.reverse_after_cutover, which is off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"orders    source  draining  source -> target  120",
		"17 offsets to go",
		"payments  target  flipped   source -> target  80       0              2026-11-22T04:00:00Z",
		"refunds   target  refused   target -> source",
		"reverse_after_cutover, which is off",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
}

// Topics written around kproxy get their own table; none, no table.
func TestPrintBypass(t *testing.T) {
	var b bytes.Buffer
	if err := printBypass(&b, marker{}, control.BypassStatus{Interval: "30s"}); err != nil || b.Len() != 0 {
		t.Fatalf("no bypass printed %q (%v)", b.String(), err)
	}
	seen := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	if err := printBypass(&b, marker{}, control.BypassStatus{Interval: "30s", Topics: []control.BypassTopic{{Topic: "audit", Records: 60, LastRecords: 20, LastSeen: seen}}}); err != nil {
		t.Fatal(err)
	}
	if out := collapse(b.String()); !strings.Contains(out, "audit 60 20 2026-12-07T01:00:00Z") {
		t.Errorf("bypass table: %s", out)
	}
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
