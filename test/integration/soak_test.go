package integration

// The soak: the cutover scenario for a long time, at 50 records/s per
// producer (a steady load, not a throughput test). Two replicated topics.
// The first has five producers (franz-go, librdkafka and Java idempotent;
// franz-go and librdkafka transactional) and five read_committed consumer
// groups (franz-go, librdkafka, Java, Sarama, kafkajs); it flips every 20 s,
// alternately to the target and back, and the groups' home moves every
// sixth flip. The second has a franz-go idempotent producer, read by the
// franz-go group too and by a kafka-go group, the sixth client, whose
// verdict is reported but not asserted (runCutoverScenario says why); it
// has no transactions, because kafka-go drops a fetch's
// aborted-transactions list and would return aborted records. It flips
// every 40 s, 10 s after the first topic's flips. kproxy reaches both
// clusters through fault proxies, and faults land on a schedule
// (soakFaults): blackholes toward the target between group moves. Every 5 s the test reads kproxy's goroutines, open files, heap
// and resident memory from /metrics. At the end: the checker's verdict for
// every consumer (0 lost, 0 duplicated, order per partition), and
// goroutines and open files flat after warm-up (a leak grows with every
// flip; the bound is loose because clients reconnect and long polls come
// and go).
//
// KPROXY_SOAK sets the duration (default 3m, what `make test` runs; `make
// soak` runs 30m). KPROXY_SOAK_OUT, when set, receives soak.csv (the
// samples), flips.csv and faults.csv, which bench/soak/plot.py draws.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// soakSample is one reading of kproxy's resources.
type soakSample struct {
	at                               time.Duration
	goroutines, openFDs, heap, rssMB float64
}

