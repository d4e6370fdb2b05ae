package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchCase is an upstream Fetch answer for partitions 0..n-1 of benchTopic,
// built per version.
type fetchCase struct {
	name   string
	parts  int32
	minVer int16
	build  func(ver int16) []byte
	// streams: the relay streams this answer at a commit size of 32 KiB
	// (false: it must go the buffered way, or it is too small).
	streams bool
	// closes: the commit sizes at which the relay commits and then meets
	// something it cannot patch in place, so the client connection is
	// closed instead of answered.
	closes []int
}

// epochBatch is benchBatch with a real PartitionLeaderEpoch (the relay
// must clear it) and a transactional/control flavour when asked.
func epochBatch(n, size int, epoch int32) []byte {
	b := benchBatch(n, size)
	binary.BigEndian.PutUint32(b[12:], uint32(epoch))
	return b
}

func answerWith(ver int16, parts []kmsg.FetchResponseTopicPartition) []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(ver)
	resp.ThrottleMillis = 3
	t := kmsg.NewFetchResponseTopic()
	t.Topic, t.TopicID = benchTopic, memTopicID
	t.Partitions = parts
	resp.Topics = []kmsg.FetchResponseTopic{t}
	return resp.AppendTo(nil)
}

func dataPart(p int32, records []byte) kmsg.FetchResponseTopicPartition {
	rp := kmsg.NewFetchResponseTopicPartition()
	rp.Partition, rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = p, 5000+int64(p), 4000+int64(p), 7
	rp.RecordBatches = records
	return rp
}

func fetchCases() []fetchCase {
	big := epochBatch(70, 1024, 9) // body over spliceMin: socket to socket
	mid := epochBatch(40, 1024, 9) // over the commit size, through staging
	small := epochBatch(2, 100, 9) // under the commit size
	two := append(append([]byte(nil), mid...), epochBatch(3, 500, 4)...)
	truncated := append(append([]byte(nil), big...), mid[:300]...) // KIP-74: a partial last batch
	return []fetchCase{
		{name: "plain", parts: 3, streams: true, build: func(v int16) []byte {
			return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, big), dataPart(1, mid), dataPart(2, two)})
		}},
		{name: "empty_null_small_then_big", parts: 5, streams: true, build: func(v int16) []byte {
			p0 := dataPart(0, []byte{})
			p1 := dataPart(1, nil)
			return answerWith(v, []kmsg.FetchResponseTopicPartition{p0, p1, dataPart(2, small), dataPart(3, big), dataPart(4, small)})
		}},
		{name: "aborted_transactions", parts: 2, minVer: 4, streams: true, build: func(v int16) []byte {
			p0 := dataPart(0, big)
			for i := int64(0); i < 3; i++ {
				a := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
				a.ProducerID, a.FirstOffset = 1000+i, 10*i
				p0.AbortedTransactions = append(p0.AbortedTransactions, a)
			}
			p1 := dataPart(1, mid)
			p1.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
			return answerWith(v, []kmsg.FetchResponseTopicPartition{p0, p1})
		}},
		{name: "truncated_last_batch", parts: 2, streams: true, build: func(v int16) []byte {
			return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, truncated), dataPart(1, small)})
		}},
		{name: "errors_after_commit", parts: 4, streams: true, build: func(v int16) []byte {
			p1 := dataPart(1, []byte{})
			p1.ErrorCode = kerr.OffsetOutOfRange.Code
			p2 := dataPart(2, []byte{})
			p2.ErrorCode, p2.HighWatermark, p2.LastStableOffset, p2.LogStartOffset = kerr.NotLeaderForPartition.Code, -1, -1, -1
			if v >= 12 {
				p2.CurrentLeader.LeaderID, p2.CurrentLeader.LeaderEpoch = 0, 12
			}
			p3 := dataPart(3, mid)
			if v >= 11 {
				p3.PreferredReadReplica = 0
			}
			return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, big), p1, p2, p3})
		}},
		{name: "error_before_commit", parts: 2, build: func(v int16) []byte {
			p0 := dataPart(0, []byte{})
			p0.ErrorCode = kerr.NotLeaderForPartition.Code
			return answerWith(v, []kmsg.FetchResponseTopicPartition{p0, dataPart(1, big)})
		}},
		{name: "diverging_epoch_before_commit", parts: 2, minVer: 12, closes: []int{1}, build: func(v int16) []byte {
			p0 := dataPart(0, small)
			p0.DivergingEpoch.Epoch, p0.DivergingEpoch.EndOffset = 3, 77
			return answerWith(v, []kmsg.FetchResponseTopicPartition{p0, dataPart(1, big)})
		}},
		{name: "brokers_after_commit", parts: 2, minVer: 16, streams: true, closes: []int{1, 32 << 10}, build: func(v int16) []byte {
			p1 := dataPart(1, []byte{})
			p1.ErrorCode, p1.HighWatermark, p1.LastStableOffset, p1.LogStartOffset = kerr.NotLeaderForPartition.Code, -1, -1, -1
			p1.CurrentLeader.LeaderID, p1.CurrentLeader.LeaderEpoch = 0, 5
			resp := kmsg.NewPtrFetchResponse()
			resp.SetVersion(v)
			t := kmsg.NewFetchResponseTopic()
			t.Topic, t.TopicID = benchTopic, memTopicID
			t.Partitions = []kmsg.FetchResponseTopicPartition{dataPart(0, epochBatch(70, 1024, 9)), p1}
			resp.Topics = []kmsg.FetchResponseTopic{t}
			b := kmsg.NewFetchResponseBroker()
			b.NodeID, b.Host, b.Port = 0, "broker-0.example", 9092
			resp.Brokers = []kmsg.FetchResponseBroker{b}
			return resp.AppendTo(nil)
		}},
		{name: "small", parts: 2, build: func(v int16) []byte {
			return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, small), dataPart(1, small)})
		}},
		{name: "partitions_not_as_asked", parts: 2, build: func(v int16) []byte {
			return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(1, big), dataPart(0, big)})
		}},
	}
}

