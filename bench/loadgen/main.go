// Command loadgen is the load generator behind `make bench` (bench/run.sh).
// Each subcommand runs one measurement against one bootstrap address (a
// broker directly, or kproxy) and prints its result as one JSON object on
// stdout, so run.sh can put direct and proxied numbers side by side.
//
//	loadgen create  -brokers B -topics t1,t2 -partitions 6
//	loadgen produce -brokers B -topic T -n 300000 -size 1024
//	loadgen latency -brokers B -topic T -rate 5000 -duration 15s -size 1024
//	loadgen consume -brokers B -topic T
//	loadgen delete  -brokers B -prefix bench-<id>-
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen create|produce|latency|consume|delete [flags]")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:19092", "bootstrap address")
	topic := fs.String("topic", "", "topic")
	topics := fs.String("topics", "", "comma-separated topics (create)")
	prefix := fs.String("prefix", "", "delete every topic with this prefix (delete)")
	partitions := fs.Int("partitions", 6, "partitions (create)")
	n := fs.Int("n", 300000, "records (produce)")
	size := fs.Int("size", 1024, "record value size in bytes")
	linger := fs.Duration("linger", 5*time.Millisecond, "producer linger (produce)")
	rate := fs.Int("rate", 5000, "records per second (latency)")
	duration := fs.Duration("duration", 15*time.Second, "duration (latency)")
	timeout := fs.Duration("timeout", 120*time.Second, "overall timeout")
	caFile := fs.String("tls-ca", "", "connect over TLS, trusting this CA bundle (PEM)")
	mech := fs.String("sasl", "", "SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
	saslUser := fs.String("sasl-user", "", "SASL user")
	passFile := fs.String("sasl-password-file", "", "file holding the SASL password")
	clients := fs.Int("clients", 1, "producer clients, each with its own connections (produce, hold)")
	_ = fs.Parse(args)
	if err := setSecurity(*caFile, *mech, *saslUser, *passFile); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", cmd, err)
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var out any
	var err error
	switch cmd {
	case "create":
		out, err = create(ctx, *brokers, strings.Split(*topics, ","), *partitions)
	case "delete":
		out, err = deleteTopics(ctx, *brokers, *prefix)
	case "produce":
		out, err = produceClients(ctx, *brokers, *topic, *n, *size, *linger, *clients)
	case "hold":
		out, err = hold(ctx, *brokers, *clients, *duration)
	case "latency":
		out, err = latency(ctx, *brokers, *topic, *rate, *duration, *size)
	case "consume":
		out, err = consume(ctx, *brokers, *topic)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", cmd, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

// security holds the TLS and SASL options of every client (none: plaintext).
var security []kgo.Opt

// setSecurity builds them the way kproxy builds its upstream ones, so the
// direct path and kproxy's own connections use the same TLS and SASL code.
func setSecurity(caFile, mech, user, passFile string) error {
	var cc config.ClusterConfig
	if caFile != "" {
		cc.TLS = &config.ClientTLS{CAFile: caFile}
	}
	if mech != "" {
		cc.SASL = &config.ClientSASL{Mechanism: mech, Username: user, PasswordFile: passFile}
	}
	u, err := secure.UpstreamFor(&cc)
	if err != nil {
		return err
	}
	security = u.KgoOpts()
	return nil
}

// newClient is kgo.NewClient with the seed brokers and the security options.
func newClient(brokers string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(brokers)}, security...), opts...)...)
}

func admin(brokers string) (*kadm.Client, *kgo.Client, error) {
	cl, err := newClient(brokers)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl, nil
}

func create(ctx context.Context, brokers string, topics []string, partitions int) (any, error) {
	adm, cl, err := admin(brokers)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	resp, err := adm.CreateTopics(ctx, int32(partitions), -1, nil, topics...)
	if err != nil {
		return nil, err
	}
	if err := resp.Error(); err != nil {
		return nil, err
	}
	return map[string]any{"created": topics}, nil
}

func deleteTopics(ctx context.Context, brokers, prefix string) (any, error) {
	if prefix == "" {
		return nil, fmt.Errorf("-prefix is required")
	}
	adm, cl, err := admin(brokers)
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
		if strings.HasPrefix(t, prefix) {
			del = append(del, t)
		}
	}
	if len(del) > 0 {
		resp, err := adm.DeleteTopics(ctx, del...)
		if err != nil {
			return nil, err
		}
		if err := resp.Error(); err != nil {
			return nil, err
		}
	}
	return map[string]any{"deleted": del}, nil
}

func payload(size int) []byte {
	b := make([]byte, size)
	_, _ = rand.Read(b) // incompressible; compression is off anyway
	return b
}

