package integration

// An aborted cutover on the two real clusters (the scenarios under load are
// in cutover_load_test.go).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/test/checker"
)

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
		writeConfig(t, cfgPath, body)
	}
	writeCfg("source", "10s")
	runKproxy(t, exe, cfgPath)

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
	var log ackLog
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	produce := func(from, n int) {
		for i := from; i < from+n; i++ {
			prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("abort-%06d", i))}, log.promise)
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
	checkAllReadThrough(t, listen, topic, &log, "")
}

// checkAllReadThrough reads the topic through boot and checks it against
// everything the producer had acked: no error, nothing lost or duplicated,
// every record at its acked offset, order per partition.
func checkAllReadThrough(t *testing.T, boot, topic string, log *ackLog, what string) {
	t.Helper()
	acks, errs := log.snapshot()
	if errs > 0 {
		t.Errorf("the producer saw %d errors", errs)
	}
	got := readAllThrough(t, boot, topic, len(acks))
	rep := checker.Check(acks, got, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("%d acked %s: %s", len(acks), what, rep)
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

// The end state: every topic has moved, the operator removes clusters.source
// from the config and restarts kproxy. It keeps serving the flipped topic
// from the target with the same virtual offsets (the sealed offset map in
// state_dir), so records read before and after are at the offsets their
// producers were given, gaps (transaction markers, aborted records) and all,
// and new records continue the offsets.
func TestSourceRemovedAfterCutover(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("endstate")
	replCreateTopic(t, topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var log ackLog
	ack := log.promise
	// History on the source with gaps: plain records, a committed and an
	// aborted transaction, more plain records.
	direct := replClient(t, env.source, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"))
	txn := func(commit bool, from int) {
		if err := direct.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := from; i < from+10; i++ {
			v := fmt.Sprintf("txn-%d", i)
			r := &kgo.Record{Value: []byte(v)}
			if err := direct.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if commit {
				ack(r, nil)
			}
		}
		if err := direct.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	txn(true, 0)
	txn(false, 10)
	txn(true, 20)

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	state := filepath.Join(dir, "state")
	write := func(body string) { writeConfig(t, cfgPath, body) }
	both := func(route string) string {
		return fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\nlog: { level: info }\n",
			listen, admin, state, env.source, env.target, topic, route, topic)
	}
	start := func() (*exec.Cmd, *lockedBuf) { return runKproxy(t, exe, cfgPath) }
	produce := func(prefix string, n int) {
		cl := replClient(t, listen, kgo.DefaultProduceTopic(topic))
		for i := 0; i < n; i++ {
			cl.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}, ack)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
	write(both("source"))
	cmd, logs := start()
	waitFor(t, "replication to start", func() bool { return strings.Contains(logs.String(), "replication of a topic started") })
	produce("before", 100)
	write(both("target"))
	waitFor(t, "the flip", func() bool {
		if strings.Contains(logs.String(), "cutover aborted") {
			if resp, err := http.Get("http://" + admin + "/status"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("cutover aborted; status: %s", b)
			}
		}
		return strings.Contains(logs.String(), "cutover released held produce requests to the target")
	})
	produce("after", 100)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	// The source is gone from the config.
	write(fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  target: { bootstrap: [%s] }\nroutes:\n  default: target\nlog: { level: info }\n",
		listen, admin, state, env.target))
	_, logs = start()
	produce("sourceless", 50)
	want, errs := log.snapshot()
	if errs > 0 {
		t.Errorf("the producers saw %d errors", errs)
	}
	got := readAllThrough(t, listen, topic, len(want))
	rep := checker.Check(want, got, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("without the source: %s", rep)
	if !rep.OK() {
		t.Fatalf("%s\n%s\n%s", rep, rep.Details(), logs.String())
	}
	// The history had gaps, so the target's own offsets differ from the
	// virtual ones: the map, not luck, made them agree.
	tgtEnds, err := kadm.NewClient(replClient(t, env.target)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	virtEnds, err := kadm.NewClient(replClient(t, listen)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var tgtSum, virtSum int64
	tgtEnds.Each(func(o kadm.ListedOffset) { tgtSum += o.Offset })
	virtEnds.Each(func(o kadm.ListedOffset) { virtSum += o.Offset })
	if virtSum <= tgtSum {
		t.Errorf("virtual end offsets sum %d, target's own %d: the source's gaps should keep the virtual offsets ahead", virtSum, tgtSum)
	}
	t.Logf("%d records at their virtual offsets; end offsets: virtual %d, target's own %d", len(want), virtSum, tgtSum)
}

// Restarts across a cutover and a rollback: kproxy is killed (SIGKILL)
// twice while an idempotent producer writes through it, once after the flip
// to the target and once after the flip back. The restarted kproxy knows
// where the topic lives (the flip marker), resumes the copy back from its
// map, and maps the producer's virtual PID to the same upstream sessions
// (state_dir/producer-sessions.jsonl), so batches the producer resends after
// a kill are dropped by the broker as duplicates, and one resent across a
// flip is answered by the cluster that has it (decision 008). Nothing acked
// is lost, nothing is duplicated, order holds per partition. The producer
// keeps writing through each kill (a make test run once found 4 records
// written twice here before decision 008).
func TestRestartsAcrossCutoverAndRollback(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("restarts")
	replCreateTopic(t, topic, 3, nil)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	writeCfg := func(route string) {
		writeConfig(t, cfgPath, fmt.Sprintf("listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\nlog: { level: info }\n",
			listen, filepath.Join(dir, "state"), env.source, env.target, topic, route, topic))
	}
	writeCfg("source")
	cmd, logs := runKproxy(t, exe, cfgPath)
	waitFor(t, "replication to start", func() bool { return strings.Contains(logs.String(), "replication of a topic started") })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prod := replClient(t, listen, kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(2*time.Minute))
	var log ackLog
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("restart-%06d", i))}, log.promise)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	flipTo := func(route string) {
		t.Helper()
		writeCfg(route)
		waitFor(t, "the flip to the "+route, func() bool {
			return strings.Contains(logs.String(), "cutover released held produce requests to the "+route)
		})
	}
	kill := func() {
		t.Helper()
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		time.Sleep(300 * time.Millisecond)
		cmd, logs = runKproxy(t, exe, cfgPath)
	}
	time.Sleep(2 * time.Second)
	flipTo("target")
	time.Sleep(time.Second)
	kill()
	waitFor(t, "the copy back to resume", func() bool { return strings.Contains(logs.String(), "to=source") })
	time.Sleep(2 * time.Second)
	flipTo("source")
	time.Sleep(time.Second)
	kill()
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllReadThrough(t, listen, topic, &log, "across a flip, a kill, a rollback and a kill")
}
