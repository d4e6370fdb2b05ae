package integration

// Faults on real Kafka (issue 10 item 8): the kproxy binary reaches both
// clusters through test/faults proxies (each broker's FAULT listener
// advertises the proxy's port, so every connection kproxy makes, for
// clients and for its replicator, passes the faults), while an idempotent
// franz-go producer and a consumer group work through kproxy. After each
// fault the checker runs over every acked record: nothing lost, nothing
// duplicated, order per partition, and the run's end state (flipped, or
// still on the source) is the one expected.
//
// The short forms run in `make test`; KPROXY_FAULTS_LONG=1 (make
// test-faults) stretches the faults and the load. KPROXY_FAULTS_LOG_LEVEL
// (default info) sets kproxy's log level, e.g. debug to see each copy
// session's producer id while chasing a duplicate.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/test/checker"
	"github.com/kproxy/kproxy/test/faults"
)

// long reports whether the long variants were asked for.
func long() bool { return os.Getenv("KPROXY_FAULTS_LONG") != "" }

// scale picks the short or the long form of a duration.
func scale(short, longer time.Duration) time.Duration {
	if long() {
		return longer
	}
	return short
}

// faultRig is a kproxy binary whose clusters are reached through fault
// proxies, with a replicated topic.
type faultRig struct {
	t                        *testing.T
	dir, exe, cfgPath, state string
	listen, admin, topic     string
	src, tgt                 *faults.Proxy
	maxHold                  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *lockedBuf
	all  strings.Builder // every run's log, for a failed test
}

// faultProxy starts the fault proxy a broker's FAULT listener advertises.
func faultProxy(t *testing.T, cluster string) *faults.Proxy {
	t.Helper()
	up := os.Getenv("KPROXY_" + cluster + "_FAULT_LISTENER")
	adv := os.Getenv("KPROXY_" + cluster + "_FAULT_ADVERTISED")
	if up == "" || adv == "" {
		t.Fatalf("KPROXY_%s_FAULT_LISTENER/_ADVERTISED are not set: start the brokers with this checkout's test/kafka/kafka.sh and eval its env", cluster)
	}
	var p *faults.Proxy
	var err error
	// The previous test's proxy may still be closing its port.
	if !poll(10*time.Second, 100*time.Millisecond, func() bool { p, err = faults.Listen(adv, up); return err == nil }) {
		t.Fatalf("fault proxy on %s: %v", adv, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// faultExe is the kproxy binary the fault tests share: one build per test
// binary run instead of one per test (a link takes 10-20 s on a loaded
// machine). It lives in a directory named after this checkout, rebuilt
// (go build's cache makes that a link at most) by every run.
var faultExe struct {
	once sync.Once
	path string
	err  error
}

func faultKproxy(t *testing.T) string {
	t.Helper()
	faultExe.once.Do(func() {
		root, _ := filepath.Abs(env.root)
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("kproxy-faults-%x", crc32.ChecksumIEEE([]byte(root))))
		if faultExe.err = os.MkdirAll(dir, 0o755); faultExe.err != nil {
			return
		}
		faultExe.path = filepath.Join(dir, "kproxy")
		if out, err := exec.Command("go", "build", "-o", faultExe.path, "github.com/kproxy/kproxy/cmd/kproxy").CombinedOutput(); err != nil {
			faultExe.err = fmt.Errorf("building kproxy: %v\n%s", err, out)
		}
	})
	if faultExe.err != nil {
		t.Fatal(faultExe.err)
	}
	return faultExe.path
}

func newFaultRig(t *testing.T, name string, partitions int32) *faultRig {
	dir := t.TempDir()
	r := &faultRig{
		t: t, dir: dir, exe: faultKproxy(t), cfgPath: filepath.Join(dir, "kproxy.yaml"), state: filepath.Join(dir, "state"),
		listen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		topic: replTopic(name), src: faultProxy(t, "SOURCE"), tgt: faultProxy(t, "TARGET"), maxHold: "10s",
	}
	replCreateTopic(t, r.topic, partitions, nil)
	t.Cleanup(func() {
		r.stop(syscall.SIGTERM)
		// Every fault test leaves a topic of ~10k records on both
		// clusters; deleted, they do not slow the next broker restart's
		// log recovery.
		for _, boot := range []string{env.source, env.target} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = kadm.NewClient(replClient(t, boot)).DeleteTopics(ctx, r.topic)
			cancel()
		}
		if t.Failed() {
			r.mu.Lock()
			t.Logf("kproxy logs:\n%s", r.all.String())
			r.mu.Unlock()
		}
	})
	return r
}

// writeCfg routes the topic's produce and fetch.
func (r *faultRig) writeCfg(route string) {
	body := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\ncutover: { max_hold: %s }\nlog: { level: %s }\n",
		r.listen, r.admin, r.state, r.src.Addr(), r.tgt.Addr(), r.topic, route, r.topic, r.maxHold, cmp.Or(os.Getenv("KPROXY_FAULTS_LOG_LEVEL"), "info"))
	writeConfig(r.t, r.cfgPath, body)
}

