// Command ha measures kproxy's multi-instance mode (issue 14, docs/ha.md)
// on real Kafka with `kproxy run` instances on loopback that form one
// virtual cluster through the target (the control cluster):
//
//   - produce throughput through 1, 2 and 3 instances in the same run: one
//     producer bootstrapped from the running instances writes 1 KiB records
//     flat out; MB/s acknowledged and each instance's CPU-s per GB, from
//     /proc (on a 2-core machine the cores, shared by the brokers, the
//     client and every instance, are the ceiling: the numbers say what an
//     instance costs, not how N instances scale on a machine with cores to
//     spare);
//   - failover time: with three instances and a producer at a steady rate,
//     one instance is SIGKILLed; the time until every partition has an
//     acknowledgement of a record sent after the kill (the last partition
//     of the client resumed producing), over -kills kills (each instance in
//     turn, restarted and agreed on again before the next);
//   - produce latency around the first kill, per record, for the plot
//     (plot.py).
//
// Writes summary.json and kill-latency.csv into -out.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/test/hatest"
)

const partitions = 12

var (
	kproxyExe = flag.String("kproxy", "", "kproxy binary")
	source    = flag.String("source", "", "source bootstrap")
	target    = flag.String("target", "", "target bootstrap (also the control cluster)")
	work      = flag.String("work", "", "work dir (configs, state, logs)")
	out       = flag.String("out", "bench/ha", "where summary.json and kill-latency.csv go")
	phase     = flag.Duration("phase", 10*time.Second, "length of each throughput phase")
	kills     = flag.Int("kills", 10, "how many instances to SIGKILL")
	rate      = flag.Int("rate", 2400, "records/s of the failover phase's producer")
	session   = flag.Duration("session", 6*time.Second, "control.session_timeout (the broker's minimum is 6 s by default)")
	flipsN    = flag.Int("flips", 0, "run only the flip-hold phase: this many flips (target and back) of a replicated topic through three instances, into flips.json")
)

type instance struct {
	addr, cfg, logPath string
	cmd                *exec.Cmd
}

type bench struct {
	topic, group string
	insts        []*instance
}

func main() {
	flag.Parse()
	if *kproxyExe == "" || *target == "" || *work == "" {
		log.Fatal("-kproxy, -target and -work are required")
	}
	ctx := context.Background()
	if *flipsN > 0 {
		res := flipBench(ctx, *flipsN)
		f, err := os.Create(filepath.Join(*out, "flips.json"))
		must(err)
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		must(enc.Encode(res))
		must(f.Close())
		return
	}
	b := &bench{topic: fmt.Sprintf("ha-bench-%d", time.Now().Unix())}
	b.group = b.topic + "-g"
	createTopic(ctx, b.topic)
	for i := range 3 {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort())
		in := &instance{addr: addr, cfg: filepath.Join(*work, fmt.Sprintf("kproxy-%d.yaml", i)), logPath: filepath.Join(*work, fmt.Sprintf("kproxy-%d.log", i))}
		src := ""
		if *source != "" {
			src = fmt.Sprintf("  source: { bootstrap: [%s] }\n", *source)
		}
		body := fmt.Sprintf("listen: %s\nstate_dir: %s\ninstance: { id: kproxy-%d }\ncontrol: { group: %s-members, session_timeout: %s }\nclusters:\n%s  target: { bootstrap: [%s] }\nroutes: { default: target }\n",
			addr, filepath.Join(*work, fmt.Sprintf("state-%d", i)), i, b.topic, *session, src, *target)
		must(os.WriteFile(in.cfg, []byte(body), 0o644))
		b.insts = append(b.insts, in)
	}
	defer func() {
		for _, in := range b.insts {
			if in.cmd != nil {
				_ = in.cmd.Process.Signal(syscall.SIGTERM)
				_ = in.cmd.Wait()
			}
		}
	}()

	sum := map[string]any{"partitions": partitions, "session_timeout_s": session.Seconds(), "record_bytes": 1024}
	// 1, 2, 3 instances, then back down to 2 and 1 (SIGTERM: a clean
	// leave), so each count is measured twice in one run, early and late.
	var tput []map[string]any
	for n := 1; n <= 3; n++ {
		b.start(n - 1)
		b.agree(ctx, n)
		tput = append(tput, b.throughput(ctx, n))
	}
	for n := 2; n >= 1; n-- {
		b.stop(n)
		b.agree(ctx, n)
		tput = append(tput, b.throughput(ctx, n))
	}
	for _, r := range tput {
		log.Printf("throughput through %d: %+v", r["instances"], r)
	}
	sum["throughput_runs"] = tput
	sum["throughput"] = byInstances(tput)
	for n := 2; n <= 3; n++ {
		b.start(n - 1)
	}
	if *kills > 0 {
		sum["failover"] = b.failover(ctx)
	}
	f, err := os.Create(filepath.Join(*out, "summary.json"))
	must(err)
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	must(enc.Encode(sum))
	must(f.Close())
}

