// Command replbench is the helper behind bench/replication/run.sh: it
// pre-loads source topics, runs kproxy's replicator, and watches any copying
// process (kproxy's replicator or a MirrorMaker 2 JVM) from the outside, so
// both are timed and charged CPU the same way.
//
//	replbench produce -brokers B -topics t1,t2 -partitions 6 -n 300000 -size 1024 -compression none|lz4
//	replbench kproxy  -src S -tgt T -topic t1 -state DIR
//	replbench watch   -src S -tgt T -topic t1 [-kill] [-out F] [-log F] -- COPIER ARGS...
//	replbench delete  -brokers B -contains ID
//
// watch polls the target's end offsets. The copy window opens when the first
// record of the topic is on the target (so JVM/process startup, client
// bootstrap and target topic creation are excluded for both copiers) and
// closes when every target partition's end offset reaches the source's. CPU
// is the watched process's utime+stime (/proc/PID/stat) over that window.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: replbench produce|kproxy|watch|delete [flags]")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:19092", "bootstrap (produce, delete)")
	src := fs.String("src", "127.0.0.1:19092", "source bootstrap")
	tgt := fs.String("tgt", "127.0.0.1:29092", "target bootstrap")
	topic := fs.String("topic", "", "topic")
	topics := fs.String("topics", "", "comma-separated topics (produce)")
	partitions := fs.Int("partitions", 6, "partitions (produce)")
	n := fs.Int("n", 300000, "records per topic (produce)")
	size := fs.Int("size", 1024, "record value bytes (produce)")
	compression := fs.String("compression", "none", "none|lz4 (produce)")
	state := fs.String("state", "", "replicator state dir (kproxy)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the copy window to this file (kproxy)")
	txnPrefix := fs.String("txn-prefix", "", "copy with transactional producers, ids with this prefix: the fenced copy of several instances (kproxy)")
	out := fs.String("out", "", "file for the copier's stdout (watch)")
	logf := fs.String("log", "", "file for the copier's stderr (watch)")
	kill := fs.Bool("kill", false, "stop the copier with SIGTERM once done instead of waiting for it to exit (watch)")
	contains := fs.String("contains", "", "delete topics whose name contains this (delete)")
	timeout := fs.Duration("timeout", 600*time.Second, "overall timeout")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var res any
	var err error
	switch cmd {
	case "produce":
		res, err = produce(ctx, *brokers, strings.Split(*topics, ","), *partitions, *n, *size, *compression)
	case "kproxy":
		res, err = runKproxy(ctx, *src, *tgt, *topic, *state, *cpuprofile, *txnPrefix)
	case "watch":
		res, err = watch(ctx, *src, *tgt, *topic, fs.Args(), *out, *logf, *kill)
	case "delete":
		res, err = deleteTopics(ctx, *brokers, *contains)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "replbench %s: %v\n", cmd, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

func client(brokers string, opts ...kgo.Opt) (*kgo.Client, *kadm.Client, error) {
	// The watch asks for a topic that does not exist yet, every 25 ms: with
	// kgo's default 5 s metadata cache it would see the topic 5 s late, by
	// which time a fast copier may be done.
	base := []kgo.Opt{kgo.SeedBrokers(brokers), kgo.MetadataMinAge(10 * time.Millisecond)}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return cl, kadm.NewClient(cl), nil
}

// values is a pool of distinct, moderately compressible record values: words
// drawn at random from a small vocabulary (lz4 gets roughly 2x, like text or
// JSON payloads), the same pool for every topic so the copies are identical.
func values(size int) [][]byte {
	rng := rand.New(rand.NewSource(42))
	words := make([]string, 512)
	const letters = "abcdefghijklmnopqrstuvwxyz"
	for i := range words {
		w := make([]byte, 3+rng.Intn(8))
		for j := range w {
			w[j] = letters[rng.Intn(len(letters))]
		}
		words[i] = string(w)
	}
	pool := make([][]byte, 4096)
	for i := range pool {
		b := make([]byte, 0, size+16)
		for len(b) < size {
			b = append(b, words[rng.Intn(len(words))]...)
			b = append(b, ' ')
			if rng.Intn(4) == 0 {
				b = strconv.AppendInt(b, rng.Int63n(1e9), 10)
				b = append(b, ',')
			}
		}
		pool[i] = b[:size]
	}
	return pool
}

func produce(ctx context.Context, brokers string, topics []string, partitions, n, size int, compression string) (any, error) {
	var codec kgo.CompressionCodec
	switch compression {
	case "none":
		codec = kgo.NoCompression()
	case "lz4":
		codec = kgo.Lz4Compression()
	default:
		return nil, fmt.Errorf("unknown compression %q", compression)
	}
	_, adm, err := client(brokers)
	if err != nil {
		return nil, err
	}
	resp, err := adm.CreateTopics(ctx, int32(partitions), -1, nil, topics...)
	if err != nil {
		return nil, err
	}
	if err := resp.Error(); err != nil {
		return nil, err
	}
	pool := values(size)
	res := map[string]any{"records": n, "value_bytes": float64(n) * float64(size), "compression": compression}
	for _, t := range topics {
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(brokers),
			kgo.DefaultProduceTopic(t),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerBatchCompression(codec),
			kgo.ProducerLinger(5*time.Millisecond),
			kgo.ProducerBatchMaxBytes(1<<20),
			kgo.MaxBufferedRecords(20000),
			kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		)
		if err != nil {
			return nil, err
		}
		var failed atomic.Int64
		var wg sync.WaitGroup
		wg.Add(n)
		for i := 0; i < n; i++ {
			cl.Produce(ctx, &kgo.Record{Value: pool[i%len(pool)]}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
				wg.Done()
			})
		}
		wg.Wait()
		cl.Close()
		if f := failed.Load(); f > 0 {
			return nil, fmt.Errorf("%s: %d records failed", t, f)
		}
	}
	// Size on disk of the first topic: what actually crosses the wire
	// (compressed batches plus batch/record headers).
	time.Sleep(500 * time.Millisecond)
	if dirs, err := adm.DescribeAllLogDirs(ctx, nil); err == nil {
		var sz int64
		dirs.Each(func(d kadm.DescribedLogDir) {
			d.Topics.Each(func(p kadm.DescribedLogDirPartition) {
				if p.Topic == topics[0] {
					sz += p.Size
				}
			})
		})
		res["log_bytes"] = sz
	}
	return res, nil
}

