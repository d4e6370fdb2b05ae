package integration

// An aborted cutover on the two real clusters (the scenarios under load are
// in cutover_load_test.go).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/test/checker"
)

func bytesContain(s, sub string) bool { return strings.Contains(s, sub) }

// A cutover that cannot finish within cutover.max_hold aborts: the held
// produce requests go to the source, the topic stays there, and nothing is
// lost or duplicated; the next edit with a workable max_hold flips it.
func TestAbortedCutoverKeepsTheRouteAndLosesNothing(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("abort")
	replCreateTopic(t, topic, 2, nil)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	writeCfg := func(route, maxHold string) {
		body := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\ncutover: { max_hold: %s }\nlog: { level: info }\n",
			listen, admin, filepath.Join(dir, "state"), env.source, env.target, topic, route, topic, maxHold)
		if err := os.WriteFile(cfgPath+".tmp", []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfgPath+".tmp", cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("source", "10s")
	logs := &lockedBuf{}
	cmd := exec.Command(exe, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	waitFor(t, "kproxy to listen", func() bool { return strings.Contains(logs.String(), "listening for kafka clients") })

	state := func() (string, string) {
		resp, err := http.Get("http://" + admin + "/status")
		if err != nil {
			return "", ""
		}
		defer resp.Body.Close()
		var st struct {
			Cutovers []struct{ Topic, State, Reason string } `json:"cutovers"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return "", ""
		}
		for _, c := range st.Cutovers {
			if c.Topic == topic {
				return c.State, c.Reason
			}
		}
		return "", ""
	}

	prod := replClient(t, listen, kgo.DefaultProduceTopic(topic))
	var acks []checker.Ack
	var mu sync.Mutex
	errs := 0
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	produce := func(from, n int) {
		for i := from; i < from+n; i++ {
			prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("abort-%06d", i))}, func(r *kgo.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs++
					return
				}
				acks = append(acks, checker.Ack{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Value: string(r.Value)})
			})
			time.Sleep(2 * time.Millisecond)
		}
	}
	produce(0, 500)
	writeCfg("target", "1ms") // cannot drain in a millisecond: must abort
	produce(500, 500)
	waitFor(t, "the cutover to abort", func() bool { s, _ := state(); return s == "aborted" })
	s, reason := state()
	t.Logf("first attempt: %s (%s)", s, reason)
	produce(1000, 300)
	writeCfg("target", "10s") // a workable hold: flips
	produce(1300, 500)
	waitFor(t, "the retried cutover to flip", func() bool { s, _ := state(); return s == "flipped" })
	produce(1800, 200)
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if errs > 0 {
		t.Errorf("the producer saw %d errors", errs)
	}
	got := readAllThrough(t, listen, topic, len(acks))
	rep := checker.Check(acks, got, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("%s", rep)
	if !rep.OK() {
		t.Fatalf("%s\n%s", rep, rep.Details())
	}
}

// readAllThrough reads n records of topic from the start through boot.
func readAllThrough(t *testing.T, boot, topic string, n int) []checker.Consumed {
	t.Helper()
	seen := readAll(t, boot, "abort-reader", topic, n)
	out := make([]checker.Consumed, 0, len(seen))
	for _, r := range seen {
		out = append(out, checker.Consumed{Consumer: "reader", Topic: topic, Partition: r.partition, Offset: r.offset, Value: r.value})
	}
	return out
}
