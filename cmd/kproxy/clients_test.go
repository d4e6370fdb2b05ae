package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
)

// `kproxy clients` lists a producer that wrote through kproxy with its
// client.id, software, topic and the cluster it reached.
func TestClientsCommand(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, "listen: %s\nadmin: %s\nclusters:\n  source: { bootstrap: [%s] }\nroutes:\n  default: source\n", listen, admin, src.ListenAddrs()[0]))
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.ClientID("orders-writer"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"clients", "-admin", admin}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if out := collapse(stdout.String()); !strings.Contains(out, "orders-writer kgo v") || !strings.Contains(out, "orders - - - source") {
		t.Errorf("clients table:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"clients", "-admin", admin, "-o", "json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var doc control.ClientsDoc
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range doc.Clients {
		found = found || (c.ClientID == "orders-writer" && len(c.Produced) == 1 && c.Produced[0] == "orders")
	}
	if !found {
		t.Errorf("json lacks orders-writer producing orders: %s", stdout.String())
	}
}
