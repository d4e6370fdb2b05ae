// Command cutover measures produce latency while kproxy flips topics from
// the source to the target cluster at steady load (issue 5 item 10).
//
// It creates N topics on the source, starts the kproxy binary with a config
// that replicates them, waits until replication has caught up, then runs one
// idempotent acks=all producer through kproxy at a fixed rate spread over the
// topics. After -steady of steady state it adds one `TOPIC: target` route
// every -interval (each addition is one cutover), runs -after more, and
// collects hold_ms per topic from kproxy's /status.
//
// Outputs (in -out): latency-<rate>.csv (t_seconds, latency_ms; t is the
// record's scheduled send time relative to the start of the load),
// flips-<rate>.csv (topic, flip time, hold_ms, state) and summary-<rate>.json.
//
// Latency is measured from the record's scheduled send time (start +
// i/rate), not from when Produce returned, so a stalled producer buffer shows
// up as latency instead of as fewer records (no coordinated omission).
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type opts struct {
	kproxy, source, target, listen, admin, out, prefix, work string
	rate, topics, flips, partitions, size                    int
	steady, interval, after, maxHold, linger                 time.Duration
}

func main() {
	var o opts
	flag.StringVar(&o.kproxy, "kproxy", "/tmp/kpc", "kproxy binary")
	flag.StringVar(&o.source, "source", "127.0.0.1:19092", "source bootstrap")
	flag.StringVar(&o.target, "target", "127.0.0.1:29092", "target bootstrap")
	flag.StringVar(&o.listen, "listen", "127.0.0.1:19292", "kproxy listen address")
	flag.StringVar(&o.admin, "admin", "127.0.0.1:19694", "kproxy admin address")
	flag.StringVar(&o.out, "out", "bench/cutover", "output directory")
	flag.StringVar(&o.prefix, "prefix", fmt.Sprintf("bench-flip-%d", time.Now().Unix()), "topic prefix (topics are PREFIX-NN)")
	flag.StringVar(&o.work, "work", "", "work directory (config, state, kproxy log); default a temp dir")
	flag.IntVar(&o.rate, "rate", 5000, "records per second")
	flag.IntVar(&o.topics, "topics", 20, "topics")
	flag.IntVar(&o.flips, "flips", 20, "flips (<= topics)")
	flag.IntVar(&o.partitions, "partitions", 3, "partitions per topic")
	flag.IntVar(&o.size, "size", 1024, "value bytes")
	flag.DurationVar(&o.steady, "steady", 5*time.Second, "steady state before the first flip")
	flag.DurationVar(&o.interval, "interval", 1500*time.Millisecond, "time between flips")
	flag.DurationVar(&o.after, "after", 5*time.Second, "run time after the last flip")
	flag.DurationVar(&o.maxHold, "max-hold", 5*time.Second, "cutover.max_hold")
	flag.DurationVar(&o.linger, "linger", 5*time.Millisecond, "producer linger")
	flag.Parse()
	if o.flips > o.topics {
		o.flips = o.topics
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "cutover:", err)
		os.Exit(1)
	}
}

func say(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "[cutover %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(f, a...))
}

func topicName(prefix string, i int) string { return fmt.Sprintf("%s-%02d", prefix, i) }

