package integration

// `kproxy verify` (the built binary) against a real replicator run on the
// two real clusters: it passes on a faithful copy, also while the
// replicator and a producer are running, and fails naming the partition and
// offset once someone writes into the target partition directly.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

// verifyRun runs `kproxy verify` and returns its stdout, stderr and exit code.
func verifyRun(t *testing.T, exe string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, append([]string{"verify"}, args...)...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running kproxy verify: %v", err)
	}
	return o.String(), e.String(), code
}

// verifyRow returns the fields of the table row for a partition.
func verifyRow(out, topic string, partition int32) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == topic && f[1] == fmt.Sprint(partition) {
			return f
		}
	}
	return nil
}

// verifyTransactions writes committed and aborted transactions to partition
// 0, so that the source has gaps the target does not.
func verifyTransactions(t *testing.T, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := replClient(t, env.source, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
		kgo.TransactionalID(topic+"-txn"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 6; i++ {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 5; j++ {
			rec := &kgo.Record{Partition: 0, Key: []byte(fmt.Sprintf("txn-%d-%d", i, j)), Value: []byte("t"),
				Headers: []kgo.RecordHeader{{Key: "txn", Value: []byte{byte(i)}}}}
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(i%3 != 1)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyParallelRun(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("verify")
	replCreateTopic(t, topic, 2, nil)
	replProduce(t, topic, 2, 300, 25, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	verifyTransactions(t, topic)
	replProduce(t, topic, 2, 50, 10, kgo.RecordPartitioner(kgo.ManualPartitioner()))

	stateDir := filepath.Join(dir, "replicator-state")
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	cfg := fmt.Sprintf(`listen: 127.0.0.1:19999
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
replicate: [%s]
replication:
  state_dir: %s
`, env.source, env.target, topic, stateDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	r := replStart(t, stateDir, replicator.Hooks{}, topic)
	stopped := false
	defer func() {
		if !stopped {
			r.Stop()
		}
	}()
	replWait(t, r, topic)
	// verify reads the maps from stateDir: the copy saves its last
	// catch-up there within catchUpSaveGap (replicator/mapsaver.go).
	for p := int32(0); p < 2; p++ {
		want := r.Map(topic, p).SourceEnd()
		waitFor(t, fmt.Sprintf("the map of %s/%d on disk to reach %d", topic, p, want), func() bool {
			m, err := replicator.LoadMap(stateDir, topic, p)
			return err == nil && m != nil && m.SourceEnd() == want
		})
	}

	// 1. A faithful copy passes.
	out, errOut, code := verifyRun(t, exe, "-c", cfgPath, topic)
	t.Logf("verify of the copy (exit %d):\n%s%s", code, out, errOut)
	if code != 0 {
		t.Fatalf("verify of a faithful copy exited %d", code)
	}
	for p, n := range map[int32]int{0: 350 + 20, 1: 350} {
		f := verifyRow(out, topic, p)
		if len(f) < 8 || f[4] != fmt.Sprint(n) || f[5] != f[6] || f[7] != "ok" {
			t.Errorf("partition %d: row %q, want %d records, equal hashes, ok", p, f, n)
		}
	}
	m0 := r.Map(topic, 0)
	if m0.SourceEnd()-m0.SourceStart() == m0.TargetEnd()-m0.TargetStart() {
		t.Errorf("partition 0 has no gaps: source [%d,%d) target [%d,%d)", m0.SourceStart(), m0.SourceEnd(), m0.TargetStart(), m0.TargetEnd())
	}

	// 2. It passes during the parallel run too: the replicator copies
	// while a producer writes, so the target holds records the persisted
	// map does not cover yet.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(env.source), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
		if err != nil {
			return
		}
		defer cl.Close()
		for i := 0; ctx.Err() == nil; i++ {
			_ = cl.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprintf("live-%d", i)), Value: []byte("live")}).FirstErr()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	out, errOut, code = verifyRun(t, exe, "-c", cfgPath, "-o", "json", topic)
	cancel()
	wg.Wait()
	t.Logf("verify during the parallel run (exit %d):\n%s%s", code, out, errOut)
	if code != 0 {
		t.Fatalf("verify during the parallel run exited %d:\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, `"ok": true`) {
		t.Errorf("json report:\n%s", out)
	}

	// 3. Someone writes one record straight into the target partition:
	// verify names the partition and offset and exits non-zero.
	replWait(t, r, topic)
	r.Stop()
	stopped = true
	m1 := r.Map(topic, 1)
	tc := replClient(t, env.target, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	if err := tc.ProduceSync(pctx, &kgo.Record{Partition: 1, Key: []byte("intruder"), Value: []byte("not from the source")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ends, err := kadm.NewClient(tc).ListEndOffsets(pctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(topic, 1); o.Offset != m1.TargetEnd()+1 {
		t.Fatalf("target end %d, want the map's end %d + the intruder", o.Offset, m1.TargetEnd())
	}
	out, errOut, code = verifyRun(t, exe, "-c", cfgPath, topic)
	t.Logf("verify after a foreign write (exit %d):\n%s%s", code, out, errOut)
	want := fmt.Sprintf("target offset %d (past the offset map's target end %d) holds a record no committed source record after source offset %d explains", m1.TargetEnd(), m1.TargetEnd(), m1.SourceEnd())
	if code == 0 || !strings.Contains(out, want) || !strings.Contains(errOut, topic+"/1") {
		t.Fatalf("verify after a foreign write: exit %d, want non-zero and %q naming %s/1", code, want, topic)
	}
	if strings.Count(out, "DIFFERS") != 1 {
		t.Errorf("only partition 1 should differ:\n%s", out)
	}
}