// reroute edits the topic's route in the running kproxy's config and waits
// until kproxy applied it (the reloader ignores a file whose content it
// already applied, so two quick edits could be seen as none).
func (r *faultRig) reroute(route string) {
	r.t.Helper()
	n := strings.Count(r.log(), "config reloaded")
	r.writeCfg(route)
	waitFor(r.t, "kproxy to apply the route "+route, func() bool { return strings.Count(r.log(), "config reloaded") > n })
}

// start runs kproxy and waits until it listens.
func (r *faultRig) start() {
	r.t.Helper()
	logs := &lockedBuf{}
	cmd := exec.Command(r.exe, "run", "-c", r.cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.cmd, r.logs = cmd, logs
	r.mu.Unlock()
	waitFor(r.t, "kproxy to listen", func() bool { return strings.Contains(logs.String(), "listening for kafka clients") })
}

// stop ends the running kproxy with sig (SIGKILL: a crash) and keeps its log.
func (r *faultRig) stop(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	_ = r.cmd.Wait()
	fmt.Fprintf(&r.all, "----- kproxy run ended by %v -----\n%s", sig, r.logs.String())
	r.cmd = nil
}

func (r *faultRig) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logs == nil {
		return ""
	}
	return r.logs.String()
}

// cutover is the topic's cutover in /status (zero when none or unreachable).
func (r *faultRig) cutover() cutoverStatusView {
	resp, err := http.Get("http://" + r.admin + "/status")
	if err != nil {
		return cutoverStatusView{}
	}
	defer resp.Body.Close()
	var st struct {
		Cutovers []cutoverStatusView `json:"cutovers"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return cutoverStatusView{}
	}
	for _, c := range st.Cutovers {
		if c.Topic == r.topic {
			return c
		}
	}
	return cutoverStatusView{}
}

// waitState waits until the topic's cutover is in state with home (home ""
// matches any), within d.
func (r *faultRig) waitState(what, state, home string, d time.Duration) cutoverStatusView {
	r.t.Helper()
	var c cutoverStatusView
	if !poll(d, 20*time.Millisecond, func() bool {
		c = r.cutover()
		return c.State == state && (home == "" || c.Home == home)
	}) {
		r.t.Fatalf("timed out waiting for %s: cutover is %+v", what, c)
	}
	return c
}

// faultLoad is an idempotent franz-go producer and a franz-go consumer
// group, both through kproxy, running until finish.
type faultLoad struct {
	r        *faultRig
	acks     ackLog
	prod     *kgo.Client
	stop     context.CancelFunc
	done     chan struct{}
	cons     *kgo.Client
	stopPoll context.CancelFunc
	pollDone chan struct{}
	cmu      sync.Mutex
	consumed []checker.Consumed
	epoch    int
	sent     int
	pause    atomic.Int64 // nanoseconds between records
	prodLog  lockedBuf    // the producer's own log (retries, producer id resets), shown when a check fails
}

// slow sets the pause between produced records (the default is 4 ms).
func (l *faultLoad) slow(d time.Duration) { l.pause.Store(int64(d)) }

// startLoad produces about 250 records/s across the topic's partitions and
// consumes them in a group.
func (r *faultRig) startLoad() *faultLoad {
	l := &faultLoad{r: r, done: make(chan struct{}), pollDone: make(chan struct{})}
	l.slow(4 * time.Millisecond)
	// A request kproxy does not answer (a blackhole) is given up by the
	// client after its timeout and retried on a new connection; the
	// idempotent producer's retries are unlimited, so every record is
	// acked in the end or the test fails.
	l.prod = replClient(r.t, r.listen, kgo.DefaultProduceTopic(r.topic), kgo.ClientID("faults-producer"),
		kgo.ProduceRequestTimeout(5*time.Second), kgo.RequestTimeoutOverhead(5*time.Second), kgo.RetryBackoffFn(func(int) time.Duration { return 200 * time.Millisecond }),
		kgo.WithLogger(kgo.BasicLogger(&l.prodLog, kgo.LogLevelInfo, nil)))
	bump := func(ctx context.Context, _ *kgo.Client, _ map[string][]int32) {
		l.cmu.Lock()
		l.epoch++
		l.cmu.Unlock()
	}
	l.cons = replClient(r.t, r.listen, kgo.ConsumerGroup(r.topic+"-faults"), kgo.ConsumeTopics(r.topic), kgo.ClientID("faults-consumer"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond),
		kgo.OnPartitionsAssigned(bump), kgo.OnPartitionsRevoked(bump), kgo.OnPartitionsLost(bump))
	pctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go func() {
		defer close(l.done)
		for i := 0; pctx.Err() == nil; i++ {
			l.prod.Produce(context.Background(), &kgo.Record{Key: []byte(fmt.Sprint(i % 13)), Value: []byte(fmt.Sprintf("%s-%07d", r.topic, i))}, l.acks.promise)
			l.sent++
			time.Sleep(time.Duration(l.pause.Load()))
		}
	}()
	cctx, stopPoll := context.WithCancel(context.Background())
	l.stopPoll = stopPoll
	go func() {
		defer close(l.pollDone)
		for cctx.Err() == nil {
			fs := l.cons.PollFetches(cctx)
			l.cmu.Lock()
			fs.EachRecord(func(rec *kgo.Record) {
				l.consumed = append(l.consumed, checker.Consumed{Client: "franz", Consumer: "franz", Topic: rec.Topic, Partition: rec.Partition,
					Offset: rec.Offset, Key: string(rec.Key), Value: string(rec.Value), Epoch: l.epoch})
			})
			l.cmu.Unlock()
		}
	}()
	return l
}

// acked is the number of records acked so far.
func (l *faultLoad) acked() int {
	a, _ := l.acks.snapshot()
	return len(a)
}

// waitAcked waits until n more records are acked than now (the load moves).
func (l *faultLoad) waitAcked(what string, n int, d time.Duration) {
	l.r.t.Helper()
	from, t0 := l.acked(), time.Now()
	if !poll(d, 50*time.Millisecond, func() bool { return l.acked() >= from+n }) {
		l.r.t.Fatalf("%s: %d records acked in %v (want %d more than %d)", what, l.acked()-from, d, n, from)
	}
	l.r.t.Logf("%s: %d more records acked in %v", what, n, time.Since(t0).Round(time.Millisecond))
}

// finish stops the producer, waits for every record to be acked, lets the
// group consume everything, and runs the checker twice: on the group's
// history (a redelivery after a rebalance is at-least-once, allowed; a
// lost, duplicated-by-value, gapped or reordered record is not) and on a
// fresh read of the whole topic through kproxy (exactly once, at the acked
// offsets).
func (l *faultLoad) finish(what string) {
	t := l.r.t
	t.Helper()
	l.stop()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := l.prod.Flush(ctx); err != nil {
		t.Fatalf("flushing the producer: %v (%d of %d acked)", err, l.acked(), l.sent)
	}
	acks, errs := l.acks.snapshot()
	if errs > 0 || len(acks) != l.sent {
		t.Fatalf("the producer saw %d errors; %d of %d records acked", errs, len(acks), l.sent)
	}
	want := map[string]bool{}
	for _, a := range acks {
		want[a.Value] = true
	}
	if !poll(60*time.Second, 100*time.Millisecond, func() bool {
		l.cmu.Lock()
		defer l.cmu.Unlock()
		seen := 0
		got := map[string]bool{}
		for _, c := range l.consumed {
			if want[c.Value] && !got[c.Value] {
				got[c.Value] = true
				seen++
			}
		}
		return seen == len(want)
	}) {
		t.Errorf("the group did not consume every acked record within 60 s")
	}
	l.stopPoll()
	<-l.pollDone
	l.cmu.Lock()
	group := checker.Check(acks, l.consumed, checker.Options{ExpectAll: true, AllowRedelivery: true})
	l.cmu.Unlock()
	t.Logf("%s, the group during the fault: %s", what, group)
	if !group.OK() {
		t.Errorf("group: %s\n%s", group, group.Details())
		l.dumpDuplicates()
	}
	checkAllReadThrough(t, l.r.listen, l.r.topic, &l.acks, what)
}

// readDirect reads topic from one cluster directly (not through kproxy),
// from the start until three polls in a row return nothing.
func readDirect(t *testing.T, boot, topic string) []*kgo.Record {
	t.Helper()
	cl := replClient(t, boot, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(300*time.Millisecond))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for quiet := 0; quiet < 3 && ctx.Err() == nil; {
		n := len(out)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
		if len(out) == n {
			quiet++
		}
	}
	return out
}

// dumpDuplicates logs, for a failed check, every record whose value is
// in a cluster's log more than once, read directly from each cluster with
// the producer id and epoch of its batch, and the producer's own log: which
// writer wrote the second copy is the first question about a duplicate.
func (l *faultLoad) dumpDuplicates() {
	t := l.r.t
	t.Helper()
	for _, c := range []struct{ name, boot string }{{"source", env.source}, {"target", env.target}} {
		type at struct {
			part     int32
			off, pid int64
			epoch    int16
		}
		byValue := map[string][]at{}
		for _, r := range readDirect(t, c.boot, l.r.topic) {
			byValue[string(r.Value)] = append(byValue[string(r.Value)], at{r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch})
		}
		for v, ats := range byValue {
			if len(ats) > 1 {
				t.Logf("%s holds %q %d times: %+v", c.name, v, len(ats), ats)
			}
		}
	}
	t.Logf("producer log:\n%s", l.prodLog.String())
}

// kafkaSh runs test/kafka/kafka.sh with args (kill, start: the lane's
// environment is inherited).
func kafkaSh(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{env.root + "/test/kafka/kafka.sh"}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kafka.sh %v: %v", args, err)
	}
}

// A blackhole between kproxy and the source broker (connections accepted,
// nothing forwarded) under produce and consume load: clients see timeouts
// and retriable errors, and once the network heals every acked record is
// there exactly once, in order.
func TestFaultSourceBlackholeUnderLoad(t *testing.T) {
	r := newFaultRig(t, "blackhole", 3)
	r.writeCfg("source")
	r.start()
	l := r.startLoad()
	l.waitAcked("before the blackhole", 300, 30*time.Second)
	r.src.Blackhole(true)
	time.Sleep(scale(5*time.Second, 30*time.Second))
	r.src.Blackhole(false)
	l.waitAcked("after the blackhole healed", 300, 60*time.Second)
	l.finish("across a source blackhole")
}

// Every upstream connection (clients' and the replicator's, both clusters)
// reset, three times, under load.
func TestFaultUpstreamResetsUnderLoad(t *testing.T) {
	r := newFaultRig(t, "reset", 3)
	r.writeCfg("source")
	r.start()
	l := r.startLoad()
	resets := 0
	for i := 0; i < 3; i++ {
		l.waitAcked("before a reset", 200, 30*time.Second)
		resets += r.src.Reset() + r.tgt.Reset()
	}
	l.waitAcked("after the resets", 200, 30*time.Second)
	if resets == 0 {
		t.Fatal("no upstream connection was open to reset")
	}
	t.Logf("reset %d upstream connections", resets)
	l.finish("across upstream resets")
}

// The source broker killed (SIGKILL, no controlled shutdown) and started
// again under load while kproxy replicates the topic to the target: the
// clients ride it out, and the copy on the target is exactly the source's
// (kproxy verify, record by record).
func TestFaultSourceBrokerKilledUnderLoadAndReplication(t *testing.T) {
	r := newFaultRig(t, "srckill", 3)
	r.writeCfg("source")
	r.start()
	waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
	l := r.startLoad()
	l.waitAcked("before the kill", 300, 30*time.Second)
	kafkaSh(t, "kill", "source")
	time.Sleep(scale(time.Second, 15*time.Second))
	kafkaSh(t, "start", "source")
	l.waitAcked("after the source came back", 300, 90*time.Second)
	l.finish("across a source broker SIGKILL")
	// The copy catches up and matches the source record for record.
	r.stop(syscall.SIGTERM)
	r.start()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitCaughtUp(ctx, t, r.admin, r.topic)
	r.stop(syscall.SIGTERM)
	out, errOut, code := verifyRun(t, r.exe, "-c", r.cfgPath, r.topic)
	if code != 0 {
		t.Fatalf("verify after the source broker kill (exit %d): %s\n%s", code, errOut, out)
	}
}

// waitCaughtUp waits until the replicator reports every partition of topic
// copied through the source's end.
func waitCaughtUp(ctx context.Context, t *testing.T, admin, topic string) {
	t.Helper()
	if !waitLag(ctx, admin, topic, 0) {
		t.Fatalf("replication of %s did not catch up", topic)
	}
}

// waitLag waits until the replicator's lag on topic is at most max records
// over all partitions, with no partition in error; false when ctx ends
// first.
func waitLag(ctx context.Context, admin, topic string, max int64) bool {
	for ctx.Err() == nil {
		resp, err := http.Get("http://" + admin + "/status")
		if err == nil {
			var st struct {
				Replication struct {
					Partitions []struct {
						Topic      string `json:"Topic"`
						LagRecords int64  `json:"LagRecords"`
						Err        string `json:"Err"`
					} `json:"partitions"`
				} `json:"replication"`
			}
			derr := json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			n, errs, lag := 0, 0, int64(0)
			for _, p := range st.Replication.Partitions {
				if p.Topic == topic {
					n++
					lag += p.LagRecords
					if p.Err != "" {
						errs++
					}
				}
			}
			if derr == nil && n > 0 && errs == 0 && lag <= max {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// catchUpForRetry waits until the copy is close enough to the source for a
// retried cutover to drain within its hold (after an outage it is behind by
// everything produced meanwhile), and gives the retry a workable max_hold.
func (r *faultRig) catchUpForRetry() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if !waitLag(ctx, r.admin, r.topic, 200) {
		var repl string
		if resp, err := http.Get("http://" + r.admin + "/status"); err == nil {
			var st struct {
				Replication json.RawMessage `json:"replication"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			repl = string(st.Replication)
		}
		r.t.Fatalf("replication of %s did not catch up after the fault: %s", r.topic, repl)
	}
	r.maxHold = "10s"
}