// writeConfig writes the kproxy config with the first nFlipped topics routed
// to the target, atomically (tmp + rename: kproxy watches the file).
func writeConfig(o opts, path, state string, nFlipped int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin: %s\nstate_dir: %s\n", o.listen, o.admin, state)
	fmt.Fprintf(&b, "clusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\n", o.source, o.target)
	b.WriteString("routes:\n  default: source\n")
	if nFlipped == 0 {
		b.WriteString("  topics: {}\n")
	} else {
		b.WriteString("  topics:\n")
		for i := 0; i < nFlipped; i++ {
			fmt.Fprintf(&b, "    %s: target\n", topicName(o.prefix, i))
		}
	}
	fmt.Fprintf(&b, "replicate: [\"%s-*\"]\ncutover: { max_hold: %s }\nlog: { level: info }\n", o.prefix, o.maxHold)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// status is the part of kproxy's /status this benchmark reads.
type status struct {
	Ready       bool   `json:"ready"`
	Generation  int64  `json:"config_generation"`
	LastErr     string `json:"last_reload_error"`
	Replication struct {
		Error      string `json:"error"`
		Partitions []struct {
			Topic      string
			Partition  int32
			SourceHWM  int64
			LagRecords int64
			Err        string
			Fatal      bool
		} `json:"partitions"`
	} `json:"replication"`
	Cutovers []struct {
		Topic     string    `json:"topic"`
		State     string    `json:"state"`
		Reason    string    `json:"reason"`
		StartedAt time.Time `json:"started_at"`
		FlippedAt time.Time `json:"flipped_at"`
		HoldMs    int64     `json:"hold_ms"`
		Held      int       `json:"held_requests"`
	} `json:"cutovers"`
}

var httpc = &http.Client{Timeout: 3 * time.Second}

func getStatus(admin string) (*status, error) {
	resp, err := httpc.Get("http://" + admin + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var s status
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("decoding /status: %w", err)
	}
	return &s, nil
}

func adminClient(brokers string) (*kadm.Client, *kgo.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl, nil
}

func deleteTopics(brokers, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm, cl, err := adminClient(brokers)
	if err != nil {
		return
	}
	defer cl.Close()
	td, err := adm.ListTopics(ctx)
	if err != nil {
		say("warning: listing topics on %s: %v", brokers, err)
		return
	}
	var del []string
	for _, t := range td.Names() {
		if strings.HasPrefix(t, prefix+"-") {
			del = append(del, t)
		}
	}
	if len(del) > 0 {
		if _, err := adm.DeleteTopics(ctx, del...); err != nil {
			say("warning: deleting topics on %s: %v", brokers, err)
		}
	}
}

type flipRec struct {
	Topic    string  `json:"topic"`
	RequestS float64 `json:"flip_requested_s"` // when the config naming it was renamed into place
	StartS   float64 `json:"hold_started_s"`   // kproxy's started_at
	FlippedS float64 `json:"flipped_s"`        // kproxy's flipped_at (0 if none)
	HoldMs   int64   `json:"hold_ms"`
	State    string  `json:"state"`
	Reason   string  `json:"reason,omitempty"`
	HeldReqs int     `json:"held_requests"`
}

type window struct {
	From, To float64 // seconds, [From, To)
	N        int
	P50, P99 float64
	Max      float64
}

type summary struct {
	Rate           int               `json:"rate"`
	AchievedRate   float64           `json:"achieved_rate"`
	Records        int               `json:"records"`
	Acked          int64             `json:"acked"`
	Errors         int64             `json:"produce_errors"`
	FirstError     string            `json:"first_error,omitempty"`
	Unacked        int64             `json:"unacked"`
	Flips          int               `json:"flips"`
	Flipped        int               `json:"flipped"`
	Aborts         int               `json:"aborts"`
	Other          int               `json:"other_states"`
	HoldP50        float64           `json:"hold_p50_ms"`
	HoldP99        float64           `json:"hold_p99_ms"`
	HoldMax        float64           `json:"hold_max_ms"`
	HoldMean       float64           `json:"hold_mean_ms"`
	Windows        map[string]window `json:"windows"`
	FlipRecs       []flipRec         `json:"flips_detail"`
	Prefix         string            `json:"prefix"`
	Partitions     int               `json:"partitions"`
	Topics         int               `json:"topics"`
	Size           int               `json:"size"`
	LoadSeconds    float64           `json:"load_seconds"`
	KproxyCPUSecs  float64           `json:"kproxy_cpu_s"`
	AbortAttempts  int               `json:"abort_attempts_in_log"`
	AttemptHoldsMs []float64         `json:"attempt_holds_ms_in_log"`
}

// pct is the nearest-rank percentile of sorted xs.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	k := int(math.Ceil(p/100*float64(len(xs)))) - 1
	if k < 0 {
		k = 0
	}
	if k >= len(xs) {
		k = len(xs) - 1
	}
	return xs[k]
}

func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	var ut, st float64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100 // USER_HZ
}