func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	lo, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var firstErr error
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			if firstErr == nil {
				firstErr = o.Err
			}
			return
		}
		out[o.Partition] = o.Offset
	})
	return out, firstErr
}

func rusageCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// runKproxy copies one topic with kproxy's replicator and reports its own
// view: Start to every partition copied, wall and getrusage CPU (this
// includes creating the target topic).
func runKproxy(ctx context.Context, src, tgt, topic, state, cpuprofile, txnPrefix string) (any, error) {
	if state == "" {
		return nil, errors.New("-state is required")
	}
	scl, sadm, err := client(src)
	if err != nil {
		return nil, err
	}
	defer scl.Close()
	ends, err := endOffsets(ctx, sadm, topic)
	if err != nil {
		return nil, err
	}
	r, err := replicator.New(replicator.Options{
		SourceBrokers: []string{src}, TargetBrokers: []string{tgt},
		Topics: []string{topic}, StateDir: state, TransactionalIDPrefix: txnPrefix,
	})
	if err != nil {
		return nil, err
	}
	// The watcher may see the copy done (and send SIGTERM) a moment before
	// WaitCopied returns; hold the signal until the report is out.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	if cpuprofile != "" {
		pf, err := os.Create(cpuprofile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, err
		}
	}
	cpu0, t0 := rusageCPU(), time.Now()
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	// Polled: the steady-state copy is measured here, with nothing
	// waiting on or urging the partitions.
	for p, end := range ends {
		for r.CopiedThrough(topic, p) < end {
			if err := r.TopicErr(topic); err != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	secs, cpu := time.Since(t0).Seconds(), rusageCPU()-cpu0
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	// Report, then keep running (idle, like a replicator that has caught
	// up) until the watcher stops us, so it sees this process to the end
	// of its copy window.
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"seconds": secs, "cpu_s": cpu})
	select {
	case <-sig:
	case <-ctx.Done():
	}
	r.Stop()
	os.Exit(0)
	return nil, nil
}