func TestSoak(t *testing.T) {
	d := 150 * time.Second
	if v := os.Getenv("KPROXY_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < time.Minute {
			t.Fatalf("KPROXY_SOAK=%q: want a duration of at least 1m", v)
		}
	}
	// Every form, `make test`'s 2.5 minutes included (3 until session 16,
	// trimmed for CI's 30 minutes; it keeps one group move, at 120 s, and
	// both blackholes), has the second topic's
	// flips and the fault schedule (blackholes toward the target between
	// group moves). The short form kept one topic and no faults while the
	// long form's re-reads after group moves were open; they were a kproxy
	// defect, fixed (a changed groups.default served each group from its
	// new home while the groups were listed, before its offsets were
	// copied: TestGroupMoveKeepsTheOldHomeWhileTheDefaultResolves,
	// bench/RESULTS.md, the soak), and a 12-minute and a 30-minute run were
	// clean after the fix.
	var steps []cutoverStep
	// The second topic flips every 40 s, 10 s after the first topic's
	// flips, both ways.
	for i, at := 0, 30*time.Second; at <= d-20*time.Second; i, at = i+1, at+40*time.Second {
		home := "target"
		if i%2 == 1 {
			home = "source"
		}
		steps = append(steps, cutoverStep{at: at, produce: home, fetch: home, home: home, second: true})
	}
	toTarget := true
	groupsHome := "source"
	for i, at := 1, 20*time.Second; at <= d-20*time.Second; i, at = i+1, at+20*time.Second {
		s := cutoverStep{at: at, produce: "source", fetch: "source", home: "source"}
		if toTarget {
			s = cutoverStep{at: at, produce: "target", fetch: "target", home: "target"}
		}
		if i%6 == 0 {
			// The groups move to the other cluster than the one they are
			// homed on (a move to where they are is no move).
			if groupsHome == "source" {
				groupsHome = "target"
			} else {
				groupsHome = "source"
			}
			s.groups = groupsHome
		}
		steps = append(steps, s)
		toTarget = !toTarget
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].at < steps[j].at })
	fs := soakFaults(d)

	var fmu sync.Mutex
	var faultsDone []soakFaultDone

	var mu sync.Mutex
	var samples []soakSample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	sample := func(admin string) {
		m, err := scrapeMetrics(admin)
		if err != nil {
			m = nil
		}
		mu.Lock()
		defer mu.Unlock()
		if m == nil {
			return
		}
		samples = append(samples, soakSample{
			at:         time.Since(start),
			goroutines: m["go_goroutines"],
			openFDs:    m["process_open_fds"],
			heap:       m["go_memstats_heap_inuse_bytes"] / (1 << 20),
			rssMB:      m["process_resident_memory_bytes"] / (1 << 20),
		})
	}
	onKproxy := func(admin string, _ int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(5 * time.Second)
			defer tick.Stop()
			for {
				sample(admin)
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	// Sample times count from the producers' start, as the steps do (the
	// samples before it are negative: start-up and consumers joining).
	onLoad := func() { mu.Lock(); start = time.Now(); mu.Unlock() }
	// The samples are written however the run ends (a failed scenario
	// ends the test through t.FailNow, which runs deferred calls).
	stopped := false
	stopSampling := func() {
		if stopped {
			return
		}
		stopped = true
		close(stop)
		wg.Wait()
		if out := os.Getenv("KPROXY_SOAK_OUT"); out != "" {
			mu.Lock()
			fmu.Lock()
			writeSoakCSV(t, out, samples, steps, faultsDone)
			fmu.Unlock()
			mu.Unlock()
		}
	}
	defer stopSampling()
	onFault := func(f scenarioFault, detail string) {
		fmu.Lock()
		faultsDone = append(faultsDone, soakFaultDone{f, detail})
		fmu.Unlock()
	}
	runCutoverScenario(t, "soak", d, steps, scenarioOptions{transactional: true, moreClients: true, secondTopic: true, faults: fs, onFault: onFault,
		onKproxy: onKproxy, onLoad: onLoad, rate: 50, txnSize: 50, maxHold: 25 * time.Second,
		lateness: min(time.Duration(len(steps))*5*time.Second, 4*time.Minute)})
	stopSampling()

	mu.Lock()
	defer mu.Unlock()
	if len(samples) < 8 {
		t.Fatalf("only %d resource samples", len(samples))
	}
	// Warm-up is the first fifth; compare the last third with the window
	// right after warm-up.
	warm := samples[len(samples)/5 : len(samples)/5+max(2, len(samples)/5)]
	last := samples[len(samples)*2/3:]
	peak := func(ss []soakSample, f func(soakSample) float64) float64 {
		m := 0.0
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	for _, q := range []struct {
		name  string
		f     func(soakSample) float64
		slack float64
	}{
		{"goroutines", func(s soakSample) float64 { return s.goroutines }, 100},
		{"open files", func(s soakSample) float64 { return s.openFDs }, 40},
	} {
		w, l := peak(warm, q.f), peak(last, q.f)
		t.Logf("%s: peak %.0f after warm-up, %.0f in the last third", q.name, w, l)
		if l > w*1.5+q.slack {
			t.Errorf("%s grew from a peak of %.0f after warm-up to %.0f in the last third of the soak", q.name, w, l)
		}
	}
	fmu.Lock()
	t.Logf("%d faults injected", len(faultsDone))
	for _, f := range faultsDone {
		t.Logf("  %5.0fs: %s", f.f.at.Seconds(), f.detail)
	}
	fmu.Unlock()
	t.Logf("heap in use: %.1f MiB after warm-up, %.1f MiB at the end; RSS %.1f -> %.1f MiB",
		warm[0].heap, samples[len(samples)-1].heap, warm[0].rssMB, samples[len(samples)-1].rssMB)
}

// scrapeMetrics reads the unlabelled gauges of kproxy's /metrics.
func scrapeMetrics(admin string) (map[string]float64, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// soakFaultDone is a fault of the schedule that was injected.
type soakFaultDone struct {
	f      scenarioFault
	detail string
}

// soakFaults is the soak's fault schedule (issue 10 item 8's fault proxy
// between kproxy and each cluster): 4-second blackholes toward the target,
// twice in the short (2.5-minute) form and every 2 minutes in longer runs, halfway
// between the groups' moves (every 2 minutes, at 120 s, 240 s, ...). Each
// topic is on the target half of the time, so a blackhole meets producers,
// consumers, the copy and the copy back. Not yet in the default schedule:
//   - blackholes toward the source: the drivers' groups pinned there
//     (Sarama, kafkajs, kafka-go) answered coordinator errors by rejoining
//     and read again what they had not committed (3 and ~300 records in the
//     first runs), which the checker counts as duplicates; whether kproxy
//     answers a 4 s stall with an error it should not is not yet known;
//   - a blackhole right before a group move: the librdkafka group read
//     about 50 records a second time.
//
// KPROXY_SOAK_RESETS=1 adds bursts of connection resets (every connection
// to the target reset, 3 times a second apart) 5 s before a flip of the
// first topic back to the source. Its first run found a duplicate (96
// records): an idempotent batch whose produce answer a reset lost was
// retried by the client after the topic flipped, and the new home wrote it
// a second time (the copy had brought the first write there). Such a batch
// is now settled on its own cluster before the drain freezes the ends
// (proxy/produce_unanswered.go, decision 008); the resets stay opt-in
// until a soak run with them is clean.
// KPROXY_SOAK_KILL=1 replaces one blackhole halfway through a long run
// with a SIGKILL and restart of the source broker; off by default: every
// transactional and group coordinator of the source is on that one broker.
func soakFaults(d time.Duration) []scenarioFault {
	var out []scenarioFault
	kill := os.Getenv("KPROXY_SOAK_KILL") != ""
	for at := 65 * time.Second; at < d-40*time.Second; at += 120 * time.Second {
		f := scenarioFault{at: at, kind: "blackhole", cluster: "target", dur: 4 * time.Second}
		if kill && at >= d/2 && at < d/2+120*time.Second {
			f = scenarioFault{at: at, kind: "kill", cluster: "source", dur: 5 * time.Second}
		}
		out = append(out, f)
	}
	if d < 10*time.Minute {
		// The short form: a second blackhole, toward the target.
		out = append(out, scenarioFault{at: 105 * time.Second, kind: "blackhole", cluster: "target", dur: 4 * time.Second})
	}
	if os.Getenv("KPROXY_SOAK_RESETS") != "" {
		// The first topic is on the target from 20 s + 40k s and flips
		// back 20 s later.
		for at := 35 * time.Second; at < d-40*time.Second; at += 80 * time.Second {
			out = append(out, scenarioFault{at: at, kind: "resets", cluster: "target"})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

func writeSoakCSV(t *testing.T, dir string, samples []soakSample, steps []cutoverStep, done []soakFaultDone) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("seconds,goroutines,open_fds,heap_inuse_mib,rss_mib\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.1f,%.0f,%.0f,%.1f,%.1f\n", s.at.Seconds(), s.goroutines, s.openFDs, s.heap, s.rssMB)
	}
	if err := os.WriteFile(filepath.Join(dir, "soak.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.WriteString("seconds,home,groups_moved,topic\n")
	for _, s := range steps {
		topic := "a"
		if s.second {
			topic = "b"
		}
		fmt.Fprintf(&b, "%.0f,%s,%v,%s\n", s.at.Seconds(), s.home, s.groups != "", topic)
	}
	if err := os.WriteFile(filepath.Join(dir, "flips.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.WriteString("seconds,kind,cluster,seconds_long,detail\n")
	for _, f := range done {
		fmt.Fprintf(&b, "%.0f,%s,%s,%.0f,%q\n", f.f.at.Seconds(), f.f.kind, f.f.cluster, f.f.dur.Seconds(), f.detail)
	}
	if err := os.WriteFile(filepath.Join(dir, "faults.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
