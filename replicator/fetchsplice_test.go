package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// produceMixed writes rounds pairs of batches to a source partition: a
// large one (spliced: 48 records of 4 KiB, about 200 KiB) and a small one
// (kept in memory), each ProduceSync one batch. Values are random, so a
// body that went wrong anywhere shows.
func produceMixed(t *testing.T, cl *kgo.Client, topic string, partition int32, rounds int, rng *rand.Rand) int {
	t.Helper()
	n := 0
	for i := 0; i < rounds; i++ {
		for _, size := range []struct{ recs, bytes int }{{48, 4 << 10}, {3, 50}} {
			rs := make([]*kgo.Record, size.recs)
			for j := range rs {
				v := make([]byte, size.bytes)
				for k := range v {
					v[k] = byte(rng.Uint32())
				}
				rs[j] = &kgo.Record{Topic: topic, Partition: partition, Key: []byte(fmt.Sprintf("k%d-%d", i, j)), Value: v,
					Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{byte(j)}}}}
			}
			if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			n += size.recs
		}
	}
	return n
}

// rawBatches fetches a partition's batches [0, end) as the broker stores
// them.
func rawBatches(t *testing.T, cl *kgo.Client, topic string, partition int32, end int64) [][]byte {
	t.Helper()
	var out [][]byte
	for next := int64(0); next < end; {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 10, 8<<20
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = topic
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes = partition, next, 8<<20
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp, err := req.RequestWith(context.Background(), cl)
		if err != nil {
			t.Fatal(err)
		}
		bs := splitRecordSet(nil, resp.Topics[0].Partitions[0].RecordBatches)
		if len(bs) == 0 {
			t.Fatalf("%s/%d: no batch at offset %d (end %d)", topic, partition, next, end)
		}
		for _, b := range bs {
			h, _ := parseHeader(b)
			out = append(out, bytes.Clone(b))
			next = h.lastOffset() + 1
		}
	}
	return out
}

// checkCopiedExactly checks that the target partition holds the source's
// records exactly once and in order, batch for batch with the same record
// bytes and valid CRCs (a spliced batch's CRC is derived, never computed
// over the body), and that the offset map is exact.
func checkCopiedExactly(t *testing.T, r *Replicator, src, tgt *kfake.Cluster, topic string, partition int32, total int64) {
	t.Helper()
	m := r.Map(topic, partition)
	if m.TargetEnd() != total || m.SourceEnd() != total {
		t.Fatalf("%s/%d: map ends source %d target %d, want %d", topic, partition, m.SourceEnd(), m.TargetEnd(), total)
	}
	direct := func(c *kfake.Cluster) *kgo.Client {
		return newClient(t, c.ListenAddrs(), kgo.MaxVersions(kversion.V3_0_0()))
	}
	sb := rawBatches(t, direct(src), topic, partition, total)
	tb := rawBatches(t, direct(tgt), topic, partition, total)
	if len(sb) != len(tb) {
		t.Fatalf("%s/%d: source has %d batches, target %d", topic, partition, len(sb), len(tb))
	}
	for i := range sb {
		if !batchCRCValid(tb[i]) {
			t.Fatalf("%s/%d: target batch %d fails its CRC", topic, partition, i)
		}
		if !bytes.Equal(sb[i][batchHeaderLen:], tb[i][batchHeaderLen:]) || !bytes.Equal(sb[i][offLength:offLength+4], tb[i][offLength:offLength+4]) {
			t.Fatalf("%s/%d: target batch %d (%d bytes) differs from the source's (%d bytes)", topic, partition, i, len(tb[i]), len(sb[i]))
		}
	}
	srcRecs := readAll(t, src.ListenAddrs(), topic, partition, total)
	tgtRecs := readAll(t, tgt.ListenAddrs(), topic, partition, total)
	if len(srcRecs) != int(total) || len(tgtRecs) != int(total) {
		t.Fatalf("%s/%d: %d source and %d target records, want %d", topic, partition, len(srcRecs), len(tgtRecs), total)
	}
	for i, tr := range tgtRecs {
		sr := srcRecs[i]
		if so, ok := m.ToSource(tr.Offset); !ok || so != sr.Offset || !bytes.Equal(tr.Value, sr.Value) || !bytes.Equal(tr.Key, sr.Key) {
			t.Fatalf("%s/%d: target record at %d (key %q) maps to source %d (%v); source record %d is key %q", topic, partition, tr.Offset, tr.Key, so, ok, i, sr.Key)
		}
	}
}

