package proxy

import (
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The inventory names each connection's client.id, software, topics
// produced and fetched, groups, transactional ids and the upstream clusters
// it reached; a closed connection stays listed, marked closed.
func TestClientInventory(t *testing.T) {
	router := tableFor(t, routesHeader+"routes:\n  default: source\n  topics:\n    payments: target\n")
	srv, _, _ := twoClusterProxy(t, router, "orders", "payments")

	producer, ctx := proxyClient(t, srv, 20*time.Second, kgo.ClientID("billing-writer"))
	for _, topic := range []string{"orders", "payments"} {
		if err := producer.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	txn, _ := proxyClient(t, srv, 20*time.Second, kgo.ClientID("billing-txn"), kgo.TransactionalID("billing-tx"))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("t")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	consumer, _ := proxyClient(t, srv, 20*time.Second, kgo.ClientID("billing-reader"), kgo.ConsumerGroup("billing"),
		kgo.ConsumeTopics("payments"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	for got := 0; got == 0; {
		fs := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatal(err)
		}
		got = fs.NumRecords()
	}
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	byID := map[string]ClientInfo{}
	merge := func() {
		byID = map[string]ClientInfo{}
		for _, c := range srv.Clients() {
			m := byID[c.ClientID]
			m.ClientID, m.Software, m.SoftwareVersion, m.Open = c.ClientID, max(m.Software, c.Software), max(m.SoftwareVersion, c.SoftwareVersion), m.Open || c.Open
			m.Produced = union(m.Produced, c.Produced)
			m.Fetched = union(m.Fetched, c.Fetched)
			m.Groups = union(m.Groups, c.Groups)
			m.TransactionalID = union(m.TransactionalID, c.TransactionalID)
			m.Clusters = union(m.Clusters, c.Clusters)
			if c.Remote == "" || c.FirstSeen.IsZero() || c.LastSeen.Before(c.FirstSeen) {
				t.Errorf("connection %d: remote %q, seen %v..%v", c.Conn, c.Remote, c.FirstSeen, c.LastSeen)
			}
			byID[c.ClientID] = m
		}
	}
	merge()
	w, r := byID["billing-writer"], byID["billing-reader"]
	if w.Software != "kgo" || w.SoftwareVersion == "" {
		t.Errorf("writer software %q %q, want kgo and a version (ApiVersions v3+)", w.Software, w.SoftwareVersion)
	}
	if !slices.Equal(w.Produced, []string{"orders", "payments"}) || !slices.Equal(w.Clusters, []string{"source", "target"}) {
		t.Errorf("writer: %+v", w)
	}
	if x := byID["billing-txn"]; !slices.Equal(x.TransactionalID, []string{"billing-tx"}) || !slices.Equal(x.Produced, []string{"orders"}) {
		t.Errorf("transactional writer: %+v", x)
	}
	if !slices.Equal(r.Fetched, []string{"payments"}) || !slices.Equal(r.Groups, []string{"billing"}) || !slices.Contains(r.Clusters, "target") || len(r.Produced) != 0 {
		t.Errorf("reader: %+v", r)
	}
	if !w.Open || !r.Open {
		t.Errorf("open: writer %v reader %v", w.Open, r.Open)
	}
	producer.Close()
	consumer.Close()
	for {
		merge()
		if !byID["billing-writer"].Open && !byID["billing-reader"].Open {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("connections still open after Close: %+v", srv.Clients())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !slices.Equal(byID["billing-writer"].Produced, []string{"orders", "payments"}) {
		t.Errorf("a closed connection's record keeps what it did: %+v", byID["billing-writer"])
	}
}

func union(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	slices.Sort(a)
	return a
}

// Closed records expire after inventoryKeepClosed and are bounded in number.
func TestInventoryExpiresClosedConnections(t *testing.T) {
	var inv inventory
	for i := range inventoryMaxClosed + 10 {
		inv.add(uint64(i), "127.0.0.1:1")
		inv.remove(uint64(i))
	}
	if n := len(inv.list()); n != inventoryMaxClosed {
		t.Errorf("%d closed records kept, want the bound %d", n, inventoryMaxClosed)
	}
	inv.mu.Lock()
	for _, r := range inv.closed[:5] {
		r.info.ClosedAt = time.Now().Add(-inventoryKeepClosed - time.Second)
	}
	inv.mu.Unlock()
	inv.add(99999, "127.0.0.1:2")
	if n := len(inv.list()); n != inventoryMaxClosed-5+1 {
		t.Errorf("%d records after 5 expired and one opened, want %d", n, inventoryMaxClosed-5+1)
	}
}
