package integration

// The replicator on a topic the source broker has really compacted: the
// surviving batches have offset holes inside them, so they are rebuilt with
// contiguous offsets on the target; every surviving record must arrive once,
// with the map pointing at it.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

// readToEnd reads one partition from its start up to end (exclusive).
func readToEnd(t *testing.T, boot, topic string, partition int32, end int64) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := replClient(t, boot, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	var out []*kgo.Record
	for len(out) == 0 || out[len(out)-1].Offset < end-1 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s/%d to %d: timed out after %d records", topic, partition, end, len(out))
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func TestReplicatorCompactedTopic(t *testing.T) {
	topic := replTopic("compacted")
	s := func(v string) *string { return &v }
	replCreateTopic(t, topic, 1, map[string]*string{
		"cleanup.policy":            s("compact"),
		"segment.ms":                s("200"),
		"min.cleanable.dirty.ratio": s("0.01"),
		"min.compaction.lag.ms":     s("0"),
		"delete.retention.ms":       s("0"),
	})
	cl := replClient(t, env.source, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Rounds of batches, with pauses so segments roll: every other record
	// rewrites one of 10 keys (compaction removes all but the last), the
	// others have keys of their own (kept), so surviving batches have holes.
	const rounds, perRound = 8, 100
	for r := 0; r < rounds; r++ {
		for i := 0; i < perRound; i++ {
			key := fmt.Sprintf("u-%d-%d", r, i)
			if i%2 == 0 {
				key = fmt.Sprintf("k%d", i%10)
			}
			cl.Produce(ctx, &kgo.Record{Key: []byte(key), Value: []byte(fmt.Sprintf("r%d-i%d", r, i))}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	end := int64(rounds * perRound)

	// Wait for the log cleaner (it wakes every 15 s by default).
	var src []*kgo.Record
	compacted := func() bool {
		src = readToEnd(t, env.source, topic, 0, end)
		return len(src) < int(end)
	}
	if !poll(150*time.Second, 3*time.Second, compacted) {
		t.Fatalf("the source broker did not compact %s within 150 s", topic)
	}
	gappy := 0
	for i := 1; i < len(src); i++ {
		if src[i].Offset != src[i-1].Offset+1 {
			gappy++
		}
	}
	t.Logf("compacted: %d of %d records survive, %d offset holes", len(src), end, gappy)
	if gappy == 0 {
		t.Fatalf("compaction left no holes; the test would not exercise rebuilt batches")
	}

	r := replStart(t, t.TempDir(), replicator.Hooks{}, topic)
	defer r.Stop()
	replWait(t, r, topic)
	// Compaction may go on while we read; compare against a fresh read of
	// what the replicator saw: every source record now present must be on
	// the target at ToTarget(offset) with the same key and value.
	m := r.Map(topic, 0)
	tgt := readToEnd(t, env.target, topic, 0, m.TargetEnd())
	byOffset := map[int64]*kgo.Record{}
	for _, rec := range tgt {
		byOffset[rec.Offset] = rec
	}
	src = readToEnd(t, env.source, topic, 0, end)
	for _, rec := range src {
		to, ok := m.ToTarget(rec.Offset)
		got := byOffset[to]
		if !ok || got == nil || string(got.Key) != string(rec.Key) || string(got.Value) != string(rec.Value) {
			t.Fatalf("source offset %d (%s=%s) is not at target offset %d (%v)", rec.Offset, rec.Key, rec.Value, to, got)
		}
	}
	if len(tgt) < len(src) {
		t.Fatalf("target has %d records, source %d", len(tgt), len(src))
	}
	ends, err := kadm.NewClient(replClient(t, env.target)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target holds %d records for %d surviving source records", ends[topic][0].Offset, len(src))
}