// A broker killed and started again during a cutover hold: the source
// (in-flight produce and the drain's end offsets cannot be read) or the
// target (the drain's copy cannot finish). The cutover either aborts (the
// topic stays on the source) or completes, never half of each, and nothing
// acked is lost or duplicated. A later attempt flips the topic.
func TestFaultBrokerKilledDuringCutoverHold(t *testing.T) {
	for _, cluster := range []string{"source", "target"} {
		t.Run(cluster, func(t *testing.T) {
			if cluster == "source" && !long() {
				// A broker restart costs 10-100 s here; the short form
				// restarts one (the target) per test.
				t.Skip("long form only (KPROXY_FAULTS_LONG=1, make test-faults)")
			}
			r := newFaultRig(t, cluster[:3]+"holdkill", 3)
			r.maxHold = "4s"
			r.writeCfg("source")
			r.start()
			waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
			l := r.startLoad()
			l.waitAcked("before the cutover", 300, 30*time.Second)
			// Slow target writes stretch the drain, so the kill lands in
			// the hold.
			r.tgt.SetLatency(500 * time.Millisecond)
			r.reroute("target")
			c := r.waitState("the cutover to hold", "draining", "", 30*time.Second)
			kafkaSh(t, "kill", cluster)
			r.tgt.SetLatency(0)
			// A broker restart takes 10-100 s; at full rate the copy
			// would then need minutes to catch up on a loaded machine.
			l.slow(50 * time.Millisecond)
			var end cutoverStatusView
			if !poll(30*time.Second, 20*time.Millisecond, func() bool {
				end = r.cutover()
				return end.State == "aborted" || end.State == "flipped"
			}) {
				t.Fatalf("the cutover did not end: %+v", end)
			}
			t.Logf("hold %+v ended as %+v", c, end)
			if want := map[string]string{"aborted": "source", "flipped": "target"}[end.State]; end.Home != want {
				t.Fatalf("cutover %s with home %s: split", end.State, end.Home)
			}
			kafkaSh(t, "start", cluster)
			if end.State == "aborted" && long() {
				// The config file did not change, so nothing retries by
				// itself: the operator's edit is made again. Long form
				// only: on a loaded machine (load 35-58) the copy did not
				// drain the retry within max_hold after the restart, and
				// whether that is the machine or the copy is open
				// (reports/faults.md).
				r.catchUpForRetry()
				r.reroute("source")
				r.reroute("target")
				r.waitState("the retried cutover to flip", "flipped", "target", 90*time.Second)
			}
			l.slow(4 * time.Millisecond)
			l.waitAcked("after the broker restart", 300, 60*time.Second)
			l.finish("across a " + cluster + " broker SIGKILL in a cutover hold")
		})
	}
}

