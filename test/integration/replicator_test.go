package integration

// The replicator against the two real clusters: records, compression bytes,
// transactions and crashes. Each test uses fresh topic names and its own
// state directory; helpers are prefixed repl to keep out of other files' way.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/replicator"
)

func replTopic(prefix string) string {
	return fmt.Sprintf("repl-%s-%d", prefix, time.Now().UnixNano())
}

func replClient(t *testing.T, boot string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(boot)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func replCreateTopic(t *testing.T, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	adm := kadm.NewClient(replClient(t, env.source))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, partitions, 1, configs, topic); err != nil {
		t.Fatalf("creating source topic %s: %v", topic, err)
	}
}

func replStart(t *testing.T, dir string, hooks replicator.Hooks, topics ...string) *replicator.Replicator {
	t.Helper()
	r, err := replicator.New(replicator.Options{
		SourceBrokers: []string{env.source}, TargetBrokers: []string{env.target},
		Topics: topics, StateDir: dir,
		Logger:            hclog.New(&hclog.LoggerOptions{Name: "replicator", Level: hclog.Warn, Output: os.Stderr}),
		Registerer:        prometheus.NewRegistry(),
		PartitionMaxBytes: 64 << 10, FetchMaxWait: 200 * time.Millisecond, RetryBackoff: 200 * time.Millisecond,
		Hooks: hooks,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range r.Status() {
		if s.Partition < 0 {
			t.Fatalf("topic %s: %s", s.Topic, s.Err)
		}
	}
	return r
}

// replWait waits until the replicator has copied every partition of topic
// up to the source's current end offset.
func replWait(t *testing.T, r *replicator.Replicator, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(replClient(t, env.source)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if err := r.WaitCopied(ctx, topic, o.Partition, o.Offset); err != nil {
			t.Fatalf("%s/%d: waiting for offset %d: %v (status %+v)", topic, o.Partition, o.Offset, err, r.Status())
		}
	})
}

// replCompare checks that the target partition holds exactly the source's
// committed records, in order, and that the map translates every one.
func replCompare(t *testing.T, r *replicator.Replicator, topic string, partition int32, src []*kgo.Record) {
	t.Helper()
	tgt := replReadN(t, env.target, topic, partition, len(src))
	if len(tgt) != len(src) {
		t.Fatalf("%s/%d: target has %d records, source %d", topic, partition, len(tgt), len(src))
	}
	m := r.Map(topic, partition)
	for i, s := range src {
		g := tgt[i]
		if !bytes.Equal(s.Key, g.Key) || !bytes.Equal(s.Value, g.Value) || !s.Timestamp.Equal(g.Timestamp) || fmt.Sprint(s.Headers) != fmt.Sprint(g.Headers) {
			t.Fatalf("%s/%d record %d: source offset %d %q=%q @%v %v, target offset %d %q=%q @%v %v", topic, partition, i,
				s.Offset, s.Key, s.Value, s.Timestamp, s.Headers, g.Offset, g.Key, g.Value, g.Timestamp, g.Headers)
		}
		if to, ok := m.ToTarget(s.Offset); !ok || to != g.Offset {
			t.Fatalf("%s/%d: ToTarget(%d) = %d, %v; the record is at target %d", topic, partition, s.Offset, to, ok, g.Offset)
		}
		if back, ok := m.ToSource(g.Offset); !ok || back != s.Offset {
			t.Fatalf("%s/%d: ToSource(%d) = %d, %v; want %d", topic, partition, g.Offset, back, ok, s.Offset)
		}
	}
}

// replReadN reads exactly n records (or fails after a while).
func replReadN(t *testing.T, boot, topic string, partition int32, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := replClient(t, boot, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("reading %s: %v", topic, err) })
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	// Anything beyond n is a duplicate: look a little longer for it.
	shortCtx, c2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer c2()
	fs := cl.PollFetches(shortCtx)
	fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	return out
}

// replSourceRecords reads n committed records of a source partition.
func replSourceRecords(t *testing.T, topic string, partition int32, n int) []*kgo.Record {
	t.Helper()
	got := replReadN(t, env.source, topic, partition, n)
	if len(got) != n {
		t.Fatalf("source %s/%d: read %d records, want %d", topic, partition, len(got), n)
	}
	return got
}

// replProduce writes n records per partition in batches of batch records,
// with keys, headers and distinct timestamps.
func replProduce(t *testing.T, topic string, partitions int32, n, batch int, opts ...kgo.Opt) {
	t.Helper()
	cl := replClient(t, env.source, append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0)}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < n; i += batch {
			var rs []*kgo.Record
			for j := i; j < min(i+batch, n); j++ {
				rs = append(rs, &kgo.Record{
					Partition: p, Key: []byte(fmt.Sprintf("key-%d-%d", p, j)),
					Value:     bytes.Repeat([]byte(fmt.Sprintf("value %d/%d ", p, j)), 1+j%7),
					Headers:   []kgo.RecordHeader{{Key: "n", Value: []byte(strconv.Itoa(j))}},
					Timestamp: base.Add(time.Duration(j) * time.Millisecond),
				})
			}
			if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
				t.Fatalf("producing to %s: %v", topic, err)
			}
		}
	}
}