// fetchThrough sends one Fetch of parts partitions through a fresh proxy
// over a memBroker answering body, and returns the client's answer frame
// (after the size) and whether the proxy closed the connection instead.
func fetchThrough(t *testing.T, ver int16, parts int32, body func(int16) []byte) []byte {
	t.Helper()
	mb := newMemBroker(t, parts, body)
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := fetchRequest(ver, parts, srv.virtualTopicID(benchTopic))
	if _, err := nc.Write(requestFrame(req)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	frame, err := readFrame(bufio.NewReader(nc), 256<<20)
	if err != nil {
		return nil
	}
	return frame
}

// The streamed relay's answer is byte for byte the buffered path's, for
// every case and version, and the cases that should stream did.
func TestFetchStreamMatchesBuffered(t *testing.T) {
	defer func(m int) { fetchStreamMin = m }(fetchStreamMin)
	for _, c := range fetchCases() {
		for _, v := range []int16{4, 7, 11, 12, 13, 16} {
			if v < c.minVer {
				continue
			}
			t.Run(c.name+"/v"+strconv.Itoa(int(v)), func(t *testing.T) {
				fetchStreamMin = 0
				want := fetchThrough(t, v, c.parts, c.build)
				if want == nil {
					t.Fatal("buffered path: no answer")
				}
				check := kmsg.NewPtrFetchResponse()
				check.SetVersion(v)
				hdr := 4
				if v >= 12 {
					hdr = 5
				}
				if err := check.ReadFrom(want[hdr:]); err != nil {
					t.Fatalf("buffered answer does not decode: %v", err)
				}
				for _, min := range []int{1, 32 << 10} {
					fetchStreamMin = min
					before := fetchStreamed.Load()
					got := fetchThrough(t, v, c.parts, c.build)
					streamed := fetchStreamed.Load() > before
					if slices.Contains(c.closes, min) {
						if got != nil || !streamed {
							t.Fatalf("commit at %d: streamed=%v, %d bytes answered; want the connection closed", min, streamed, len(got))
						}
						continue
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("commit at %d: streamed=%v answer differs from the buffered path's (%d vs %d bytes; first difference at %d)",
							min, streamed, len(got), len(want), firstDiff(got, want))
					}
					if min == 32<<10 && streamed != c.streams {
						t.Fatalf("commit at %d: streamed=%v, want %v", min, streamed, c.streams)
					}
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// fakeClientConn is a client socket that keeps what is written.
type fakeClientConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *fakeClientConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *fakeClientConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzFetchRelay feeds arbitrary upstream Fetch answers (for a request of
// three partitions of benchTopic) to the streaming relay's parser.
// Invariants: it never panics; an answer it does not stream reaches the
// buffered path byte for byte as it arrived (nothing patched before
// commit); an answer it streams is one client frame of exactly its
// declared size, and when kmsg decodes the upstream answer it decodes the
// client's too, with the same partitions, watermarks and record sizes.
func FuzzFetchRelay(f *testing.F) {
	// Small seeds (the fuzzer mutates every byte of a seed): batches of a
	// few hundred bytes, over the commit size set below.
	a, b := epochBatch(2, 100, 9), epochBatch(3, 150, 4)
	for _, v := range []int16{4, 7, 11, 12, 13, 16} {
		f.Add(uint8(v), answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, a), dataPart(1, nil), dataPart(2, b)}))
		p1 := dataPart(1, []byte{})
		p1.ErrorCode = kerr.NotLeaderForPartition.Code
		p1.CurrentLeader.LeaderID, p1.CurrentLeader.LeaderEpoch = 0, 3
		p2 := dataPart(2, append(append([]byte(nil), b...), a[:40]...))
		p2.PreferredReadReplica = 0
		at := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
		at.ProducerID, at.FirstOffset = 5, 6
		p2.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{at}
		f.Add(uint8(v), answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, b), p1, p2}))
	}
	srv, err := New(Options{Listen: "127.0.0.1:0", Clusters: map[string][]string{Source: {"127.0.0.1:1"}}, Router: StaticRouter(Source)})
	if err != nil {
		f.Fatal(err)
	}
	defer func(m int) { fetchStreamMin = m }(fetchStreamMin)
	fetchStreamMin = 200 // small enough that the seeds' record sets commit
	f.Fuzz(func(t *testing.T, ver uint8, body []byte) {
		v := int16(ver)
		if v < 4 || v > 16 {
			return
		}
		sub := fetchRequest(v, 3, memTopicID)
		plans := make([]fetchPlan, 3)
		for i := range plans {
			plans[i].name = benchTopic
		}
		frame := []byte{0, 0, 0, 9}
		if v >= 12 {
			frame = append(frame, 0)
		}
		frame = append(frame, body...)
		st := &upstreamStream{r: bufio.NewReader(bytes.NewReader(frame)), left: len(frame), done: make(chan error, 1)}
		fs := &fetchStream{s: srv, sub: sub, cluster: Source, plans: plans, p: &pending{call: &upstreamCall{corr: 9}}}
		out := &fakeClientConn{}
		r := &fetchRelay{f: fs, st: st, out: &relayOut{nc: out, wt: time.Second}, flex: v >= 12, version: v, staged: getBuf()}
		err := r.run(7)
		if !r.committed {
			if out.out.Len() != 0 {
				t.Fatalf("%d bytes written before commit", out.out.Len())
			}
			if r.upstreamBroken || !r.headerDone {
				return
			}
			rest, _, rerr := r.rest()
			if rerr != nil {
				t.Fatalf("rest of an uncommitted answer: %v", rerr)
			}
			if !bytes.Equal(rest, body) {
				t.Fatalf("the buffered path would get %d bytes that differ from the %d the upstream sent (at %d)", len(rest), len(body), firstDiff(rest, body))
			}
			return
		}
		if err != nil {
			return // the connection is closed: nothing to check in a partial frame
		}
		got := out.out.Bytes()
		if len(got) < 4 || int(binary.BigEndian.Uint32(got)) != len(got)-4 {
			t.Fatalf("client frame of %d bytes declares %d", len(got), binary.BigEndian.Uint32(got))
		}
		in := kmsg.NewPtrFetchResponse()
		in.SetVersion(v)
		if in.ReadFrom(body) != nil {
			return
		}
		hdr := 8
		if v >= 12 {
			hdr = 9
		}
		outResp := kmsg.NewPtrFetchResponse()
		outResp.SetVersion(v)
		if err := outResp.ReadFrom(got[hdr:]); err != nil {
			t.Fatalf("streamed answer does not decode where the upstream's did: %v", err)
		}
		if len(in.Topics) != len(outResp.Topics) {
			t.Fatalf("%d topics in, %d out", len(in.Topics), len(outResp.Topics))
		}
		for i := range in.Topics {
			a, b := in.Topics[i].Partitions, outResp.Topics[i].Partitions
			if len(a) != len(b) {
				t.Fatalf("topic %d: %d partitions in, %d out", i, len(a), len(b))
			}
			for j := range a {
				if a[j].Partition != b[j].Partition || a[j].HighWatermark != b[j].HighWatermark ||
					a[j].ErrorCode != b[j].ErrorCode || len(a[j].RecordBatches) != len(b[j].RecordBatches) {
					t.Fatalf("partition %d changed: %+v -> %+v", a[j].Partition, a[j], b[j])
				}
			}
		}
	})
}
