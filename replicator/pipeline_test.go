package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceSeen is one Produce request the target received from the copy.
type produceSeen struct {
	pid      int64
	seq      int32
	failedAs string // how the test failed it, "" if passed to the broker
}

// readAll returns a partition's records, in offset order, through a plain
// consumer.
func readAll(t *testing.T, addrs []string, topic string, partition int32, end int64) []*kgo.Record {
	t.Helper()
	if end == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) == 0 || out[len(out)-1].Offset < end-1 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatalf("reading %s/%d: %v", topic, partition, err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// A batch that fails in the middle of a full pipeline (the 3rd of 5 in
// flight, and again later) stops the copy session; the batches sent after
// it were already on the wire. The next session resyncs from the target
// log: the target ends up with every source record exactly once, in order,
// and the offset map is exact.
func TestErrorMidPipelineLeavesNoGapOrDuplicate(t *testing.T) {
	for _, mode := range []string{"error-code", "connection-reset"} {
		t.Run(mode, func(t *testing.T) {
			const batches, perBatch = 60, 5
			src, tgt := newClusters(t, kfake.SeedTopics(1, "pipe"))
			prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic("pipe"),
				kgo.RecordPartitioner(kgo.ManualPartitioner()))
			// One batch per ProduceSync call: the source holds 60 batches,
			// so the first fetch answer fills the pipeline.
			for b := 0; b < batches; b++ {
				var rs []*kgo.Record
				for i := 0; i < perBatch; i++ {
					rs = append(rs, &kgo.Record{Value: []byte(fmt.Sprintf("b%d-r%d", b, i))})
				}
				if err := prod.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			const total = batches * perBatch

			var mu sync.Mutex
			var seen []produceSeen
			tgt.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				tgt.KeepControl()
				pr := req.(*kmsg.ProduceRequest)
				raw := pr.Topics[0].Partitions[0].Records
				h, _ := parseHeader(raw)
				s := produceSeen{pid: h.producerID, seq: int32(uint32(raw[offFirstSequence])<<24 | uint32(raw[offFirstSequence+1])<<16 | uint32(raw[offFirstSequence+2])<<8 | uint32(raw[offFirstSequence+3]))}
				mu.Lock()
				defer mu.Unlock()
				n := len(seen) + 1
				if n == 3 || n == 20 {
					s.failedAs = mode
					seen = append(seen, s)
					if mode == "connection-reset" {
						return nil, errors.New("test: connection reset"), true
					}
					resp := pr.ResponseKind().(*kmsg.ProduceResponse)
					rt := kmsg.NewProduceResponseTopic()
					rt.Topic = pr.Topics[0].Topic
					rp := kmsg.NewProduceResponseTopicPartition()
					rp.Partition = pr.Topics[0].Partitions[0].Partition
					rp.ErrorCode = kerr.NotLeaderForPartition.Code
					rt.Partitions = append(rt.Partitions, rp)
					resp.Topics = append(resp.Topics, rt)
					return resp, nil, true
				}
				seen = append(seen, s)
				return nil, nil, false
			})

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"pipe"},
				StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond, FetchMaxWait: 5 * time.Millisecond})
			defer r.Stop()
			if err := r.WaitCopied(ctx, "pipe", 0, total); err != nil {
				t.Fatalf("copy did not finish: %v (status %+v)", err, r.Status())
			}

			// The pipeline was full: batches of the failed one's session
			// were sent after it, before its answer came back.
			mu.Lock()
			after := 0
			for i, s := range seen {
				if s.failedAs != "" && i == 2 {
					for _, s2 := range seen[i+1:] {
						if s2.pid == s.pid {
							after++
						}
					}
				}
			}
			mu.Unlock()
			// (A reset connection's later requests die unread in the
			// broker's socket: only the error-code mode can show them.)
			if mode == "error-code" && after < 2 {
				t.Fatalf("only %d batches of the failed batch's session followed it on the wire, want at least 2 (a pipeline): %+v", after, seen)
			}

			m := r.Map("pipe", 0)
			srcRecs := readAll(t, src.ListenAddrs(), "pipe", 0, total)
			tgtRecs := readAll(t, tgt.ListenAddrs(), "pipe", 0, m.TargetEnd())
			if len(tgtRecs) != total || m.TargetEnd() != total {
				t.Fatalf("target holds %d records (map target end %d), want %d: a gap or a duplicate", len(tgtRecs), m.TargetEnd(), total)
			}
			for i, tr := range tgtRecs {
				so, ok := m.ToSource(tr.Offset)
				if !ok || so != srcRecs[i].Offset || !bytes.Equal(tr.Value, srcRecs[i].Value) {
					t.Fatalf("target offset %d = %q maps to source %d (ok %v); source record %d is %q at %d", tr.Offset, tr.Value, so, ok, i, srcRecs[i].Value, srcRecs[i].Offset)
				}
				if to, ok := m.ToTarget(srcRecs[i].Offset); !ok || to != tr.Offset {
					t.Fatalf("source offset %d maps to target %d (ok %v), want %d", srcRecs[i].Offset, to, ok, tr.Offset)
				}
			}
			if m.SourceEnd() != total {
				t.Fatalf("map source end %d, want %d", m.SourceEnd(), total)
			}
		})
	}
}

// DeleteRecords on the source moves its log start; the next fetch answer
// carries it and the copy's map stops covering the deleted offsets, in
// memory and in the saved file.
func TestMapTrimmedAtSourceLogStart(t *testing.T) {
	pp := startPair(t, []string{"trim"}, 1, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: 20 * time.Millisecond})
	pp.produce(t, "trim", 0, 9)
	pp.waitCopied(t, "trim", 0, 10)
	adm := kadm.NewClient(pp.prod)
	var so kadm.Offsets
	so.AddOffset("trim", 0, 6, -1)
	res, err := adm.DeleteRecords(context.Background(), so)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	if m := pp.r.Map("trim", 0); m.SourceStart() != 0 {
		t.Fatalf("map start %d before any fetch saw the new log start", m.SourceStart())
	}
	pp.produce(t, "trim", 0, 2)
	pp.waitCopied(t, "trim", 0, 12)
	m := pp.r.Map("trim", 0)
	if m.SourceStart() != 6 {
		t.Fatalf("map start %d after DeleteRecords to 6, want 6", m.SourceStart())
	}
	if _, ok := m.ToTarget(5); ok {
		t.Fatal("a deleted source offset still maps")
	}
	if tg, ok := m.ToTarget(6); !ok || tg != 6 {
		t.Fatalf("source 6 maps to %d (%v), want 6", tg, ok)
	}
	pp.r.StopTopic("trim")
	saved, err := loadMapFile(pp.r.opts.StateDir, "trim", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, m, saved)
}