var clkTck = 100.0 // USER_HZ; 100 on every Linux we run on

func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:]) // f[0] is field 3 (state)
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clkTck, nil
}

// watch connects to both clusters, then starts the copier command as its
// child and measures it.
func watch(ctx context.Context, src, tgt, topic string, argv []string, outFile, logFile string, kill bool) (any, error) {
	if len(argv) == 0 {
		return nil, errors.New("no copier command given")
	}
	scl, sadm, err := client(src)
	if err != nil {
		return nil, err
	}
	defer scl.Close()
	tcl, tadm, err := client(tgt)
	if err != nil {
		return nil, err
	}
	defer tcl.Close()
	ends, err := endOffsets(ctx, sadm, topic)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range ends {
		total += e
	}
	if td, err := tadm.ListTopics(ctx, topic); err != nil {
		return nil, err
	} else if td[topic].Err == nil {
		return nil, fmt.Errorf("target already has %s", topic)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if outFile != "" {
		f, err := os.Create(outFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout = f
	}
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stderr = f
	}
	watchStart := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
	}()
	pid := cmd.Process.Pid
	var t0 time.Time
	var cpu0 float64
	var sum0 int64
	var exists bool
	var polls int
	var maxPoll time.Duration
	for {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("timed out; copy window started=%v", !t0.IsZero())
		}
		pollStart := time.Now()
		var got map[int32]int64
		if !exists {
			// A metadata request answers at once for an unknown topic
			// (ListEndOffsets would retry it internally for seconds).
			td, err := tadm.ListTopics(ctx, topic)
			exists = err == nil && td[topic].Err == nil && len(td[topic].Partitions) == len(ends)
		}
		if exists {
			got, _ = endOffsets(ctx, tadm, topic)
		}
		polls++
		if os.Getenv("REPLBENCH_DEBUG") != "" {
			fmt.Fprintf(os.Stderr, "%.3f exists=%v sum=%d\n", time.Since(watchStart).Seconds(), exists, func() (t int64) {
				for _, v := range got {
					t += v
				}
				return
			}())
		}
		if d := time.Since(pollStart); d > maxPoll {
			maxPoll = d
		}
		var sum int64
		done := len(got) == len(ends)
		for p, e := range ends {
			sum += got[p]
			if got[p] < e {
				done = false
			}
		}
		now := time.Now()
		cpu, err := procCPU(pid)
		if err != nil {
			return nil, fmt.Errorf("copier process: %w", err)
		}
		select {
		case err := <-exited:
			exited <- err
			if !done {
				return nil, fmt.Errorf("copier exited before the copy was done: %v", err)
			}
		default:
		}
		if t0.IsZero() && sum > 0 {
			// The window opens at the first poll that sees records;
			// only the records copied after it count.
			t0, cpu0, sum0 = now, cpu, sum
			if done { // everything in one poll: too small to measure
				return nil, errors.New("copy finished within one poll; use more records")
			}
		}
		if done {
			if !kill {
				if err := <-exited; err != nil {
					return nil, fmt.Errorf("copier: %w", err)
				}
			}
			return map[string]any{
				"seconds": now.Sub(t0).Seconds(), "cpu_s": cpu - cpu0,
				"startup_s": t0.Sub(watchStart).Seconds(), "startup_cpu_s": cpu0,
				"records": total, "window_records": total - sum0,
				"polls": polls, "max_poll_ms": maxPoll.Seconds() * 1e3,
			}, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func deleteTopics(ctx context.Context, brokers, contains string) (any, error) {
	if len(contains) < 4 {
		return nil, errors.New("-contains must be a distinctive run id")
	}
	cl, adm, err := client(brokers)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	list, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, err
	}
	var del []string
	for _, t := range list.Names() {
		if strings.Contains(t, contains) {
			del = append(del, t)
		}
	}
	if len(del) > 0 {
		if _, err := adm.DeleteTopics(ctx, del...); err != nil {
			return nil, err
		}
	}
	return map[string]any{"deleted": del}, nil
}