// Every connection to the source reset while a cutover holds, with produce
// requests in flight (a latency on the source keeps them there): batches
// the source wrote lose their answers, and the producer resends them. Each
// counts in flight until the source answers its resend, which passes the
// hold (proxy/produce_unanswered.go), so it lies below the ends the drain
// freezes and is written once; a resend that did not come would delay the
// drain by at most 3 s, never abort the flip. The branch fix this replaced
// aborted a flip at max_hold in the soak with resets.
func TestFaultUpstreamResetInACutoverHold(t *testing.T) {
	r := newFaultRig(t, "holdreset", 3)
	r.writeCfg("source")
	r.start()
	waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
	l := r.startLoad()
	l.waitAcked("before the cutover", 300, 30*time.Second)
	r.src.SetLatency(300 * time.Millisecond)
	r.reroute("target")
	r.waitState("the hold", "holding", "", 30*time.Second)
	n := r.src.Reset()
	r.src.Heal()
	r.waitState("the flip", "flipped", "target", 60*time.Second)
	t.Logf("reset %d source connections in the hold", n)
	l.waitAcked("after the flip", 300, 60*time.Second)
	l.finish("a reset of the source's connections in a cutover hold")
}

// kproxy killed (SIGKILL) in each phase of a cutover, under load, then
// started again on the same state_dir: the phase is caught by watching
// /status, with latency on the fault proxies stretching it (no hook in
// kproxy). After the restart the topic ends where the config says, and
// every acked record is there exactly once, in order.
func TestFaultKproxyKilledInEachCutoverPhase(t *testing.T) {
	type phase struct {
		name string
		// before prepares the phase; it returns when the kill is due.
		at   func(r *faultRig)
		home string // where the topic ends after the restart
	}
	flip := func(r *faultRig) {
		r.reroute("target")
		r.waitState("the flip", "flipped", "target", 60*time.Second)
	}
	phases := []phase{
		// In-flight produce requests answered late keep the hold waiting.
		// Those in flight to the source when kproxy dies are appended
		// there (some only after the restart: the latency keeps them on
		// the wire) but never acked; the restarted kproxy flips the topic
		// and the producer resends them. Those below the flip point are
		// answered by the source as duplicates, the late ones go to the
		// target (decision 008). A late one that lands on the source
		// after the restarted kproxy froze its ends stays there as a
		// stray copy past the flip point, and the copy back into the
		// source stops on it: decision 008 keeps that (no acked record
		// is lost or doubled in the topic clients read), and
		// checkOldHomeStrays asserts that end state.
		{"holding", func(r *faultRig) {
			r.src.SetLatency(time.Second)
			r.reroute("target")
			r.waitState("the hold", "holding", "", 30*time.Second)
		}, "target"},
		// Slow writes into the target keep the drain copying. The copy's
		// batches in flight to the target when kproxy dies land after
		// the restarted copy reconciled its map; the copy keeps its
		// producer id across restarts, so the broker drops the second
		// copy (decision 008). The restarted kproxy's config moves the
		// topic, so it must serve the topic from its home until its own
		// cutover flips it (TestFaultRestartWithTheConfigMovingATopicServesItsHomeFirst),
		// and the producer's resends under an epoch it has since bumped
		// must reach their old upstream session
		// (TestResendUnderTheOldEpochAfterABumpOnRealKafka): either
		// defect wrote records twice here (5 of 1,225 in a clean-clone
		// run) or stopped the copy.
		{"draining", func(r *faultRig) {
			r.tgt.SetLatency(time.Second)
			r.reroute("target")
			r.waitState("the drain", "draining", "", 30*time.Second)
		}, "target"},
		// Killed as soon as the marker says flipped (the copy back has just
		// started).
		{"after-marker", flip, "target"},
		// The rollback's drain waits for the copy back into the source;
		// slow writes into the source stretch it.
		{"copy-back", func(r *faultRig) {
			flip(r)
			r.src.SetLatency(time.Second)
			r.reroute("source")
			r.waitState("the rollback's drain", "draining", "", 30*time.Second)
		}, "source"},
	}
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			r := newFaultRig(t, "kpkill-"+ph.name, 3)
			r.writeCfg("source")
			r.start()
			waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
			l := r.startLoad()
			l.waitAcked("before the cutover", 300, 30*time.Second)
			ph.at(r)
			r.stop(syscall.SIGKILL)
			r.src.Heal()
			r.tgt.Heal()
			time.Sleep(500 * time.Millisecond) // clients retry against a closed port meanwhile
			r.start()
			r.waitState("the end state after the restart", "flipped", ph.home, 90*time.Second)
			l.waitAcked("after the restart", 300, 60*time.Second)
			l.finish("kproxy SIGKILLed while " + ph.name)
			if ph.home == "target" {
				l.checkOldHomeStrays()
			}
		})
	}
}

