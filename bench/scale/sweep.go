package main

// The cost-growth sweep (issue 15 item 7): for each partition count, the
// topics are created on the real source, a kproxy binary (proxy and
// replicator, as deployed) replicates them with `replicate: ["<prefix>*"]`,
// and the run records, idle and under a modest produce load: kproxy's CPU
// and RSS, both brokers' CPU (each against its own quiet window before
// kproxy started), start-up time until every partition has an offset map
// (its copy session started), full Metadata p50/p99 through kproxy and
// direct, and the offset maps' memory (the maps loaded from the state
// metric kproxy_replicator_offset_map_bytes). One JSON line per size on
// stdout.
//
//	scalebench -sweep 100,1000,10000 -kproxy ./kproxy -src ... -tgt ... \
//	    -broker-pid SRC_PID_FILE -tgt-broker-pid TGT_PID_FILE

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type sweepOpts struct {
	src, tgt, kproxy       string
	srcPidFile, tgtPidFile string
	perTopic               int
	window, settle         time.Duration
	loadRate               int // records/s during the load window
	listenPort, adminPort  int
	metadataRequests       int
	startupTimeout         time.Duration
}

func sweep(sizes []int, o sweepOpts) {
	for _, n := range sizes {
		out := sweepOne(n, o)
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

// cpuWindow measures each pid's share of a core over d.
func cpuWindow(d time.Duration, pids ...int) []float64 {
	t0 := make([]int64, len(pids))
	for i, p := range pids {
		t0[i] = ticks(p)
	}
	time.Sleep(d)
	out := make([]float64, len(pids))
	for i, p := range pids {
		out[i] = pct(ticks(p)-t0[i], d)
	}
	return out
}

// metadataLatency sends n full Metadata requests (every topic) to addr
// and returns p50 and p99 in ms.
func metadataLatency(addr string, n int) (p50, p99 float64, partitions int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	var ds []float64
	for i := 0; i < n+1; i++ {
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = nil // all
		t0 := time.Now()
		resp, err := req.RequestWith(ctx, cl)
		d := time.Since(t0)
		if err != nil {
			log.Fatalf("metadata via %s: %v", addr, err)
		}
		if i == 0 {
			continue // the connection's first request (dial, ApiVersions)
		}
		ds = append(ds, float64(d.Microseconds())/1000)
		partitions = 0
		for _, t := range resp.Topics {
			partitions += len(t.Partitions)
		}
	}
	sort.Float64s(ds)
	return ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*99/100)], partitions
}

// metadataInterleaved sends n full Metadata requests to each of a and b,
// one to a, then one to b, and so on, and returns each one's p50 and p99
// in ms.
func metadataInterleaved(a, b string, n int) (pa, pb [2]float64) {
	var cls [2]*kgo.Client
	for i, addr := range []string{a, b} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			log.Fatal(err)
		}
		defer cl.Close()
		cls[i] = cl
	}
	ctx := context.Background()
	var ds [2][]float64
	for i := 0; i < n+1; i++ {
		for j, cl := range cls {
			req := kmsg.NewPtrMetadataRequest()
			t0 := time.Now()
			if _, err := req.RequestWith(ctx, cl); err != nil {
				log.Fatalf("metadata: %v", err)
			}
			if i > 0 { // the first: dial, ApiVersions
				ds[j] = append(ds[j], float64(time.Since(t0).Microseconds())/1000)
			}
		}
	}
	for j := range ds {
		sort.Float64s(ds[j])
	}
	q := func(d []float64) [2]float64 { return [2]float64{d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]} }
	return q(ds[0]), q(ds[1])
}