func splicedBatches(r *Replicator) float64 {
	var m dto.Metric
	if err := r.metrics.splicedBatches.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// A copy of mixed large and small batches splices the large ones' bodies
// socket to socket, for every Fetch answer layout the stream reader knows
// (v4-v6 without the newer fields, v7+ sessions, v11 read replicas, v12
// flexible, v13+ topic ids), and the target holds the source's batches
// byte for byte, exactly once, in order. With NoSplice nothing is spliced
// and the copy is the same. The counter check fails when the splice path
// is off; the byte check when it is broken.
func TestSplicedCopyMixedBatches(t *testing.T) {
	for _, c := range []struct {
		name     string
		fetchMax int16
		noSplice bool
	}{{"v4", 4, false}, {"v7", 7, false}, {"v11", 11, false}, {"v12", 12, false}, {"newest", -1, false}, {"nosplice", -1, true}} {
		t.Run(c.name, func(t *testing.T) {
			var opts []kfake.Opt
			if c.fetchMax >= 0 {
				v := kversion.Stable()
				v.SetMaxKeyVersion(int16(kmsg.Fetch), c.fetchMax)
				opts = append(opts, kfake.MaxVersions(v))
			}
			src, tgt := newClusters(t, append(opts, kfake.SeedTopics(2, "mix"))...)
			prod := newClient(t, src.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()),
				kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxVersions(kversion.V3_0_0()))
			rng := rand.New(rand.NewPCG(1, uint64(c.fetchMax)))
			var totals [2]int64
			for p := int32(0); p < 2; p++ {
				totals[p] = int64(produceMixed(t, prod, "mix", p, 6, rng))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"mix"},
				StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond, NoSplice: c.noSplice})
			defer r.Stop()
			for p := int32(0); p < 2; p++ {
				if err := r.WaitCopied(ctx, "mix", p, totals[p]); err != nil {
					t.Fatalf("copy did not finish: %v (status %+v)", err, r.Status())
				}
				checkCopiedExactly(t, r, src, tgt, "mix", p, totals[p])
			}
			n := splicedBatches(r)
			if c.noSplice && n != 0 {
				t.Fatalf("%v batches spliced with NoSplice", n)
			}
			if !c.noSplice && n < 2*6 {
				t.Fatalf("%v batches spliced, want the 12 large ones", n)
			}
			r.Stop()
			if n := r.pipes.InUse(); n != 0 {
				t.Fatalf("%d pipes still out of the pool after Stop", n)
			}
		})
	}
}

// cutListener wraps a kfake broker's listener: its connections can be cut
// in the middle of a large answer written (the source: the copy is
// splicing the body from the socket) or a large request read (the target:
// the copy is splicing the body into the socket).
type cutListener struct {
	net.Listener
	cutWrites atomic.Int32 // cut the connection in the middle of the next n large answers
	cutReads  atomic.Int32 // ... of the next n large requests
	cuts      atomic.Int32
}

func (l *cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, l: l}, nil
}

type cutConn struct {
	net.Conn
	l *cutListener
}

var errCut = errors.New("test: connection cut")

func take(n *atomic.Int32) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (c *cutConn) Write(b []byte) (int, error) {
	if len(b) > spliceMinBytes && take(&c.l.cutWrites) {
		c.l.cuts.Add(1)
		n, _ := c.Conn.Write(b[:len(b)/2])
		c.Conn.Close()
		return n, errCut
	}
	return c.Conn.Write(b)
}

func (c *cutConn) Read(b []byte) (int, error) {
	if len(b) > spliceMinBytes && take(&c.l.cutReads) {
		c.l.cuts.Add(1)
		n, _ := c.Conn.Read(b[:len(b)/3])
		c.Conn.Close()
		return n, errCut
	}
	return c.Conn.Read(b)
}