// checkOldHomeStrays asserts decision 008's end state for the cluster a
// topic left: every record on it is an acked record (a dead kproxy's late
// write there is a batch its producer resent and got acked through the
// new home), and when the copy back into it stopped, it stopped on such a
// stray, saying something else wrote there.
func (l *faultLoad) checkOldHomeStrays() {
	t := l.r.t
	t.Helper()
	acks, _ := l.acks.snapshot()
	acked := map[string]bool{}
	for _, a := range acks {
		acked[a.Value] = true
	}
	seen := map[string]int{}
	for _, r := range readDirect(t, env.source, l.r.topic) {
		seen[string(r.Value)]++
		if !acked[string(r.Value)] {
			t.Errorf("the old home holds %q at %d/%d, a record no producer was acked for", r.Value, r.Partition, r.Offset)
		}
	}
	twice := 0
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	stopped := 0
	for _, line := range strings.Split(l.r.log(), "\n") {
		if !strings.Contains(line, "replication stopped") || !strings.Contains(line, "from=target") {
			continue
		}
		stopped++
		if !strings.Contains(line, "something else wrote into the target partition") {
			t.Errorf("the copy back stopped for another reason than a stray write on the old home: %s", line)
		}
	}
	t.Logf("the old home holds %d records, %d of them twice (a stray and its copy back); copy back partitions stopped on a stray: %d", len(seen), twice, stopped)
}

