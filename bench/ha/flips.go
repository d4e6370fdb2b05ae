package main

// The flip-hold phase (-flips N): three `kproxy run` instances copy a
// replicated topic from the source and flip it to the target and back N
// times through the control topic (docs/ha.md, "Coordinated cutover"),
// the edit reaching the instances one by one, the driver (kproxy-0) last,
// while a producer writes at -rate records/s through all three. Per
// flip: each instance's hold (its /status hold_ms) and the produce latency
// of the records sent while any instance held.

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/test/hatest"
)

type flipInstance struct {
	addr, admin, cfg, head string
	cmd                    *exec.Cmd
}

func flipBench(ctx context.Context, n int) map[string]any {
	if *source == "" {
		log.Fatal("-flips needs -source")
	}
	topic := fmt.Sprintf("ha-flip-%d", time.Now().Unix())
	cl, err := kgo.NewClient(kgo.SeedBrokers(*source))
	must(err)
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	must(err)
	must(resp.Err)
	cl.Close()
	var insts []*flipInstance
	for i := range 3 {
		in := &flipInstance{addr: fmt.Sprintf("127.0.0.1:%d", freePort()), admin: fmt.Sprintf("127.0.0.1:%d", freePort()),
			cfg: filepath.Join(*work, fmt.Sprintf("flip-%d.yaml", i))}
		in.head = fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\ninstance: { id: kproxy-%d }\ncontrol: { group: %s-members, session_timeout: %s }\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nreplicate: [%s]\nreplication: { reverse_after_cutover: true }\ncutover: { max_hold: 10s }\n",
			in.addr, in.admin, filepath.Join(*work, fmt.Sprintf("flip-state-%d", i)), i, topic, *session, *source, *target, topic)
		writeRoutes(in, topic, "source", 0)
		lf, err := os.Create(filepath.Join(*work, fmt.Sprintf("flip-%d.log", i)))
		must(err)
		in.cmd = exec.Command(*kproxyExe, "run", "-c", in.cfg)
		in.cmd.Stdout, in.cmd.Stderr = lf, lf
		must(in.cmd.Start())
		insts = append(insts, in)
	}
	defer func() {
		for _, in := range insts {
			_ = in.cmd.Process.Signal(syscall.SIGTERM)
			_ = in.cmd.Wait()
		}
	}()
	var addrs []string
	for _, in := range insts {
		addrs = append(addrs, in.addr)
	}
	actx, cancel := context.WithTimeout(ctx, 90*time.Second)
	for {
		if _, err := hatest.Agreed(actx, addrs, 3, topic, topic+"-g"); err == nil {
			break
		} else if actx.Err() != nil {
			log.Fatalf("the flip instances never agreed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()

	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MetadataMinAge(100*time.Millisecond), kgo.RecordDeliveryTimeout(2*time.Minute))
	must(err)
	defer prod.Close()
	var mu sync.Mutex
	var recs []*sent
	failed := 0
	pctx, cancelProduce := context.WithCancel(ctx)
	defer cancelProduce()
	halt, done := make(chan struct{}), make(chan struct{})
	stop := func() {
		// Stop sending, then wait for every record sent: a record
		// counts as failed only if kproxy or Kafka failed it.
		close(halt)
		<-done
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_ = prod.Flush(fctx)
	}
	began := time.Now()
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second * partitions / time.Duration(*rate))
		defer tick.Stop()
		val := make([]byte, 100)
		for {
			select {
			case <-halt:
				return
			case <-tick.C:
			}
			for p := range int32(partitions) {
				s := &sent{partition: p, at: time.Now()}
				mu.Lock()
				recs = append(recs, s)
				mu.Unlock()
				prod.Produce(pctx, &kgo.Record{Partition: p, Value: val}, func(_ *kgo.Record, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed++
						return
					}
					s.acked = time.Now()
				})
			}
		}
	}()
	time.Sleep(5 * time.Second) // the copy catches up under load

	type flip struct {
		To       string  `json:"to"`
		Attempts int     `json:"attempts"`
		HoldMs   []int64 `json:"hold_ms_per_instance"`
		MaxMs    int64   `json:"hold_ms_max"`
		from, to time.Time
	}
	var flips []*flip
	for k := range n {
		to := "target"
		if k%2 == 1 {
			to = "source"
		}
		f := &flip{To: to, from: time.Now()}
		for f.Attempts = 1; ; f.Attempts++ {
			for _, i := range []int{2, 1, 0} {
				writeRoutes(insts[i], topic, to, 10*k+f.Attempts)
			}
			edited := time.Now()
			st := waitFlip(insts, topic, to, edited)
			if st == "flipped" {
				break
			}
			if f.Attempts == 3 {
				log.Fatalf("flip %d to the %s: %s three times", k, to, st)
			}
			log.Printf("flip %d to the %s: %s; editing again", k, to, st)
		}
		f.to = time.Now()
		for _, in := range insts {
			_, _, hold := cutover(in.admin, topic)
			f.HoldMs = append(f.HoldMs, hold)
			f.MaxMs = max(f.MaxMs, hold)
		}
		log.Printf("flip %d to the %s: hold per instance %v ms (%d attempt(s))", k, to, f.HoldMs, f.Attempts)
		flips = append(flips, f)
		time.Sleep(3 * time.Second)
	}
	stop()
	elapsed := time.Since(began)

	var holds, maxes []float64
	for _, f := range flips {
		maxes = append(maxes, float64(f.MaxMs))
		for _, h := range f.HoldMs {
			holds = append(holds, float64(h))
		}
	}
	slices.Sort(holds)
	slices.Sort(maxes)
	// Produce latency of the records sent during a flip (edit to every
	// instance flipped) and outside.
	var during, outside []float64
	mu.Lock()
	unacked := 0
	for _, s := range recs {
		if s.acked.IsZero() {
			unacked++
			continue
		}
		ms := float64(s.acked.Sub(s.at).Microseconds()) / 1000
		in := false
		for _, f := range flips {
			in = in || (!s.at.Before(f.from) && !s.at.After(f.to))
		}
		if in {
			during = append(during, ms)
		} else {
			outside = append(outside, ms)
		}
	}
	mu.Unlock()
	slices.Sort(during)
	slices.Sort(outside)
	lat := func(v []float64) map[string]any {
		if len(v) == 0 {
			return nil
		}
		return map[string]any{"records": len(v), "p50_ms": round(pct(v, 0.5)), "p99_ms": round(pct(v, 0.99)), "max_ms": round(v[len(v)-1])}
	}
	mu.Lock()
	achieved := float64(len(recs)) / elapsed.Seconds()
	mu.Unlock()
	return map[string]any{"flips": flips, "rate_records_per_s": *rate, "sent_records_per_s": round(achieved), "partitions": partitions,
		"hold_ms_all_instances":        map[string]any{"n": len(holds), "p50": pct(holds, 0.5), "p99": pct(holds, 0.99), "max": holds[len(holds)-1]},
		"hold_ms_per_flip_max":         map[string]any{"n": len(maxes), "p50": pct(maxes, 0.5), "p99": pct(maxes, 0.99), "max": maxes[len(maxes)-1]},
		"produce_latency_during_flips": lat(during), "produce_latency_outside_flips": lat(outside),
		"produce_failed": failed, "unacked": unacked}
}

