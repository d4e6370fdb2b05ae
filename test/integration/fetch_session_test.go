package integration

// The replicator fetches from the source through incremental fetch sessions
// (KIP-227; replicator/fetcher.go). A source broker restart drops every
// session it held: the copy must notice (a broken connection, or
// FETCH_SESSION_ID_NOT_FOUND on the next request), open a new session and
// copy on, exactly once.

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

func TestReplicatorFetchSessionSurvivesSourceRestart(t *testing.T) {
	topics := []string{replTopic("session-a"), replTopic("session-b")}
	for _, topic := range topics {
		replCreateTopic(t, topic, 3, nil)
		replProduce(t, topic, 3, 200, 20, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	r := replStart(t, t.TempDir(), replicator.Hooks{}, topics...)
	defer r.Stop()
	for _, topic := range topics {
		replWait(t, r, topic)
	}
	// Idle for a few long polls: every partition sits in the session.
	time.Sleep(2 * time.Second)

	cmd := exec.Command("bash", env.root+"/test/kafka/kafka.sh", "restart-source")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("restarting the source broker: %v", err)
	}
	waitSourceUp(t)

	// Records written after the restart arrive, and nothing twice.
	for _, topic := range topics {
		replProduce(t, topic, 3, 100, 10, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	for _, topic := range topics {
		replWait(t, r, topic)
		for p := int32(0); p < 3; p++ {
			replCompare(t, r, topic, p, replSourceRecords(t, topic, p, 300))
		}
	}
	for _, s := range r.Status() {
		if s.Fatal || s.CopiedThrough != 300 || s.LagRecords != 0 {
			t.Errorf("status after the restart: %+v", s)
		}
	}
}

// waitSourceUp waits until the restarted source answers a produce (its
// partitions have leaders again).
func waitSourceUp(t *testing.T) {
	t.Helper()
	cl := replClient(t, env.source)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: "_kproxy_harness_check", Value: []byte("up")}).FirstErr()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("source not answering after the restart: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
