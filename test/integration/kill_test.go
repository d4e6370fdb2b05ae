package integration

// kill -9 the kproxy binary at random moments while it replicates a topic
// that producers keep writing to; after a final clean run the target must
// hold every source record exactly once, in order (checked by kproxy verify,
// record by record through the offset map, and by counts).

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestKill9DuringReplicationCopiesExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("kill9")
	replCreateTopic(t, topic, 3, nil)

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	cfg := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes: { default: source }\nreplicate: [%q]\nlog: { level: warn }\n",
		listen, admin, filepath.Join(dir, "state"), env.source, env.target, topic)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	// Producers keep writing to the source (directly) through every kill.
	prodCtx, stopProducing := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var produced int64
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(env.source), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(2*time.Millisecond))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for i := 0; prodCtx.Err() == nil; i++ {
			cl.Produce(prodCtx, &kgo.Record{Key: []byte(fmt.Sprint(i % 97)), Value: []byte(fmt.Sprintf("v-%d", i))}, func(_ *kgo.Record, err error) {
				if err == nil {
					mu.Lock()
					produced++
					mu.Unlock()
				}
			})
			if i%50 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		_ = cl.Flush(context.Background())
	}()

	run := func() *exec.Cmd {
		cmd := exec.Command(exe, "run", "-c", cfgPath)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	for i := 0; i < 6; i++ {
		cmd := run()
		time.Sleep(time.Duration(800+rand.IntN(2200)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	stopProducing()
	wg.Wait()

	// A last run catches up; then it is stopped cleanly.
	cmd := run()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(replClient(t, env.source)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	waitFor(t, "the last run to catch up", func() bool {
		resp, err := http.Get("http://" + admin + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Replication struct {
				Partitions []struct {
					Topic         string `json:"Topic"`
					Partition     int32  `json:"Partition"`
					CopiedThrough int64  `json:"CopiedThrough"`
					Err           string `json:"Err"`
				} `json:"partitions"`
			} `json:"replication"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		caught := 0
		for _, p := range st.Replication.Partitions {
			if p.Err != "" {
				t.Fatalf("%s/%d: %s", p.Topic, p.Partition, p.Err)
			}
			if p.Topic == topic && p.CopiedThrough >= want[p.Partition] {
				caught++
			}
		}
		return caught == len(want)
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	out, errOut, code := verifyRun(t, exe, "-c", cfgPath, topic)
	t.Logf("kproxy verify after 6 kill -9s:\n%s", out)
	if code != 0 {
		t.Fatalf("verify failed (exit %d): %s", code, errOut)
	}
	tgtEnds, err := kadm.NewClient(replClient(t, env.target)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var srcTotal, tgtTotal int64
	for _, v := range want {
		srcTotal += v
	}
	tgtEnds.Each(func(o kadm.ListedOffset) { tgtTotal += o.Offset })
	mu.Lock()
	defer mu.Unlock()
	t.Logf("produced %d acked records; source holds %d, target %d", produced, srcTotal, tgtTotal)
	if tgtTotal != srcTotal || srcTotal < produced {
		t.Fatalf("target holds %d records, source %d (acked %d): not exactly once", tgtTotal, srcTotal, produced)
	}
}
