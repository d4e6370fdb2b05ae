package integration

// A live cutover on the two real clusters, through the kproxy binary: an
// idempotent franz-go producer writes through kproxy while a franz-go
// group, a librdkafka group and a Java VerifiableConsumer group read; the
// operator's one-line edit flips the replicated topic to the target
// mid-stream. The checker must find nothing lost, duplicated, skipped or
// reordered in any consumer's history, the producer must see no error, and
// the franz-go group must not rebalance after its first assignment.

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

func TestLiveCutoverUnderLoad(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("cutover")
	replCreateTopic(t, topic, 3, nil)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	writeCfg := func(route string) {
		body := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\ncutover: { max_hold: 10s }\nlog: { level: info }\n",
			listen, admin, filepath.Join(dir, "state"), env.source, env.target, topic, route, topic)
		tmp := cfgPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("source")
	logs := &lockedBuf{}
	cmd := exec.Command(exe, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	waitFor(t, "kproxy to listen", func() bool { return bytesContain(logs.String(), "listening for kafka clients") })

	// Consumers first, so they hold their partitions across the flip.
	var consumed []checker.Consumed
	var cmu sync.Mutex
	rebalances := 0
	group := topic + "-franz"
	cons := replClient(t, listen, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ClientID("franz-consumer"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) { cmu.Lock(); rebalances++; cmu.Unlock() }),
		kgo.OnPartitionsRevoked(func(context.Context, *kgo.Client, map[string][]int32) { cmu.Lock(); rebalances++; cmu.Unlock() }))
	pollCtx, stopPoll := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for pollCtx.Err() == nil {
			fs := cons.PollFetches(pollCtx)
			fs.EachError(func(tp string, p int32, err error) {
				if pollCtx.Err() == nil {
					t.Errorf("franz consumer: fetch %s/%d: %v", tp, p, err)
				}
			})
			cmu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				consumed = append(consumed, checker.Consumed{Client: "franz", Consumer: "franz", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)})
			})
			cmu.Unlock()
		}
	}()
	rdkOut := make(chan []byte, 1)
	go func() {
		out, _ := exec.Command(bin("test/clients/bin/rdk"), "consume", "--bootstrap", listen, "--topic", topic, "--group", topic+"-rdk", "--count", "1000000", "--timeout", "30").Output()
		rdkOut <- out
	}()
	javaOut := make(chan []byte, 1)
	go func() {
		c := exec.Command("bash", bin("test/clients/java/verifiable.sh"), "--timeout", "32", "consumer", "--bootstrap-server", listen, "--topic", topic, "--group-id", topic+"-java", "--verbose", "--reset-policy", "earliest")
		c.Env = append(os.Environ(), "KPROXY_TOOLS_CP="+env.toolsCP)
		out, _ := c.Output()
		javaOut <- out
	}()
	waitFor(t, "the franz-go group to be assigned", func() bool { cmu.Lock(); defer cmu.Unlock(); return rebalances > 0 })
	cmu.Lock()
	rebalancesBefore := rebalances
	cmu.Unlock()

	// An idempotent producer through kproxy, ~400 records/s for 9 s.
	prod := replClient(t, listen, kgo.DefaultProduceTopic(topic), kgo.ClientID("franz-producer"))
	var acks []checker.Ack
	var amu sync.Mutex
	produceErrs := 0
	pctx, stopProduce := context.WithTimeout(context.Background(), 60*time.Second)
	defer stopProduce()
	flipAt := time.Now().Add(4 * time.Second)
	flipped := false
	for i := 0; time.Since(flipAt) < 5*time.Second; i++ {
		if !flipped && time.Now().After(flipAt) {
			writeCfg("target") // the operator's one-line edit
			flipped = true
		}
		v := fmt.Sprintf("cutover-%06d", i)
		prod.Produce(pctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 31)), Value: []byte(v)}, func(r *kgo.Record, err error) {
			amu.Lock()
			defer amu.Unlock()
			if err != nil {
				produceErrs++
				return
			}
			acks = append(acks, checker.Ack{Client: "franz", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)})
		})
		time.Sleep(2500 * time.Microsecond)
	}
	if err := prod.Flush(pctx); err != nil {
		t.Fatal(err)
	}

	// The cutover finished, and it was a flip.
	var st struct {
		Cutovers []struct {
			Topic, State, Reason string
			HoldMillis           int64 `json:"hold_ms"`
		} `json:"cutovers"`
	}
	waitFor(t, "the cutover to finish", func() bool {
		resp, err := http.Get("http://" + admin + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		for _, c := range st.Cutovers {
			if c.Topic == topic && c.State != "holding" && c.State != "draining" {
				return true
			}
		}
		return false
	})
	for _, c := range st.Cutovers {
		if c.Topic == topic {
			t.Logf("cutover: %s after holding produce for %d ms %s", c.State, c.HoldMillis, c.Reason)
			if c.State != "flipped" {
				t.Fatalf("cutover %s: %s\n%s", c.State, c.Reason, logs.String())
			}
		}
	}
	amu.Lock()
	nAcks := len(acks)
	amu.Unlock()
	if produceErrs > 0 {
		t.Errorf("the producer saw %d errors", produceErrs)
	}

	waitFor(t, "the franz-go group to read every acked record", func() bool { cmu.Lock(); defer cmu.Unlock(); return len(consumed) >= nAcks })
	stopPoll()
	pwg.Wait()
	cmu.Lock()
	defer cmu.Unlock()
	if rebalances != rebalancesBefore {
		t.Errorf("the franz-go group rebalanced during the cutover (%d events after the first assignment)", rebalances-rebalancesBefore)
	}
	check := func(name string, got []checker.Consumed) {
		rep := checker.Check(acks, got, checker.Options{ExpectAll: true, RequireAcked: true})
		t.Logf("%s: %s", name, rep)
		if !rep.OK() {
			t.Errorf("%s: %s\n%s", name, rep, rep.Details())
		}
	}
	check("franz-go group", consumed)
	check("librdkafka group", parse(t, "rdk", <-rdkOut).Consumed)
	check("java group", parse(t, "java", <-javaOut).Consumed)
	t.Logf("%d records acked across the flip", nAcks)
}

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
