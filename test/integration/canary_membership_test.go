package integration

// Canary by group on real Kafka: the group a consumer's fetches count for
// is the group its client instance joined, not whatever group any client
// with the same client.id last named (proxy/group_membership.go).

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// membershipRead reads n records through cl; it fails the test on a fetch
// error or the deadline.
func membershipRead(t *testing.T, cl *kgo.Client, who string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var vals []string
	for len(vals) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s read %d of %d records before the deadline", who, len(vals), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("%s: fetch %s[%d]: %v", who, topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { vals = append(vals, string(r.Value)) })
	}
	return vals
}

func wantAllPrefixed(t *testing.T, who string, vals []string, prefix string) {
	t.Helper()
	for _, v := range vals {
		if !strings.HasPrefix(v, prefix) {
			t.Fatalf("%s read %q, want only records starting with %q (%d records)", who, v, prefix, len(vals))
		}
	}
	t.Logf("%s: %d records, all %s", who, len(vals), prefix)
}

// Three franz-go consumers with the default client.id (kgo), from one host,
// through one kproxy whose canary rule sends group canary-* to the target
// for topic T:
//   - billing (another topic, P) runs first; the canary consumer of T then
//     reads the target: its fetch connection is tied to its group by client
//     instance, and billing's subscription (P) does not make it ambiguous;
//   - main (group main-*, topic T) keeps reading the source while the canary
//     consumer heartbeats and commits. Before, the group was kept per
//     client.id process-wide, and the canary's requests moved main's
//     fetches to the target.
func TestCanaryGroupByMembershipSharedClientID(t *testing.T) {
	topic := fmt.Sprintf("canary-membership-%d", runID)
	other := fmt.Sprintf("canary-membership-other-%d", runID)
	noteRouted(topic, other)
	const n = 30
	for _, tp := range []string{topic, other} {
		createTopic(t, env.source, tp, 3)
		createTopic(t, env.target, tp, 3)
		produceValues(t, env.source, tp, "from-source", n)
		produceValues(t, env.target, tp, "from-target", n)
	}
	srv := startRouted(t, fmt.Sprintf("  default: source\n  topics:\n    %s: { route: source, canary: { fetch: target, groups: [\"canary-*\"] } }\n    %s: source\n", topic, other))
	boot := srv.Addr().String()
	consumer := func(group, tp string, heartbeat time.Duration) *kgo.Client {
		// No kgo.ClientID: every consumer here is "kgo".
		cl := newClient(t, boot, kgo.ConsumerGroup(group), kgo.ConsumeTopics(tp),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond),
			kgo.HeartbeatInterval(heartbeat))
		t.Cleanup(cl.Close)
		return cl
	}

	billing := consumer(fmt.Sprintf("billing-g-%d", runID), other, 3*time.Second)
	wantAllPrefixed(t, "billing (topic P)", membershipRead(t, billing, "billing", n), "from-source")

	// Heartbeats every 100 ms: under the old rule each re-filed "kgo" as
	// a canary group member.
	canary := consumer(fmt.Sprintf("canary-g-%d", runID), topic, 100*time.Millisecond)
	wantAllPrefixed(t, "canary (topic T)", membershipRead(t, canary, "canary", n), "from-target")

	main := consumer(fmt.Sprintf("main-g-%d", runID), topic, 10*time.Second)
	wantAllPrefixed(t, "main (topic T)", membershipRead(t, main, "main", n), "from-source")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := canary.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	// A fetch main sent before the commit answers within its max wait
	// (100 ms); the next ones are sent after it.
	time.Sleep(300 * time.Millisecond)
	produceValues(t, env.source, topic, "from-source-2", n)
	produceValues(t, env.target, topic, "from-target-2", n)
	wantAllPrefixed(t, "main after the canary's commit", membershipRead(t, main, "main", n), "from-source")
}
