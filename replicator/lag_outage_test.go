package replicator

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// While the target is down the copy is interrupted and retries, and the
// source's end keeps moving. The lag used to stay at its value from before
// the outage (the high watermark was only learnt from the copy's own
// fetches), so /status, the lag metric and the plan's caught_up gate said
// "caught up" while the copy was thousands of records behind; a cutover
// retried on that word could not drain within its hold (found by
// TestFaultBrokerKilledDuringCutoverHold on real Kafka). Each retry now
// looks at the source's end.
func TestLagFollowsTheSourceWhileTheTargetIsDown(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(1, "t"))
	cl := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("t"))
	ctx := context.Background()
	produce := func(n int) {
		for i := 0; i < n; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(10)
	r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"t"}, StateDir: t.TempDir(),
		Logger: hclog.NewNullLogger(), StatsInterval: 20 * time.Millisecond, RetryBackoff: 20 * time.Millisecond})
	defer r.Stop()
	status := func() PartitionStatus {
		for _, s := range r.Status() {
			if s.Topic == "t" {
				return s
			}
		}
		return PartitionStatus{}
	}
	waitFor := func(what string, cond func(PartitionStatus) bool) PartitionStatus {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := status()
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v", what, s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the first 10 records copied", func(s PartitionStatus) bool { return s.CopiedThrough == 10 && s.LagRecords == 0 })

	// The target goes down.
	tgt.Close()
	produce(25)
	s := waitFor("the lag to count the records produced during the outage", func(s PartitionStatus) bool { return s.LagRecords == 25 })
	if s.CopiedThrough != 10 || s.SourceHWM != 35 {
		t.Fatalf("during the outage: %+v", s)
	}
}