func run(o opts) (err error) {
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "kproxy-cutover."); err != nil {
			return err
		}
	}
	cfgPath := filepath.Join(o.work, "kproxy.yaml")
	state := filepath.Join(o.work, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}

	// 1. Topics on the source, before kproxy starts.
	ctx := context.Background()
	adm, acl, err := adminClient(o.source)
	if err != nil {
		return err
	}
	var names []string
	for i := 0; i < o.topics; i++ {
		names = append(names, topicName(o.prefix, i))
	}
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	cr, err := adm.CreateTopics(cctx, int32(o.partitions), 1, nil, names...)
	ccancel()
	acl.Close()
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for _, r := range cr.Sorted() {
		if r.Err != nil {
			return fmt.Errorf("creating %s: %w", r.Topic, r.Err)
		}
	}
	defer func() {
		say("deleting topics %s-* on source and target", o.prefix)
		deleteTopics(o.source, o.prefix)
		deleteTopics(o.target, o.prefix)
	}()
	say("created %d topics %s-00..%02d (%d partitions) on %s", o.topics, o.prefix, o.topics-1, o.partitions, o.source)

	// 2. kproxy.
	if err := writeConfig(o, cfgPath, state, 0); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(o.work, "kproxy.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(o.kproxy, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	say("kproxy pid %d, log %s", cmd.Process.Pid, logf.Name())

	// 3. Replication of every partition caught up.
	want := o.topics * o.partitions
	deadline := time.Now().Add(240 * time.Second)
	for {
		select {
		case e := <-exited:
			return fmt.Errorf("kproxy exited: %v (log %s)", e, logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("replication did not catch up in 240 s")
		}
		s, err := getStatus(o.admin)
		if err == nil && s.Ready {
			ok := 0
			for _, p := range s.Replication.Partitions {
				if strings.HasPrefix(p.Topic, o.prefix+"-") && p.Partition >= 0 && p.LagRecords == 0 && p.Err == "" {
					ok++
				}
			}
			if ok >= want {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	say("replication caught up on %d partitions", want)

	// 4. Producer through kproxy.
	total := o.steady + time.Duration(o.flips-1)*o.interval + o.after
	if o.flips == 0 {
		total = o.steady + o.after
	}
	n := int(float64(o.rate) * total.Seconds())
	sched := make([]int64, n) // scheduled send, ns since start
	lat := make([]int64, n)   // ack latency ns; -1 = error; 0 = not acked
	value := make([]byte, o.size)
	_, _ = rand.Read(value)

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.listen),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(o.linger),
		kgo.MaxBufferedRecords(n+1),
		kgo.RecordDeliveryTimeout(60*time.Second),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	// Warm the client (metadata, producer id) so the first records do not
	// carry connection setup.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	for i := 0; i < o.topics; i++ {
		if err := cl.ProduceSync(wctx, &kgo.Record{Topic: names[i], Value: value}).FirstErr(); err != nil {
			wcancel()
			return fmt.Errorf("warm-up produce to %s: %w", names[i], err)
		}
	}
	wcancel()

	var acked, errs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	startNs := start.UnixNano()
	rel := func(t time.Time) float64 { return t.Sub(start).Seconds() }

	// Flipper: one topic every interval after steady.
	flipReq := make([]float64, o.flips)
	flipDone := make(chan error, 1)
	go func() {
		for i := 0; i < o.flips; i++ {
			at := start.Add(o.steady + time.Duration(i)*o.interval)
			time.Sleep(time.Until(at))
			if err := writeConfig(o, cfgPath, state, i+1); err != nil {
				flipDone <- err
				return
			}
			flipReq[i] = rel(time.Now())
			say("flip %2d: %s -> target (t=%.3f s)", i, names[i], flipReq[i])
		}
		flipDone <- nil
	}()

	// Paced producer: record i is due at start + i/rate.
	per := float64(time.Second) / float64(o.rate)
	pctx := context.Background()
	for i := 0; i < n; i++ {
		due := int64(float64(i) * per)
		if d := time.Duration(due - time.Since(start).Nanoseconds()); d > time.Millisecond {
			time.Sleep(d)
		}
		sched[i] = due
		idx := i
		cl.Produce(pctx, &kgo.Record{Topic: names[i%o.topics], Value: value}, func(_ *kgo.Record, err error) {
			now := time.Now().UnixNano()
			if err != nil {
				lat[idx] = -1
				if errs.Add(1) == 1 {
					firstErr.Store(err.Error())
				}
				return
			}
			l := now - startNs - sched[idx]
			if l <= 0 {
				l = 1
			}
			lat[idx] = l
			acked.Add(1)
		})
	}
	loadEnd := time.Since(start)
	fctx, fcancel := context.WithTimeout(ctx, 90*time.Second)
	ferr := cl.Flush(fctx)
	fcancel()
	if err := <-flipDone; err != nil {
		return err
	}
	say("load done: %d records in %.2f s (flush: %v), acked %d, errors %d", n, loadEnd.Seconds(), ferr, acked.Load(), errs.Load())

	// 5. Cutover results.
	sum := summary{Rate: o.rate, Records: n, Flips: o.flips, Prefix: o.prefix, Partitions: o.partitions, Topics: o.topics, Size: o.size,
		AchievedRate: float64(n) / loadEnd.Seconds(), LoadSeconds: loadEnd.Seconds(), Windows: map[string]window{}}
	if c := procCPUSeconds(cmd.Process.Pid); !math.IsNaN(c) {
		sum.KproxyCPUSecs = c
	}
	var recs []flipRec
	deadline = time.Now().Add(30 * time.Second)
	for {
		s, err := getStatus(o.admin)
		if err != nil {
			return err
		}
		byTopic := map[string]flipRec{}
		for _, c := range s.Cutovers {
			if !strings.HasPrefix(c.Topic, o.prefix+"-") {
				continue
			}
			fr := flipRec{Topic: c.Topic, StartS: rel(c.StartedAt), HoldMs: c.HoldMs, State: c.State, Reason: c.Reason, HeldReqs: c.Held}
			if !c.FlippedAt.IsZero() {
				fr.FlippedS = rel(c.FlippedAt)
			}
			byTopic[c.Topic] = fr
		}
		recs = recs[:0]
		final := 0
		for i := 0; i < o.flips; i++ {
			fr, ok := byTopic[names[i]]
			if !ok {
				fr = flipRec{Topic: names[i], State: "missing"}
			}
			fr.RequestS = flipReq[i]
			if fr.State == "flipped" || fr.State == "aborted" || fr.State == "refused" {
				final++
			}
			recs = append(recs, fr)
		}
		if final == o.flips || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	sum.FlipRecs = recs
	var holds []float64
	for _, r := range recs {
		switch r.State {
		case "flipped":
			sum.Flipped++
		case "aborted":
			sum.Aborts++
		default:
			sum.Other++
		}
		holds = append(holds, float64(r.HoldMs))
	}
	// /status keeps only each topic's last attempt; a topic whose flip
	// aborted is retried, so count every attempt from kproxy's log.
	if lb, err := os.ReadFile(logf.Name()); err == nil {
		for _, line := range strings.Split(string(lb), "\n") {
			if !strings.Contains(line, "topic="+o.prefix+"-") {
				continue
			}
			// One line ends each attempt, with its hold: "cutover
			// released held produce requests ..." or "cutover aborted;
			// held produce requests released ...".
			aborted := strings.Contains(line, "cutover aborted;")
			if !aborted && !strings.Contains(line, "cutover released held") {
				continue
			}
			if aborted {
				sum.AbortAttempts++
			}
			if i := strings.Index(line, " hold="); i >= 0 {
				f := strings.Fields(line[i+6:])
				if d, err := time.ParseDuration(f[0]); err == nil {
					sum.AttemptHoldsMs = append(sum.AttemptHoldsMs, float64(d.Microseconds())/1000)
				}
			}
		}
	}
	sort.Float64s(holds)
	if len(holds) > 0 {
		sum.HoldP50, sum.HoldP99, sum.HoldMax = pct(holds, 50), pct(holds, 99), holds[len(holds)-1]
		var t float64
		for _, h := range holds {
			t += h
		}
		sum.HoldMean = t / float64(len(holds))
	}

	// 6. Latency windows: before the first flip request, from it to one
	// interval after the last flip request (or the last flip's end, if
	// later), and after that.
	sum.Acked, sum.Errors = acked.Load(), errs.Load()
	sum.Unacked = int64(n) - sum.Acked - sum.Errors
	if v := firstErr.Load(); v != nil {
		sum.FirstError = v.(string)
	}
	wFrom, wTo := math.Inf(1), math.Inf(1)
	if o.flips > 0 {
		wFrom = flipReq[0]
		wTo = flipReq[o.flips-1] + o.interval.Seconds()
		for _, r := range recs {
			end := r.StartS + float64(r.HoldMs)/1000
			if r.FlippedS > end {
				end = r.FlippedS
			}
			if end > wTo {
				wTo = end
			}
		}
	}
	buckets := map[string][]float64{}
	f, err := os.Create(filepath.Join(o.out, fmt.Sprintf("latency-%d.csv", o.rate)))
	if err != nil {
		return err
	}
	fmt.Fprintln(f, "t_seconds,latency_ms")
	for i := 0; i < n; i++ {
		if lat[i] <= 0 {
			continue
		}
		t := float64(sched[i]) / 1e9
		l := float64(lat[i]) / 1e6
		fmt.Fprintf(f, "%.6f,%.3f\n", t, l)
		switch {
		case t < wFrom:
			buckets["before"] = append(buckets["before"], l)
		case t < wTo:
			buckets["during"] = append(buckets["during"], l)
		default:
			buckets["after"] = append(buckets["after"], l)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	bounds := map[string][2]float64{"before": {0, wFrom}, "during": {wFrom, wTo}, "after": {wTo, loadEnd.Seconds()}}
	for k, xs := range buckets {
		sort.Float64s(xs)
		sum.Windows[k] = window{From: bounds[k][0], To: bounds[k][1], N: len(xs), P50: pct(xs, 50), P99: pct(xs, 99), Max: xs[len(xs)-1]}
	}

	f, err = os.Create(filepath.Join(o.out, fmt.Sprintf("flips-%d.csv", o.rate)))
	if err != nil {
		return err
	}
	fmt.Fprintln(f, "topic,flip_requested_s,hold_started_s,flipped_s,hold_ms,state,held_requests,reason")
	for _, r := range recs {
		fmt.Fprintf(f, "%s,%.3f,%.3f,%.3f,%d,%s,%d,%q\n", r.Topic, r.RequestS, r.StartS, r.FlippedS, r.HoldMs, r.State, r.HeldReqs, r.Reason)
	}
	if err := f.Close(); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(sum, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, fmt.Sprintf("summary-%d.json", o.rate)), append(js, '\n'), 0o644); err != nil {
		return err
	}

	fmt.Printf("rate %d rec/s (achieved %.0f): %d records, acked %d, errors %d, unacked %d\n", o.rate, sum.AchievedRate, n, sum.Acked, sum.Errors, sum.Unacked)
	fmt.Printf("aborted attempts in kproxy log (aborted topics are retried): %d; attempts %d\n", sum.AbortAttempts, len(sum.AttemptHoldsMs))
	fmt.Printf("flips %d: flipped %d, aborted %d, other %d; hold p50 %.0f ms, p99 %.0f ms, max %.0f ms\n", o.flips, sum.Flipped, sum.Aborts, sum.Other, sum.HoldP50, sum.HoldP99, sum.HoldMax)
	for _, k := range []string{"before", "during", "after"} {
		w := sum.Windows[k]
		fmt.Printf("produce latency %-6s [%6.2f, %6.2f) s: n=%d p50 %.2f ms p99 %.2f ms max %.2f ms\n", k, w.From, w.To, w.N, w.P50, w.P99, w.Max)
	}
	if sum.Errors > 0 || sum.Unacked > 0 {
		return fmt.Errorf("%d produce errors, %d unacked (first error: %s)", sum.Errors, sum.Unacked, sum.FirstError)
	}
	return nil
}