// writeRoutes rewrites an instance's config with topic routed to home.
func writeRoutes(in *flipInstance, topic, home string, note int) {
	body := in.head + fmt.Sprintf("# edit %d\nroutes:\n  default: source\n", note)
	if home != "source" {
		body += fmt.Sprintf("  topics: { %s: %s }\n", topic, home)
	}
	tmp := in.cfg + ".tmp"
	must(os.WriteFile(tmp, []byte(body), 0o644))
	must(os.Rename(tmp, in.cfg))
}

// waitFlip waits until every instance shows the topic flipped to home
// ("flipped"), or one shows it aborted a second after the edit.
func waitFlip(insts []*flipInstance, topic, home string, edited time.Time) string {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, in := range insts {
			st, h, _ := cutover(in.admin, topic)
			if st == "aborted" && time.Since(edited) > time.Second {
				return "aborted"
			}
			all = all && st == "flipped" && h == home
		}
		if all {
			return "flipped"
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "not ended within 60 s"
}

// cutover is an instance's /status cutover of topic.
func cutover(admin, topic string) (state, home string, holdMs int64) {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + admin + "/status")
	if err != nil {
		return "", "", 0
	}
	defer resp.Body.Close()
	var st struct {
		Cutovers []struct {
			Topic, State, Home string
			HoldMs             int64 `json:"hold_ms"`
		} `json:"cutovers"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return "", "", 0
	}
	for _, c := range st.Cutovers {
		if strings.EqualFold(c.Topic, topic) {
			return c.State, c.Home, c.HoldMs
		}
	}
	return "", "", 0
}