func (b *bench) start(i int) {
	in := b.insts[i]
	lf, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(err)
	in.cmd = exec.Command(*kproxyExe, "run", "-c", in.cfg)
	in.cmd.Stdout, in.cmd.Stderr = lf, lf
	must(in.cmd.Start())
}

// stop stops instance i with SIGTERM (it leaves the group and drains).
func (b *bench) stop(i int) {
	in := b.insts[i]
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	_ = in.cmd.Wait()
	in.cmd = nil
}

// byInstances is, per instance count, the mean of its runs, and the ratio
// of its MB/s to one instance's.
func byInstances(runs []map[string]any) []map[string]any {
	var out []map[string]any
	var one float64
	for n := 1; n <= 3; n++ {
		var mb, cpu float64
		k := 0
		for _, r := range runs {
			if r["instances"] == n {
				mb += r["mb_per_s"].(float64)
				cpu += r["cpu_s_per_gb_total"].(float64)
				k++
			}
		}
		mb, cpu = mb/float64(k), cpu/float64(k)
		if n == 1 {
			one = mb
		}
		out = append(out, map[string]any{"instances": n, "runs": k, "mb_per_s": round(mb), "ratio_to_one": round(mb / one),
			"cpu_s_per_gb_all_instances": round(cpu), "cpu_s_per_gb_per_instance": round(cpu / float64(n))})
	}
	return out
}

func (b *bench) running() []string {
	var out []string
	for _, in := range b.insts {
		if in.cmd != nil {
			out = append(out, in.addr)
		}
	}
	return out
}

