package control

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
)

func getPage(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// The page at "/" shows a replicated topic's state before and after a
// flip, its cluster health, and a client with its group; the stylesheet is
// served beside it.
func TestStatusPageFollowsACutover(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nreplicate: [orders]\ngroups:\n  billing: source\n",
		listen, admin, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0])
	inst := startYAML(t, ctx, []byte(base+"routes:\n  default: source\n"))
	defer inst.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.ClientID("page-writer"), kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for cl.PollFetches(ctx).NumRecords() == 0 && ctx.Err() == nil {
	}

	page := getPage(t, "http://"+admin+"/")
	for _, want := range []string{
		`<tr id="topic-orders" data-state="steady" data-home="source">`,
		`<tr id="cluster-source" data-state="reachable">`,
		`<tr id="group-billing" data-state="steady" data-home="source">`,
		`data-client-id="page-writer"`,
		`<meta http-equiv="refresh" content="2">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if !strings.Contains(page, `id="plan-none"`) {
		t.Error("before any plan the page should say there is none")
	}
	nextText := base + "routes:\n  default: source\n  topics:\n    orders: target\n"
	next, err := config.Parse([]byte(nextText))
	if err != nil {
		t.Fatal(err)
	}
	// kproxy plan posts the candidate; the page shows that plan, its
	// cutover and the cutover's gates, until the candidate is applied.
	resp, err := http.Post("http://"+admin+"/plan", "application/yaml", strings.NewReader(nextText))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	page = getPage(t, "http://"+admin+"/?refresh=0")
	for _, want := range []string{
		`data-applied="false"`,
		`<tr class="plan-action" data-kind="cutover" data-subject="orders">`,
		`data-gate="partitions" data-pass="true"`,
		`data-gate="no_bypass"`,
		`not applied yet`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page after POST /plan lacks %s", want)
		}
	}
	inst.Apply(next)
	if page = getPage(t, "http://"+admin+"/?refresh=0"); !strings.Contains(page, `data-applied="true"`) {
		t.Error("once the candidate is the running config the plan shows as applied")
	}
	// The row flips with the route; the history line follows when the
	// attempt ends (after the held requests are released).
	for !strings.Contains(page, `<tr id="topic-orders" data-state="flipped" data-home="target">`) ||
		!strings.Contains(page, `<tr class="flip" data-topic="orders" data-outcome="flipped">`) {
		if ctx.Err() != nil {
			t.Fatalf("the page never showed orders flipped:\n%s", page)
		}
		time.Sleep(20 * time.Millisecond)
		page = getPage(t, "http://"+admin+"/?refresh=0")
	}
	if strings.Contains(page, "http-equiv") {
		t.Error("?refresh=0 turns the refresh off")
	}
	if css := getPage(t, "http://"+admin+"/kproxy.css"); !strings.Contains(css, ".st-draining") {
		t.Error("the stylesheet is not served")
	}
}

// A draining topic gets a progress bar of partitions copied to their
// frozen ends; replication lag and the catch-up estimate are summed per
// topic; the HTML escapes what clients control.
func TestStatusPageDrainAndEscaping(t *testing.T) {
	d := StatusDoc{RoutesDefault: "source",
		Cutovers: []CutoverStatus{{Topic: "orders", From: "source", To: "target", Home: "source", State: routing.Draining.String(), DrainCopied: 2, DrainPartitions: 3, Progress: "2 of 3 partitions copied"}},
		Replication: ReplicationStatus{Topics: []string{"orders"}, Partitions: []replicator.PartitionStatus{
			{Topic: "orders", Partition: 0, LagRecords: 5, LagBytes: 2048, CatchUpMillis: 3000},
			{Topic: "orders", Partition: 1, LagRecords: 7, LagBytes: 1024, CatchUpMillis: 12000},
			{Topic: "orders", Partition: 2, CatchUpMillis: 0},
		}},
		Bypass: BypassStatus{Interval: "30s", Checked: time.Now(), Watched: 3, Topics: []BypassTopic{{Topic: "audit", Records: 60, LastRecords: 20, LastSeen: time.Now()}}}}
	v := webView{Status: d, Topics: webTopics(d)}
	v.Clients = webClients([]proxy.ClientInfo{clientWithID(`<script>alert(1)</script>`)})
	var b strings.Builder
	if err := statusPage.Execute(&b, v); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`<progress max="3" value="2">`,
		`12 rec`, `3.0 KiB`, `<td>12s</td>`,
		`&lt;script&gt;alert(1)&lt;/script&gt;`,
		`<tr class="bypass" data-topic="audit">`, `<span class="state bad">60</span>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Error("a client id reached the page unescaped")
	}
}