func TestReplicatorPlainTopic(t *testing.T) {
	topic := replTopic("plain")
	replCreateTopic(t, topic, 2, nil)
	replProduce(t, topic, 2, 500, 50, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	r := replStart(t, t.TempDir(), replicator.Hooks{}, topic)
	defer r.Stop()
	replWait(t, r, topic)
	for p := int32(0); p < 2; p++ {
		replCompare(t, r, topic, p, replSourceRecords(t, topic, p, 500))
	}
	// Records produced while the replicator runs arrive too.
	replProduce(t, topic, 2, 100, 10, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	replWait(t, r, topic)
	for _, s := range r.Status() {
		if s.Err != "" || s.LagRecords != 0 || s.CopiedThrough != 600 || s.TargetEnd != 600 {
			t.Errorf("status %+v", s)
		}
	}
	replCompare(t, r, topic, 0, replSourceRecords(t, topic, 0, 600))
}

// rawBatches fetches a partition's raw batches from a cluster's leader.
func rawBatches(t *testing.T, boot, topic string, partition int32) [][]byte {
	t.Helper()
	cl := replClient(t, boot)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	d := td[topic]
	var out [][]byte
	for offset := int64(0); ; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxBytes, req.SessionEpoch, req.IsolationLevel = -1, 10<<20, -1, 1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, d.ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = partition, offset, 10<<20
		rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := cl.Broker(int(d.Partitions[partition].Leader)).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		set := resp.(*kmsg.FetchResponse).Topics[0].Partitions[0].RecordBatches
		if len(set) == 0 {
			return out
		}
		for len(set) > 61 {
			n := int(binary.BigEndian.Uint32(set[8:])) + 12
			if n > len(set) {
				break
			}
			out = append(out, set[:n])
			offset = int64(binary.BigEndian.Uint64(set)) + int64(binary.BigEndian.Uint32(set[23:])) + 1
			set = set[n:]
		}
	}
}

func TestReplicatorCompressedBatchesArriveByteForByte(t *testing.T) {
	for _, c := range []struct {
		name  string
		codec kgo.CompressionCodec
		bits  byte
	}{{"lz4", kgo.Lz4Compression(), 3}, {"zstd", kgo.ZstdCompression(), 4}} {
		t.Run(c.name, func(t *testing.T) {
			topic := replTopic(c.name)
			replCreateTopic(t, topic, 1, map[string]*string{"compression.type": kadm.StringPtr("producer")})
			replProduce(t, topic, 1, 600, 60, kgo.ProducerBatchCompression(c.codec))
			r := replStart(t, t.TempDir(), replicator.Hooks{}, topic)
			defer r.Stop()
			replWait(t, r, topic)
			src, tgt := rawBatches(t, env.source, topic, 0), rawBatches(t, env.target, topic, 0)
			// kgo may split a ProduceSync call into several batches; the
			// target must have the same batches, whatever their number.
			if len(src) < 10 || len(tgt) != len(src) {
				t.Fatalf("%d source batches, %d target batches; want the same, at least 10", len(src), len(tgt))
			}
			// kgo sends a batch uncompressed when compressing does not
			// shrink it (a batch of one small record, say): each target
			// batch has its source batch's codec, and most are c's.
			compressed := 0
			for i := range src {
				s, g := src[i], tgt[i]
				if g[22]&7 != s[22]&7 {
					t.Fatalf("batch %d: codec bits %d on the target, %d on the source", i, g[22]&7, s[22]&7)
				}
				if s[22]&7 == c.bits {
					compressed++
				}
			}
			if compressed < len(src)/2 {
				t.Fatalf("only %d of %d source batches use codec %d: the test copies too few compressed batches", compressed, len(src), c.bits)
			}
			sameBeyondProducerFields(t, src, tgt)
			replCompare(t, r, topic, 0, replSourceRecords(t, topic, 0, 600))
		})
	}
}

// sameBeyondProducerFields fails unless the target's raw batches are the
// source's but for what the copy rewrites: the first offset, the leader
// epoch and CRC, the producer id, epoch and first sequence (the batch
// length 8-11, attributes and timestamps 21-42, and the record count and
// records from 57 are unchanged).
func sameBeyondProducerFields(t *testing.T, src, tgt [][]byte) {
	t.Helper()
	for i := range src {
		s, g := src[i], tgt[i]
		if !bytes.Equal(s[8:12], g[8:12]) || !bytes.Equal(s[21:43], g[21:43]) || !bytes.Equal(s[57:], g[57:]) {
			t.Fatalf("batch %d: bytes differ beyond the producer fields", i)
		}
	}
}

func TestReplicatorTransactions(t *testing.T) {
	topic := replTopic("txn")
	replCreateTopic(t, topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var prods [2]*kgo.Client
	for i := range prods {
		prods[i] = replClient(t, env.source, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
			kgo.TransactionalID(fmt.Sprintf("%s-p%d", topic, i)), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	committed := 0
	for round := 0; round < 12; round++ {
		for i, cl := range prods {
			if err := cl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			for j := 0; j < 5; j++ {
				rec := &kgo.Record{Key: []byte(fmt.Sprintf("p%d-r%d-%d", i, round, j)), Value: []byte("v")}
				if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Interleaved: both transactions are open together; producer 0
		// aborts every third round, producer 1 every other round.
		for i, cl := range prods {
			commit := kgo.TryCommit
			if (i == 0 && round%3 == 0) || (i == 1 && round%2 == 1) {
				commit = kgo.TryAbort
			} else {
				committed += 5
			}
			if err := cl.EndTransaction(ctx, commit); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A plain record after the last markers.
	plain := replClient(t, env.source, kgo.DefaultProduceTopic(topic))
	if err := plain.ProduceSync(ctx, &kgo.Record{Key: []byte("plain"), Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	committed++

	r := replStart(t, t.TempDir(), replicator.Hooks{}, topic)
	defer r.Stop()
	replWait(t, r, topic)
	src := replSourceRecords(t, topic, 0, committed)
	replCompare(t, r, topic, 0, src)
	m := r.Map(topic, 0)
	if m.TargetEnd() != int64(committed) {
		t.Errorf("target end %d, want %d committed records", m.TargetEnd(), committed)
	}
	// Markers and aborted records map to the next committed record.
	for i := 1; i < len(src); i++ {
		for off := src[i-1].Offset + 1; off < src[i].Offset; off++ {
			if got, _ := m.ToTarget(off); got != int64(i) {
				t.Fatalf("gap offset %d maps to target %d, want %d", off, got, i)
			}
		}
	}
	t.Logf("%d committed records over %d source offsets, %d runs", committed, m.SourceEnd(), m.Runs())
}

func TestReplicatorCrashesCopyExactlyOnce(t *testing.T) {
	topic := replTopic("crash")
	replCreateTopic(t, topic, 2, nil)
	// Enough batches that five interrupted rounds cannot copy them all
	// (a stop round copies on until Stop lands: 260 batches in one CI run,
	// with 300 in all, left the last round nothing to do).
	const n = 6000
	replProduce(t, topic, 2, n, 10, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for round := 0; round < 5; round++ {
		var produced atomic.Int64
		stopAt := int64(1 + rng.IntN(30))
		kill := round%2 == 0
		var crashed atomic.Bool
		// A kill round: from the stopAt-th produce on, every partition
		// stops right after its produce, before its map records it. A stop
		// round: Stop() lands wherever the copy loops are.
		r := replStart(t, dir, replicator.Hooks{AfterProduce: func(string, int32) bool {
			if n := produced.Add(1); kill && (n >= stopAt || crashed.Load()) {
				crashed.Store(true)
				return true
			}
			return false
		}}, topic)
		for deadline := time.Now().Add(30 * time.Second); produced.Load() < stopAt && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if produced.Load() < stopAt {
			t.Fatalf("round %d: only %d produces", round, produced.Load())
		}
		r.Stop() // the rest stops wherever it is
		t.Logf("round %d: kill=%v at produce %d; %d produces in all", round, kill, stopAt, produced.Load())
	}
	r := replStart(t, dir, replicator.Hooks{}, topic)
	defer r.Stop()
	replWait(t, r, topic)
	for p := int32(0); p < 2; p++ {
		replCompare(t, r, topic, p, replSourceRecords(t, topic, p, n))
	}
}

func TestReplicatorRefusesForeignWrites(t *testing.T) {
	topic := replTopic("foreign")
	replCreateTopic(t, topic, 1, nil)
	replProduce(t, topic, 1, 50, 10)
	dir := t.TempDir()
	r := replStart(t, dir, replicator.Hooks{}, topic)
	replWait(t, r, topic)
	r.Stop()
	// Someone else writes into the target partition.
	tc := replClient(t, env.target, kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tc.ProduceSync(ctx, &kgo.Record{Value: []byte("intruder")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	replProduce(t, topic, 1, 10, 10)
	r = replStart(t, dir, replicator.Hooks{}, topic)
	defer r.Stop()
	err := r.WaitCopied(ctx, topic, 0, 60)
	var fe *replicator.FatalError
	if !errors.As(err, &fe) {
		t.Fatalf("WaitCopied = %v, want a FatalError about a foreign writer", err)
	}
	t.Logf("refused as expected: %v", err)
}