// produceClients runs produce on clients clients at once (n/clients
// records each, so clients × the connections of one), as a fleet of
// producers does, and reports the combined throughput.
func produceClients(ctx context.Context, brokers, topic string, n, size int, linger time.Duration, clients int) (any, error) {
	if clients <= 1 {
		return produce(ctx, brokers, topic, n, size, linger)
	}
	per := n / clients
	errs := make(chan error, clients)
	start := time.Now()
	for i := 0; i < clients; i++ {
		go func() {
			_, err := produce(ctx, brokers, topic, per, size, linger)
			errs <- err
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	secs := time.Since(start).Seconds()
	bytes := float64(per*clients) * float64(size)
	return map[string]any{
		"clients": clients, "records": per * clients, "bytes": bytes, "seconds": secs,
		"mb_per_s": bytes / 1e6 / secs, "records_per_s": float64(per*clients) / secs,
	}, nil
}

// hold opens clients clients, each with a connection to every broker (a
// metadata request, then an ApiVersions-only ping of each), keeps them
// open for dur and closes them: for measuring a proxy's memory per idle
// connection from outside. It prints when the connections are up (on
// stderr: "holding N") so a caller can sample in the window.
func hold(ctx context.Context, brokers string, clients int, dur time.Duration) (any, error) {
	var cls []*kgo.Client
	defer func() {
		for _, cl := range cls {
			cl.Close()
		}
	}()
	for i := 0; i < clients; i++ {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
		if err != nil {
			return nil, err
		}
		cls = append(cls, cl)
		if err := cl.Ping(ctx); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "holding %d\n", clients)
	select {
	case <-time.After(dur):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return map[string]any{"clients": clients, "bytes": 0}, nil
}

// produce sends n records of size bytes as fast as the producer allows
// (acks=all, no compression) and reports throughput from first send to
// last ack.
func produce(ctx context.Context, brokers, topic string, n, size int, linger time.Duration) (any, error) {
	cl, err := newClient(brokers,
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(30*time.Second),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(linger),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(20000),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return nil, err
	}
	val := payload(size)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		cl.Produce(ctx, &kgo.Record{Value: val}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			wg.Done()
		})
	}
	if err := waitCtx(ctx, &wg); err != nil {
		return nil, err
	}
	secs := time.Since(start).Seconds()
	if f := failed.Load(); f > 0 {
		return nil, fmt.Errorf("%d of %d records failed, first: %v", f, n, firstErr.Load())
	}
	bytes := float64(n) * float64(size)
	return map[string]any{
		"records": n, "bytes": bytes, "seconds": secs,
		"mb_per_s": bytes / 1e6 / secs, "records_per_s": float64(n) / secs,
	}, nil
}

// latency produces at a fixed rate for a fixed time and reports the
// per-record time from Produce to its promise (ack, acks=all). Linger is
// 0 so the numbers are the path's latency, not the batching delay.
func latency(ctx context.Context, brokers, topic string, rate int, dur time.Duration, size int) (any, error) {
	cl, err := newClient(brokers,
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(30*time.Second),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return nil, err
	}
	val := payload(size)
	// Warm up: one record per partition so metadata and connections exist.
	for i := 0; i < 12; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr(); err != nil {
			return nil, err
		}
	}
	total := int(float64(rate) * dur.Seconds())
	lat := make([]time.Duration, total)
	var failed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(total)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		i := i
		t0 := time.Now()
		cl.Produce(ctx, &kgo.Record{Value: val}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			lat[i] = time.Since(t0)
			wg.Done()
		})
	}
	sendSecs := time.Since(start).Seconds()
	if err := waitCtx(ctx, &wg); err != nil {
		return nil, err
	}
	if f := failed.Load(); f > 0 {
		return nil, fmt.Errorf("%d of %d records failed", f, total)
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	q := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	return map[string]any{
		"records": total, "achieved_rate": float64(total) / sendSecs,
		"p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": q(1),
		"bytes": float64(total) * float64(size),
	}, nil
}

// consume reads the topic from the start to its end offsets (taken before
// consuming starts) and reports throughput.
func consume(ctx context.Context, brokers, topic string) (any, error) {
	adm, acl, err := admin(brokers)
	if err != nil {
		return nil, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	acl.Close()
	if err != nil {
		return nil, err
	}
	if err := ends.Error(); err != nil {
		return nil, err
	}
	want := map[int32]int64{}
	offs := map[string]map[int32]kgo.Offset{topic: {}}
	var remaining int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			remaining += o.Offset
		}
		offs[topic][o.Partition] = kgo.NewOffset().AtStart()
	})
	cl, err := newClient(brokers,
		kgo.ConsumePartitions(offs),
		kgo.FetchMaxBytes(64<<20),
		kgo.FetchMaxPartitionBytes(8<<20),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	total := remaining
	var records, bytes int64
	start := time.Now()
	for remaining > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("consume: %d records still missing: %w", remaining, err)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("%s/%d: %w", t, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < want[r.Partition] {
				records++
				remaining--
				bytes += int64(len(r.Value) + len(r.Key))
			}
		})
	}
	secs := time.Since(start).Seconds()
	return map[string]any{
		"records": total, "bytes": float64(bytes), "seconds": secs,
		"mb_per_s": float64(bytes) / 1e6 / secs, "records_per_s": float64(records) / secs,
	}, nil
}

// waitCtx waits for wg, or fails when ctx ends first (e.g. the proxy died
// and records can never be acknowledged).
func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("records still unacknowledged: %w", ctx.Err())
	}
}
