package integration

// A canary consumer reads a replicated topic from the target through kproxy
// and must see exactly what a consumer of the source sees: the same records
// at the same (virtual = source) offsets, across the gaps that transaction
// markers and aborted records leave in the source log.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/routing"
)

// replMaps adapts the replicator to the proxy's OffsetMaps: the source's
// offsets are the virtual ones, the target's go through the live map.
type replMaps struct{ r *replicator.Replicator }

func (m replMaps) Map(cluster, topic string, partition int32) (proxy.OffsetMap, bool) {
	if cluster != proxy.Target {
		return nil, false
	}
	if om := m.r.Map(topic, partition); om != nil {
		return om, true
	}
	return nil, true
}

type seenRecord struct {
	partition int32
	offset    int64
	value     string
}

// readAll reads n records of topic from the start through boot with client
// id cid, read_committed, then polls once more to catch any extra record.
func readAll(t *testing.T, boot, cid, topic string, n int) []seenRecord {
	t.Helper()
	cl := replClient(t, boot, kgo.ClientID(cid), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []seenRecord
	poll := func(ctx context.Context) {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(tp string, p int32, err error) {
			if ctx.Err() == nil {
				t.Fatalf("%s: fetch %s/%d: %v", cid, tp, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { out = append(out, seenRecord{r.Partition, r.Offset, string(r.Value)}) })
	}
	for len(out) < n {
		poll(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: read %d of %d records of %s", cid, len(out), n, topic)
		}
	}
	extra, cancelExtra := context.WithTimeout(context.Background(), time.Second)
	defer cancelExtra()
	poll(extra)
	return out
}

func TestCanaryReadsReplicatedTargetWithSourceOffsets(t *testing.T) {
	topic := replTopic("canary")
	replCreateTopic(t, topic, 2, nil)

	// Committed and aborted transactions leave gaps in the source log.
	txn := replClient(t, env.source, kgo.TransactionalID(topic+"-txn"), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for round := 0; round < 6; round++ {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			txn.Produce(ctx, &kgo.Record{Partition: int32(i % 2), Value: []byte(fmt.Sprintf("r%d-%d", round, i))}, nil)
		}
		commit := kgo.TransactionEndTry(round%3 != 1) // every third round aborts
		// Flush either way, so aborted records reach the log too.
		if err := txn.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	r := replStart(t, dir, replicator.Hooks{}, topic)
	defer r.Stop()
	replWait(t, r, topic)

	cfg, err := config.Parse([]byte(fmt.Sprintf(`listen: 127.0.0.1:9
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
  topics:
    %q: { route: source, canary: { fetch: target, clients: ["shadow-*"] } }
replicate: [%q]
`, dir, env.source, env.target, topic, topic)))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Listen: "127.0.0.1:0", StateDir: t.TempDir(), NodeID: 4242,
		Clusters: map[string][]string{proxy.Source: {env.source}, proxy.Target: {env.target}},
		Router:   proxy.NewTableRouter(table), Capture: frames.add,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn})})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetOffsetMaps(replMaps{r})
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := srv.Start(sctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	boot := srv.Addr().String()

	ends, err := kadm.NewClient(replClient(t, env.source)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })

	// Both ends, through kproxy, report the source's end offsets.
	for _, cid := range []string{"regular-1", "shadow-1"} {
		cl := replClient(t, boot, kgo.ClientID(cid))
		got, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		got.Each(func(o kadm.ListedOffset) {
			if o.Offset != want[o.Partition] {
				t.Errorf("%s: end offset of %s/%d is %d through kproxy, source has %d", cid, topic, o.Partition, o.Offset, want[o.Partition])
			}
		})
	}

	const committed = 80 // 4 committed rounds of 20
	direct := readAll(t, env.source, "direct-1", topic, committed)
	regular := readAll(t, boot, "regular-1", topic, committed)
	shadow := readAll(t, boot, "shadow-1", topic, committed)
	if len(direct) != 80 {
		t.Fatalf("source holds %d committed records, want 80", len(direct))
	}
	for name, got := range map[string][]seenRecord{"regular (source)": regular, "shadow (target)": shadow} {
		if fmt.Sprint(sortSeen(got)) != fmt.Sprint(sortSeen(direct)) {
			g, w := sortSeen(got), sortSeen(direct)
			i := 0
			for i < min(len(g), len(w)) && g[i] == w[i] {
				i++
			}
			t.Errorf("%s consumer through kproxy saw %d records that differ from the source's %d from #%d:\n got %v\nwant %v", name, len(got), len(direct), i, g[i:min(i+5, len(g))], w[i:min(i+5, len(w))])
		}
	}
	// The shadow really read the target: the target's own offsets differ
	// (no markers, no aborted records there).
	tgtEnds, err := kadm.NewClient(replClient(t, env.target)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	tgtEnds.Each(func(o kadm.ListedOffset) {
		if o.Offset == want[o.Partition] {
			t.Errorf("target end offset %d equals the source's: the test would not tell the clusters apart", o.Offset)
		}
	})
}

func sortSeen(s []seenRecord) []seenRecord {
	out := append([]seenRecord(nil), s...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && (out[j].partition < out[j-1].partition || out[j].partition == out[j-1].partition && out[j].offset < out[j-1].offset); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