func sweepOne(total int, o sweepOpts) map[string]any {
	ctx := context.Background()
	topics := max(total/o.perTopic, 1)
	prefix := fmt.Sprintf("cg%d-", time.Now().Unix()%100000)
	names := make([]string, topics)
	for i := range names {
		names[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	sc, err := kgo.NewClient(kgo.SeedBrokers(o.src))
	if err != nil {
		log.Fatal(err)
	}
	defer sc.Close()
	tc, err := kgo.NewClient(kgo.SeedBrokers(o.tgt))
	if err != nil {
		log.Fatal(err)
	}
	defer tc.Close()
	sadm, tadm := kadm.NewClient(sc), kadm.NewClient(tc)
	t0 := time.Now()
	for i := 0; i < len(names); i += 100 {
		chunk := names[i:min(i+100, len(names))]
		if _, err := sadm.CreateTopics(ctx, int32(o.perTopic), 1, nil, chunk...); err != nil {
			log.Fatalf("creating topics: %v", err)
		}
	}
	out := map[string]any{"partitions": topics * o.perTopic, "topics": topics, "window_s": o.window.Seconds(),
		"create_s": time.Since(t0).Seconds(), "load_records_per_s": o.loadRate}
	defer func() {
		for i := 0; i < len(names); i += 100 {
			chunk := names[i:min(i+100, len(names))]
			_, _ = sadm.DeleteTopics(ctx, chunk...)
			_, _ = tadm.DeleteTopics(ctx, chunk...)
		}
	}()
	srcPid, tgtPid := readPid(o.srcPidFile), readPid(o.tgtPidFile)
	// A broker answers CreateTopics before every topic is in its
	// metadata; kproxy resolves the replicate glob once at start, so wait
	// until the source lists them all (a 10,000-partition run once started
	// kproxy with 100 of its 1,000 topics visible).
	for deadline := time.Now().Add(10 * time.Minute); ; {
		tds, err := sadm.ListTopics(ctx, names...)
		seen := 0
		if err == nil {
			for _, td := range tds {
				if td.Err == nil && len(td.Partitions) == o.perTopic {
					seen++
				}
			}
		}
		if seen == len(names) {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("only %d of %d topics in the source's metadata after 10 minutes", seen, len(names))
		}
		time.Sleep(2 * time.Second)
	}
	time.Sleep(o.settle)
	base := cpuWindow(o.window, srcPid, tgtPid)
	out["source_broker_quiet_core_pct"], out["target_broker_quiet_core_pct"] = base[0], base[1]
	dp50, dp99, parts := metadataLatency(o.src, o.metadataRequests)
	out["metadata_direct_p50_ms"], out["metadata_direct_p99_ms"], out["metadata_partitions"] = dp50, dp99, parts

	dir, err := os.MkdirTemp("", "scalebench-kproxy-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	listen := fmt.Sprintf("127.0.0.1:%d", o.listenPort)
	cfg := fmt.Sprintf("listen: %s\nadmin: 127.0.0.1:%d\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\nreplicate: [%q]\nlog: { level: warn }\n",
		listen, o.adminPort, filepath.Join(dir, "state"), o.src, o.tgt, prefix+"*")
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		log.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(os.TempDir(), fmt.Sprintf("scalebench-kproxy-%d.log", total)))
	if err != nil {
		log.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(o.kproxy, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	kp := cmd.Process.Pid
	stateDir := filepath.Join(dir, "state", "replicator")
	want := topics * o.perTopic
	for lastLog := time.Now(); ; {
		n := countMaps(stateDir)
		if n >= want {
			break
		}
		if time.Since(lastLog) > 30*time.Second {
			log.Printf("%d partitions: %d copying after %s", want, n, time.Since(start).Round(time.Second))
			lastLog = time.Now()
		}
		if time.Since(start) > o.startupTimeout {
			out["startup_s"] = -1
			out["startup_partitions_copying"] = countMaps(stateDir)
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
	out["startup_s"] = time.Since(start).Seconds()
	time.Sleep(o.settle)
	idle := cpuWindow(o.window, kp, srcPid, tgtPid)
	out["idle_kproxy_core_pct"], out["idle_source_broker_core_pct"], out["idle_target_broker_core_pct"] = idle[0], idle[1], idle[2]
	out["idle_kproxy_rss_mb"] = rssMB(kp)
	kp50, kp99, _ := metadataLatency(listen, o.metadataRequests)
	out["metadata_kproxy_p50_ms"], out["metadata_kproxy_p99_ms"] = kp50, kp99
	// Both again, one request each in turn, with kproxy running: the
	// first direct figures are from before kproxy started, and on a
	// shared machine the load changes from one minute to the next.
	ik, id := metadataInterleaved(listen, o.src, o.metadataRequests)
	out["metadata_interleaved_kproxy_p50_ms"], out["metadata_interleaved_kproxy_p99_ms"] = ik[0], ik[1]
	out["metadata_interleaved_direct_p50_ms"], out["metadata_interleaved_direct_p99_ms"] = id[0], id[1]
	for _, src := range []string{"shared", "views", "clusters"} {
		out["metadata_listings_"+src] = scrapeGauge(fmt.Sprintf("http://127.0.0.1:%d/metrics", o.adminPort), `kproxy_metadata_listings_total{source="`+src+`"}`)
	}

	// Modest load: loadRate records/s of 1 KiB, spread over every partition.
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		pc, err := kgo.NewClient(kgo.SeedBrokers(o.src), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(20*time.Millisecond))
		if err != nil {
			log.Fatal(err)
		}
		defer pc.Close()
		val := make([]byte, 1024)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var sent int64
		for {
			select {
			case <-stop:
				_ = pc.Flush(ctx)
				done <- sent
				return
			case <-tick.C:
				for i := 0; i < o.loadRate/100; i++ {
					p := rand.IntN(want)
					pc.Produce(ctx, &kgo.Record{Topic: names[p/o.perTopic], Partition: int32(p % o.perTopic), Value: val}, nil)
					sent++
				}
			}
		}
	}()
	time.Sleep(2 * time.Second)
	load := cpuWindow(o.window, kp, srcPid, tgtPid)
	close(stop)
	out["load_records_sent"] = <-done
	out["load_kproxy_core_pct"], out["load_source_broker_core_pct"], out["load_target_broker_core_pct"] = load[0], load[1], load[2]
	out["load_kproxy_rss_mb"] = rssMB(kp)
	out["offset_map_bytes"] = scrapeGauge(fmt.Sprintf("http://127.0.0.1:%d/metrics", o.adminPort), "kproxy_replicator_offset_map_bytes")
	out["offset_maps"] = countMaps(stateDir)
	return out
}

// scrapeGauge sums a metric's series on a Prometheus text page, -1 if the
// page cannot be read.
func scrapeGauge(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") || (strings.HasSuffix(name, "}") && strings.HasPrefix(l, name)) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func countMaps(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".offsetmap") {
			n++
		}
		return nil
	})
	return n
}