func (b *bench) agree(ctx context.Context, n int) hatest.View {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var v hatest.View
	var err error
	for ctx.Err() == nil {
		// Agreed returns at once on a refused connection (an instance
		// still starting); ask again until all answer alike.
		if v, err = hatest.Agreed(ctx, b.running(), n, b.topic, b.group); err == nil {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatalf("the instances never agreed on %d: %v", n, err)
	return v
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// throughput produces flat out through the running instances for -phase.
func (b *bench) throughput(ctx context.Context, n int) map[string]any {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.running()...), kgo.DefaultProduceTopic(b.topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.MaxBufferedRecords(20000), kgo.ProducerLinger(2*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	must(err)
	defer cl.Close()
	// Incompressible bytes, sent uncompressed: the bytes counted are the
	// bytes every hop moves.
	val := make([]byte, 1024)
	_, _ = rand.Read(val)
	// Warm up: connections, metadata, producer ids.
	for range 2000 {
		cl.Produce(ctx, &kgo.Record{Value: val}, nil)
	}
	must(cl.Flush(ctx))

	cpu0 := make([]float64, n)
	for i := range n {
		cpu0[i] = cpuSeconds(b.insts[i].cmd.Process.Pid)
	}
	var mu sync.Mutex
	var acked, failed int64
	pctx, cancel := context.WithTimeout(ctx, *phase)
	start := time.Now()
	for pctx.Err() == nil {
		cl.Produce(pctx, &kgo.Record{Value: val}, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
				// Buffered when the phase ended: neither counted nor failed.
			case err != nil:
				failed++
			case time.Since(start) <= *phase:
				acked += int64(len(r.Value))
			}
		})
	}
	cancel()
	elapsed := phase.Seconds()
	cpu := make([]float64, n)
	var total float64
	for i := range n {
		cpu[i] = cpuSeconds(b.insts[i].cmd.Process.Pid) - cpu0[i]
		total += cpu[i]
	}
	_ = cl.Flush(ctx) // records cut off by the phase's end are not counted
	mu.Lock()
	defer mu.Unlock()
	gb := float64(acked) / 1e9
	perInst := make([]float64, n)
	for i := range n {
		perInst[i] = round(cpu[i] / gb)
	}
	return map[string]any{"instances": n, "mb_per_s": round(float64(acked) / 1e6 / elapsed), "acked_mb": round(float64(acked) / 1e6), "cpu_s": cpu,
		"cpu_s_per_gb_total": round(total / gb), "cpu_s_per_gb_by_instance": perInst, "failed": failed}
}

type sent struct {
	partition int32
	at, acked time.Time
}

// failover runs a steady producer and SIGKILLs one instance at a time.
func (b *bench) failover(ctx context.Context) map[string]any {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.running()...), kgo.DefaultProduceTopic(b.topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MetadataMinAge(100*time.Millisecond),
		kgo.RecordDeliveryTimeout(2*time.Minute))
	must(err)
	defer cl.Close()
	var mu sync.Mutex
	var recs []*sent
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second * partitions / time.Duration(*rate))
		defer tick.Stop()
		val := make([]byte, 100)
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			for p := range int32(partitions) {
				s := &sent{partition: p, at: time.Now()}
				mu.Lock()
				recs = append(recs, s)
				mu.Unlock()
				cl.Produce(pctx, &kgo.Record{Partition: p, Value: val}, func(_ *kgo.Record, err error) {
					if err == nil {
						mu.Lock()
						s.acked = time.Now()
						mu.Unlock()
					}
				})
			}
		}
	}()
	time.Sleep(3 * time.Second)

	var times []float64
	var first struct{ kill, from, to time.Time }
	for k := range *kills {
		victim := k % 3
		b.agree(ctx, 3)
		time.Sleep(2 * time.Second)
		killAt := time.Now()
		_ = b.insts[victim].cmd.Process.Kill()
		_ = b.insts[victim].cmd.Wait()
		b.insts[victim].cmd = nil
		// Wait until each partition has an acknowledged record sent
		// after the kill.
		var resumed time.Time
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			firstAck := map[int32]time.Time{}
			for _, s := range recs {
				if s.at.After(killAt) && !s.acked.IsZero() {
					if t, ok := firstAck[s.partition]; !ok || s.acked.Before(t) {
						firstAck[s.partition] = s.acked
					}
				}
			}
			mu.Unlock()
			if len(firstAck) == partitions {
				for _, t := range firstAck {
					if t.After(resumed) {
						resumed = t
					}
				}
				break
			}
		}
		if resumed.IsZero() {
			log.Fatalf("kill %d: the producer did not resume on every partition within 90 s", k)
		}
		d := resumed.Sub(killAt)
		times = append(times, d.Seconds())
		log.Printf("kill %d (instance %d): every partition resumed after %s", k, victim, d)
		if k == 0 {
			first.kill, first.from, first.to = killAt, killAt.Add(-5*time.Second), resumed.Add(5*time.Second)
		}
		if k == 0 {
			time.Sleep(5 * time.Second) // the plot's window after the resume
		}
		b.start(victim)
	}
	stop()
	<-done

	// Latency of every record sent in the window around the first kill.
	f, err := os.Create(filepath.Join(*out, "kill-latency.csv"))
	must(err)
	fmt.Fprintln(f, "sent_s,partition,latency_ms")
	mu.Lock()
	for _, s := range recs {
		if s.at.Before(first.from) || s.at.After(first.to) || s.acked.IsZero() {
			continue
		}
		fmt.Fprintf(f, "%.4f,%d,%.3f\n", s.at.Sub(first.kill).Seconds(), s.partition, float64(s.acked.Sub(s.at).Microseconds())/1000)
	}
	mu.Unlock()
	must(f.Close())

	sorted := slices.Clone(times)
	slices.Sort(sorted)
	return map[string]any{"kills": len(times), "seconds": times,
		"p50_s": round(pct(sorted, 0.50)), "p99_s": round(pct(sorted, 0.99)), "max_s": round(sorted[len(sorted)-1]),
		"rate_records_per_s": *rate}
}

// pct is the nearest-rank percentile of sorted.
func pct(sorted []float64, q float64) float64 {
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func round(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

func createTopic(ctx context.Context, topic string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(*target))
	must(err)
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	must(err)
	must(resp.Err)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