// Connections dropped while a batch body is being spliced, on the source
// side (the answer cut in the middle of a large batch) and on the target
// side (the produce request cut in the middle of its body): the copy
// starts its session again from the map, and the target holds every
// record once, in order; no pipe is left out of the pool.
func TestSplicedCopyConnectionDroppedMidSplice(t *testing.T) {
	for _, side := range []string{"source", "target"} {
		t.Run(side, func(t *testing.T) {
			var cl *cutListener
			listen := kfake.ListenFn(func(network, address string) (net.Listener, error) {
				ln, err := net.Listen(network, address)
				if err != nil {
					return nil, err
				}
				cl = &cutListener{Listener: ln}
				return cl, nil
			})
			var src, tgt *kfake.Cluster
			var err error
			srcOpts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "drop")}
			tgtOpts := []kfake.Opt{kfake.NumBrokers(1)}
			if side == "source" {
				srcOpts = append(srcOpts, listen)
			} else {
				tgtOpts = append(tgtOpts, listen)
			}
			if src, err = kfake.NewCluster(srcOpts...); err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if tgt, err = kfake.NewCluster(tgtOpts...); err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			prod := newClient(t, src.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()),
				kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxVersions(kversion.V3_0_0()))
			total := int64(produceMixed(t, prod, "drop", 0, 8, rand.New(rand.NewPCG(2, 3))))
			// The cuts are armed after the producer's own large requests
			// went through the source's listener.
			if side == "source" {
				cl.cutWrites.Store(2)
			} else {
				cl.cutReads.Store(2)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"drop"},
				StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond, PartitionMaxBytes: 512 << 10})
			defer r.Stop()
			if err := r.WaitCopied(ctx, "drop", 0, total); err != nil {
				t.Fatalf("copy did not finish: %v (status %+v)", err, r.Status())
			}
			if n := cl.cuts.Load(); n != 2 {
				t.Fatalf("%d connections cut mid-batch, want 2", n)
			}
			checkCopiedExactly(t, r, src, tgt, "drop", 0, total)
			if splicedBatches(r) == 0 {
				t.Fatal("no batch spliced")
			}
			r.Stop()
			if n := r.pipes.InUse(); n != 0 {
				t.Fatalf("%d pipes still out of the pool after Stop", n)
			}
		})
	}
}

// putPaddedUvarint writes a value that kmsg's reader takes back whatever
// the room: a record set's length field keeps its width when it shrinks.
func TestPaddedUvarint(t *testing.T) {
	for _, c := range []struct {
		v     uint32
		width int
	}{{0, 1}, {5, 1}, {5, 3}, {127, 2}, {128, 2}, {1 << 20, 3}, {1 << 20, 5}, {300, 4}} {
		b := make([]byte, c.width)
		putPaddedUvarint(b, c.v)
		if got, n := kbin.Uvarint(b); got != c.v || n != c.width {
			t.Fatalf("%d in %d bytes read back as %d in %d bytes", c.v, c.width, got, n)
		}
	}
}

// The target refusing a spliced batch as corrupt (its body never passed
// through the copy to be checked) turns splicing off for the partition:
// the next session reads its batches into memory, where a corrupt source
// batch would be found and reported; a sound one is copied.
func TestSplicedBatchRefusedAsCorruptIsCopiedFromMemory(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(1, "corrupt"))
	prod := newClient(t, src.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxVersions(kversion.V3_0_0()))
	total := int64(produceMixed(t, prod, "corrupt", 0, 3, rand.New(rand.NewPCG(7, 8))))
	var refused atomic.Int32
	tgt.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if len(pr.Topics[0].Partitions[0].Records) < spliceMinBytes || !refused.CompareAndSwap(0, 1) {
			return nil, nil, false
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = pr.Topics[0].Topic
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.ErrorCode = kerr.CorruptMessage.Code
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"corrupt"},
		StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond})
	defer r.Stop()
	if err := r.WaitCopied(ctx, "corrupt", 0, total); err != nil {
		t.Fatalf("copy did not finish: %v (status %+v)", err, r.Status())
	}
	if refused.Load() != 1 {
		t.Fatal("no large batch reached the target")
	}
	r.mu.Lock()
	p := r.parts[topicPartition{"corrupt", 0}]
	r.mu.Unlock()
	if !p.noSplice.Load() {
		t.Fatal("splicing still on for the partition after the target refused a spliced batch as corrupt")
	}
	checkCopiedExactly(t, r, src, tgt, "corrupt", 0, total)
}