func clientWithID(id string) proxy.ClientInfo { return proxy.ClientInfo{ClientID: id, Open: true} }

// The page merges a client's connections: one row per client.id with the
// union of what its connections did.
func TestWebClientsMergeConnections(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)
	got := webClients([]proxy.ClientInfo{
		{ClientID: "billing", Remote: "10.0.0.7:5000", Open: true, Clusters: []string{"source"}, FirstSeen: t0.Add(time.Minute), LastSeen: t0.Add(2 * time.Minute)},
		{ClientID: "billing", Remote: "10.0.0.8:5001", Software: "kgo", SoftwareVersion: "v1.22.2", Produced: []string{"orders"}, Clusters: []string{"target"}, FirstSeen: t0, LastSeen: t0.Add(time.Minute)},
		{ClientID: "audit", Remote: "10.0.0.9:5002", Fetched: []string{"orders"}, FirstSeen: t0, LastSeen: t0},
	})
	if len(got) != 2 || got[0].ClientID != "audit" {
		t.Fatalf("%+v", got)
	}
	b := got[1]
	if b.Conns != 2 || b.Open != 1 || b.Software != "kgo v1.22.2" || strings.Join(b.Hosts, ",") != "10.0.0.7,10.0.0.8" ||
		strings.Join(b.Clusters, ",") != "source,target" || strings.Join(b.Produced, ",") != "orders" || !b.FirstSeen.Equal(t0) || !b.LastSeen.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("merged: %+v", b)
	}
}

// Kafka's internal topics (a client's metadata request for every topic
// brings them into /status) stay off the page's topics table unless
// ?internal=1 asks for them, and the page says it hid them.
func TestStatusPageHidesInternalTopics(t *testing.T) {
	d := StatusDoc{RoutesDefault: "source", Topics: []TopicStatus{
		{Topic: "__consumer_offsets"}, {Topic: "__transaction_state"}, {Topic: "orders"}}}
	render := func(show bool) string {
		t.Helper()
		v := webView{Status: d, Topics: webTopics(d), ShowInternal: show, Refresh: 2}
		v.hideInternal()
		var b strings.Builder
		if err := statusPage.Execute(&b, v); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	page := render(false)
	if !strings.Contains(page, `<tr id="topic-orders"`) {
		t.Errorf("the page lacks topic orders:\n%s", page)
	}
	for _, internal := range []string{"__consumer_offsets", "__transaction_state"} {
		if strings.Contains(page, `<tr id="topic-`+internal+`"`) {
			t.Errorf("the page lists %s by default", internal)
		}
	}
	if want := `id="internal-topics" data-hidden="2">Kafka's internal topics (names starting with __) are hidden: __consumer_offsets, __transaction_state.`; !strings.Contains(page, want) {
		t.Errorf("the page does not say it hid the internal topics (want %q):\n%s", want, page)
	}
	page = render(true)
	for _, name := range []string{"__consumer_offsets", "__transaction_state", "orders"} {
		if !strings.Contains(page, `<tr id="topic-`+name+`"`) {
			t.Errorf("with ?internal=1 the page lacks %s", name)
		}
	}
}
