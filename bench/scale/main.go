// Command scalebench measures what an idle replicated cluster costs: it
// creates TOPICS × PARTITIONS topics on the source (no records), measures
// the source broker's CPU for a window without any copier, then runs kproxy's
// replicator in this process over those topics and, once every partition is
// copying, measures this process's CPU and the source broker's over the same
// window (utime+stime from /proc, 100 ticks/s).
//
//	scalebench -src 127.0.0.1:19092 -tgt 127.0.0.1:29092 \
//	    -broker-pid $KPROXY_CACHE/kafka-run/source/kafka.pid -topics 200 -partitions 6
//
// It prints one JSON line. -cleanup deletes the topics from both clusters
// afterwards.
//
// With -copy TOPIC it instead copies an existing source topic (e.g. one
// `replbench produce` wrote) and reports this process's CPU from Start until
// every partition is copied, optionally with a CPU profile (-cpuprofile):
// for finding where the copy's CPU goes.
//
// With -sweep 100,1000,10000 -kproxy BIN it runs the cost-growth sweep
// against a kproxy binary instead (sweep.go; plot.py and table.py turn its
// JSON lines into bench/RESULTS.md's figure and table).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

func main() {
	src := flag.String("src", "127.0.0.1:19092", "source bootstrap")
	tgt := flag.String("tgt", "127.0.0.1:29092", "target bootstrap")
	brokerPidFile := flag.String("broker-pid", "", "file holding the source broker's pid")
	topics := flag.Int("topics", 200, "topics")
	partitions := flag.Int("partitions", 6, "partitions per topic")
	prefix := flag.String("prefix", "scale-", "topic name prefix")
	window := flag.Duration("window", 20*time.Second, "measurement window")
	settle := flag.Duration("settle", 5*time.Second, "pause after every partition copies, before measuring")
	fetchWait := flag.Duration("fetch-max-wait", 25*time.Millisecond, "Options.FetchMaxWait (cmd/kproxy passes 25ms)")
	cleanup := flag.Bool("cleanup", false, "delete the topics from both clusters at the end")
	copyTopic := flag.String("copy", "", "copy this existing source topic and report CPU (see the package comment)")
	cpuprofile := flag.String("cpuprofile", "", "CPU profile of the copy (-copy)")
	sweepSizes := flag.String("sweep", "", "comma-separated partition counts: run the cost-growth sweep with a kproxy binary (sweep.go)")
	kproxyBin := flag.String("kproxy", "", "kproxy binary (-sweep)")
	tgtPidFile := flag.String("tgt-broker-pid", "", "file holding the target broker's pid (-sweep)")
	perTopic := flag.Int("per-topic", 10, "partitions per topic (-sweep)")
	loadRate := flag.Int("load-rate", 2000, "records/s of 1 KiB during the load window (-sweep)")
	ports := flag.Int("ports", 41850, "kproxy listen port; admin is the next (-sweep)")
	flag.Parse()
	if *sweepSizes != "" {
		var sizes []int
		for _, f := range strings.Split(*sweepSizes, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				log.Fatal(err)
			}
			sizes = append(sizes, n)
		}
		sweep(sizes, sweepOpts{src: *src, tgt: *tgt, kproxy: *kproxyBin, srcPidFile: *brokerPidFile, tgtPidFile: *tgtPidFile,
			perTopic: *perTopic, window: *window, settle: *settle, loadRate: *loadRate, listenPort: *ports, adminPort: *ports + 1,
			metadataRequests: 50, startupTimeout: 15 * time.Minute})
		return
	}
	if *copyTopic != "" {
		copyOnce(*src, *tgt, *copyTopic, *cpuprofile)
		return
	}

	ctx := context.Background()
	sc, err := kgo.NewClient(kgo.SeedBrokers(*src))
	if err != nil {
		log.Fatal(err)
	}
	defer sc.Close()
	tc, err := kgo.NewClient(kgo.SeedBrokers(*tgt))
	if err != nil {
		log.Fatal(err)
	}
	defer tc.Close()
	sadm, tadm := kadm.NewClient(sc), kadm.NewClient(tc)
	var names []string
	for i := 0; i < *topics; i++ {
		names = append(names, fmt.Sprintf("%s%04d", *prefix, i))
	}
	for i := 0; i < len(names); i += 50 {
		chunk := names[i:min(i+50, len(names))]
		if _, err := sadm.CreateTopics(ctx, int32(*partitions), 1, nil, chunk...); err != nil {
			log.Fatalf("creating topics: %v", err)
		}
	}
	brokerPid := 0
	if *brokerPidFile != "" {
		b, err := os.ReadFile(*brokerPidFile)
		if err != nil {
			log.Fatal(err)
		}
		brokerPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	time.Sleep(*settle)
	out := map[string]any{"topics": *topics, "partitions": *topics * *partitions, "window_s": window.Seconds(),
		"fetch_max_wait_ms": fetchWait.Milliseconds(), "go": runtime.Version()}
	if brokerPid > 0 {
		b0 := ticks(brokerPid)
		time.Sleep(*window)
		out["broker_baseline_core_pct"] = pct(ticks(brokerPid)-b0, *window)
	}

	state, err := os.MkdirTemp("", "scalebench-state-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(state)
	start := time.Now()
	r, err := replicator.New(replicator.Options{SourceBrokers: []string{*src}, TargetBrokers: []string{*tgt},
		Topics: names, StateDir: state, FetchMaxWait: *fetchWait})
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for {
		copying := 0
		for _, n := range names {
			for p := 0; p < *partitions; p++ {
				if r.CopiedThrough(n, int32(p)) >= 0 {
					copying++
				}
			}
		}
		if copying == len(names)**partitions {
			break
		}
		if time.Since(start) > 10*time.Minute {
			log.Fatalf("only %d partitions copying after 10 minutes", copying)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out["startup_s"] = time.Since(start).Seconds()
	time.Sleep(*settle)
	self := os.Getpid()
	s0 := ticks(self)
	var b0 int64
	if brokerPid > 0 {
		b0 = ticks(brokerPid)
	}
	time.Sleep(*window)
	out["replicator_core_pct"] = pct(ticks(self)-s0, *window)
	if brokerPid > 0 {
		out["broker_core_pct"] = pct(ticks(brokerPid)-b0, *window)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out["heap_inuse_mb"] = float64(ms.HeapInuse) / (1 << 20)
	r.Stop()
	if *cleanup {
		for i := 0; i < len(names); i += 50 {
			chunk := names[i:min(i+50, len(names))]
			_, _ = sadm.DeleteTopics(ctx, chunk...)
			_, _ = tadm.DeleteTopics(ctx, chunk...)
		}
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

// copyOnce copies topic and prints the copy's CPU and payload bytes.
func copyOnce(src, tgt, topic, profile string) {
	ctx := context.Background()
	sc, err := kgo.NewClient(kgo.SeedBrokers(src))
	if err != nil {
		log.Fatal(err)
	}
	defer sc.Close()
	ends, err := kadm.NewClient(sc).ListEndOffsets(ctx, topic)
	if err != nil {
		log.Fatal(err)
	}
	state, err := os.MkdirTemp("", "scalebench-copy-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(state)
	r, err := replicator.New(replicator.Options{SourceBrokers: []string{src}, TargetBrokers: []string{tgt},
		Topics: []string{topic}, StateDir: state, FetchMaxWait: 25 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
	}
	t0, c0 := time.Now(), ticks(os.Getpid())
	if err := r.Start(ctx); err != nil {
		log.Fatal(err)
	}
	var records int64
	ends.Each(func(o kadm.ListedOffset) {
		records += o.Offset
		// Polled: the steady-state copy is measured here, with nothing
		// waiting on or urging the partitions.
		for r.CopiedThrough(topic, o.Partition) < o.Offset {
			if ctx.Err() != nil {
				log.Fatal(ctx.Err())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	cpu := float64(ticks(os.Getpid())-c0) / 100
	secs := time.Since(t0).Seconds()
	if profile != "" {
		pprof.StopCPUProfile()
	}
	r.Stop()
	b, _ := json.Marshal(map[string]any{"topic": topic, "records": records, "seconds": secs, "cpu_s": cpu})
	fmt.Println(string(b))
}

// ticks is a process's utime+stime in clock ticks (100 per second on Linux).
func ticks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 (state) on
	u, _ := strconv.ParseInt(f[11], 10, 64)                  // field 14
	k, _ := strconv.ParseInt(f[12], 10, 64)                  // field 15
	return u + k
}

func pct(t int64, d time.Duration) float64 { return float64(t) / 100 / d.Seconds() * 100 }
