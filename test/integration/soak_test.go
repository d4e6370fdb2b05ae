package integration

// The soak: the cutover scenario for a long time, at 50 records/s per
// producer (a steady load, not a throughput test). Five clients (franz-go,
// librdkafka and Java producers, idempotent and transactional; franz-go,
// librdkafka, Java, Sarama and kafkajs consumer groups; kafka-go cannot
// hide aborted transactions, see runCutoverScenario) go through
// a flip of the topic every 20 s, alternately to the target and back, and a
// move of the groups' home every sixth flip. Every 5 s the test reads
// kproxy's goroutines, open files, heap and resident memory from /metrics.
// At the end: the checker's verdict for every consumer, and goroutines and
// open files flat after warm-up (a leak grows with every flip; the bound is
// loose because clients reconnect and long polls come and go).
//
// KPROXY_SOAK sets the duration (default 3m, what `make test` runs; `make
// soak` runs 30m). KPROXY_SOAK_OUT, when set, receives soak.csv (the
// samples) and flips.csv, which bench/soak/plot.py draws.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
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
	d := 3 * time.Minute
	if v := os.Getenv("KPROXY_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < time.Minute {
			t.Fatalf("KPROXY_SOAK=%q: want a duration of at least 1m", v)
		}
	}
	var steps []cutoverStep
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
			writeSoakCSV(t, out, samples, steps)
			mu.Unlock()
		}
	}
	defer stopSampling()
	runCutoverScenario(t, "soak", d, steps, scenarioOptions{transactional: true, moreClients: true, onKproxy: onKproxy, onLoad: onLoad, rate: 50, txnSize: 50, maxHold: 25 * time.Second,
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

func writeSoakCSV(t *testing.T, dir string, samples []soakSample, steps []cutoverStep) {
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
	b.WriteString("seconds,home,groups_moved\n")
	for _, s := range steps {
		fmt.Fprintf(&b, "%.0f,%s,%v\n", s.at.Seconds(), s.home, s.groups != "")
	}
	if err := os.WriteFile(filepath.Join(dir, "flips.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
