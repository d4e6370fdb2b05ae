package control

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A group move must not make a consumer re-read what it consumed but has
// not committed yet: its member rejoins on the new home (one rebalance) and
// keeps its positions. Here the consumer (franz-go, cooperative-sticky)
// never commits at all before the move, so any record read twice shows a
// rejoin that dropped its positions. (Written while looking for the cause
// of the long soak's re-reads after group moves: this case is clean.)
func TestGroupMoveKeepsTheConsumersPositions(t *testing.T) {
	r := newMoveRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r.produce(ctx, 300)
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.srv.Addr().String()), kgo.ConsumerGroup("auto"), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitInterval(time.Hour),
		kgo.FetchMaxWait(50*time.Millisecond), kgo.HeartbeatInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[int32]map[int64]int{}
	dups := 0
	n := 0
	poll := func(until int) {
		for n < until && ctx.Err() == nil {
			pctx, pc := context.WithTimeout(ctx, 200*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pc()
			fs.EachRecord(func(rec *kgo.Record) {
				if seen[rec.Partition] == nil {
					seen[rec.Partition] = map[int64]int{}
				}
				seen[rec.Partition][rec.Offset]++
				if seen[rec.Partition][rec.Offset] > 1 {
					dups++
				} else {
					n++
				}
			})
		}
	}
	poll(300)
	// No commit at all yet (interval 1 h): a rejoin that treats partitions
	// as lost re-reads everything; a kept assignment re-reads nothing. Every
	// record was read, so whatever a poll returns while the member rejoins
	// is a re-read.
	r.reload("  default: source\n  auto: target\n")
	r.gm.wait()
	if st := r.gm.list(); len(st) != 1 || st[0].State != groupMoved {
		t.Fatalf("status after the move: %+v", st)
	}
	waitUntil(t, ctx, "the member rejoined on the target", func() bool {
		pctx, pc := context.WithTimeout(ctx, 100*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pc()
		fs.EachRecord(func(rec *kgo.Record) { seen[rec.Partition][rec.Offset]++; dups++ })
		return r.syncs.Load() >= 2
	})
	r.produce(ctx, 300)
	poll(600)
	t.Logf("consumed %d distinct, %d read twice, syncs %d", n, dups, r.syncs.Load())
	if dups > 0 {
		t.Errorf("%d records read twice across the move", dups)
	}
}