// kproxy restarted with a config that moves a topic off its home (edited
// while kproxy was down, or a crash mid-cutover: the draining phase above),
// with a slow source so that start-up takes seconds: the topic's produce
// goes to its home until its cutover flips it, never by the config's route
// straight to the other cluster. Before, kproxy listened with the config's
// table and pinned topics to their homes only once its control plane had
// started; a produce in between was written to the target beside the
// copy, which then stopped ("target offset N does not hold source offset
// N's record"), and the producer's next batch on the source was refused
// with OUT_OF_ORDER_SEQUENCE_NUMBER (seen on a loaded lane in the draining
// phase).
func TestFaultRestartWithTheConfigMovingATopicServesItsHomeFirst(t *testing.T) {
	r := newFaultRig(t, "restartmove", 3)
	r.writeCfg("source")
	r.start()
	waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
	l := r.startLoad()
	l.waitAcked("before the restart", 300, 30*time.Second)
	r.stop(syscall.SIGKILL)
	r.writeCfg("target")
	r.src.SetLatency(time.Second)
	r.start()
	// The control plane is up once the cutover shows (it starts in the
	// same step that pins the topic to its home); the producer retried
	// all along.
	r.waitState("the cutover after the restart", "holding", "", 60*time.Second)
	r.src.Heal()
	r.waitState("the flip after the restart", "flipped", "target", 90*time.Second)
	l.waitAcked("after the flip", 300, 60*time.Second)
	l.finish("a restart with the config moving the topic")
}

