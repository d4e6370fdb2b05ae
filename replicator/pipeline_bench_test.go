package replicator

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeProduceBroker answers every Produce on a connection with success at
// consecutive base offsets, as fast as it can (no disk): what is left is
// the copy's own cost per batch.
func fakeProduceBroker(tb testing.TB, ver int16) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br := bufio.NewReaderSize(nc, 1<<20)
				bw := bufio.NewWriter(nc)
				var frame, out []byte
				var next int64
				// One answer, reused: only its base offset changes (the
				// fake's own allocations would count in the benchmark).
				resp := kmsg.NewPtrProduceResponse()
				resp.Version = ver
				rt := kmsg.NewProduceResponseTopic()
				rt.Topic = "bench"
				rt.Partitions = append(rt.Partitions, kmsg.NewProduceResponseTopicPartition())
				resp.Topics = append(resp.Topics, rt)
				for {
					var err error
					if frame, err = readFrame(br, frame, 64<<20); err != nil {
						return
					}
					corr := int32(binary.BigEndian.Uint32(frame[4:]))
					resp.Topics[0].Partitions[0].BaseOffset = next
					next++ // every batch holds one record
					out = out[:0]
					out = append(out, 0, 0, 0, 0)
					out = kbin.AppendInt32(out, corr)
					if resp.IsFlexible() {
						out = append(out, 0)
					}
					out = resp.AppendTo(out)
					binary.BigEndian.PutUint32(out, uint32(len(out)-4))
					if _, err := bw.Write(out); err != nil {
						return
					}
					if br.Buffered() == 0 {
						if err := bw.Flush(); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkPipelineBatch is the per-batch cost of the copy's produce side
// in steady state (header patch, CRC, request encoding, pipelined write,
// answer decoding, map update): run with -benchmem; allocs/op is per
// batch. The fake broker answers at one-record batches.
func BenchmarkPipelineBatch(b *testing.B) {
	const ver = 9
	addr := fakeProduceBroker(b, ver)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := newProduceConn(nc, nil, 1, ver, defaultProduceTimeout, 1024)
	defer c.fail(io.EOF)
	r := &Replicator{}
	p := &partition{topic: "bench", partition: 0, records: prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}), bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}), writes: &Writes{}}
	m := NewOffsetMap(MapMeta{Topic: "bench"}, 0, 0)
	pl := newPipeline(r, p, m, c, [16]byte{}, 0, nil)
	// A 16 KiB one-record source batch, as a fetch answer holds it.
	src := makeBatch(b, 0, 0, 0, -1, []testRec{{val: strings.Repeat("v", 16<<10)}})
	buf := make([]byte, len(src))
	sess := producerSession{pid: 7}
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	from := int64(0)
	for b.Loop() {
		copy(buf, src)
		binary.BigEndian.PutUint64(buf[offFirstOffset:], uint64(from))
		// The source batch's CRC covers its own header; recompute for the
		// new first offset is not needed (offset is outside the CRC).
		pb, err := prepareBatch(buf, from, sess)
		if err != nil {
			b.Fatal(err)
		}
		if err := pl.send(pb, from+1); err != nil {
			b.Fatal(err)
		}
		from++
		sess.seq++
		if pl.n == maxInFlight {
			if err := pl.applyOldest(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := pl.flush(); err != nil {
		b.Fatal(err)
	}
}