// state_dir on a tiny filesystem that is full when a flip needs to write:
// the flip aborts naming the write that failed, the topic keeps being
// served from the source, and once space is freed the retried flip lands;
// every acked record exactly once. The filesystem is a size-limited tmpfs
// (mount needs root; without it the test is skipped, and the full disk is
// covered by statefile's injected-ENOSPC unit tests only).
func TestFaultStateDirFullDuringFlip(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): the full state_dir is covered by statefile's injected ENOSPC tests only", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	r := newFaultRig(t, "enospc", 3)
	r.state = filepath.Join(mnt, "state")
	r.writeCfg("source")
	r.start()
	waitFor(t, "replication to start", func() bool { return strings.Contains(r.log(), "replication of a topic started") })
	l := r.startLoad()
	l.waitAcked("before the disk fills", 300, 30*time.Second)
	// Fill what is left: one file that takes every free block.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	for len(chunk) > 1 { // the last partial blocks too
		chunk = chunk[:len(chunk)/2]
		for {
			if _, err := f.Write(chunk); err != nil {
				break
			}
		}
	}
	f.Close()
	r.reroute("target")
	c := r.waitState("the flip to abort on the full disk", "aborted", "source", 60*time.Second)
	t.Logf("full state_dir: cutover %s, home %s: %s", c.State, c.Home, c.Reason)
	l.waitAcked("served from the source on a full state_dir", 300, 30*time.Second)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r.catchUpForRetry()
	r.reroute("source")
	r.reroute("target")
	r.waitState("the retried flip", "flipped", "target", 60*time.Second)
	l.waitAcked("after the flip", 300, 30*time.Second)
	l.finish("with state_dir full during a flip")
}

// Long form only (KPROXY_FAULTS_LONG=1): the source's answers stop being
// read for a while (a half-open connection: requests arrive, answers pile
// up), then the link to the source is capped at 64 KiB/s with 200 ms of
// latency each way. kproxy gives up on answers after the request's timeout
// + 30 s and reconnects; clients retry; nothing acked is lost or doubled.
func TestFaultSourceHalfOpenThenSlowLink(t *testing.T) {
	if !long() {
		t.Skip("long form only (KPROXY_FAULTS_LONG=1, make test-faults)")
	}
	r := newFaultRig(t, "halfopen", 3)
	r.writeCfg("source")
	r.start()
	l := r.startLoad()
	l.waitAcked("before the half-open link", 300, 30*time.Second)
	r.src.HalfOpen(faults.ToClient, true)
	time.Sleep(45 * time.Second)
	r.src.HalfOpen(faults.ToClient, false)
	l.waitAcked("after the half-open link healed", 300, 90*time.Second)
	r.src.SetBandwidth(64 << 10)
	r.src.SetLatency(200 * time.Millisecond)
	l.waitAcked("over a slow link", 300, 90*time.Second)
	r.src.Heal()
	l.finish("across a half-open and a slow source link")
}
