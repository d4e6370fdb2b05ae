package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// spliceTestServer is a server for the spliced reader that advertises
// Produce v3-13, never started (the reader asks it only for versions,
// routes, topic ids, limits and metrics).
func spliceTestServer(t *testing.T) *Server {
	t.Helper()
	srv, err := New(Options{Listen: "127.0.0.1:0", Clusters: map[string][]string{Source: {"127.0.0.1:1"}}, Router: StaticRouter(Source)})
	if err != nil {
		t.Fatal(err)
	}
	adv := map[int16]versionRange{kmsg.Produce.Int16(): {3, 13}}
	srv.versions.Store(&adv)
	return srv
}

// spliceBatch is a v2 batch of n bytes (n >= 61 + a record's worth) with a
// virtual-looking producer id, its body bytes patterned by seed.
func spliceBatch(n int, seed byte) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b[8:], uint32(n-12))
	b[16] = 2
	binary.BigEndian.PutUint64(b[43:], uint64(7000+int(seed)))
	binary.BigEndian.PutUint32(b[57:], 1)
	for i := batchHeaderLen; i < n; i++ {
		b[i] = seed + byte(i*7)
	}
	return b
}

// spliceRequest is a Produce of version v: topic a with a small section, a
// large one of three batches and a large one of one batch; topic b with a
// large one of two batches.
func spliceRequest(v int16) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = v, -1, 5000
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	mk := func(name string, id byte, sections ...[]byte) kmsg.ProduceRequestTopic {
		t := kmsg.NewProduceRequestTopic()
		if v >= 13 {
			t.TopicID = [16]byte{id}
		} else {
			t.Topic = name
		}
		for i, s := range sections {
			p := kmsg.NewProduceRequestTopicPartition()
			p.Partition, p.Records = int32(i), s
			t.Partitions = append(t.Partitions, p)
		}
		return t
	}
	req.Topics = []kmsg.ProduceRequestTopic{
		mk("a", 1, spliceBatch(900, 1), cat(spliceBatch(30<<10, 2), spliceBatch(25<<10, 3), spliceBatch(20<<10, 4)), spliceBatch(300<<10, 5)),
		mk("bb", 2, cat(spliceBatch(70<<10, 6), spliceBatch(61, 7), spliceBatch(1<<20, 8))),
	}
	return req
}

// sendInPieces writes frame to nc in pieces of random sizes with pauses,
// so sections and batch headers are split across reads; stop, when >= 0,
// stops after that many bytes.
func sendInPieces(nc net.Conn, frame []byte, stop int) {
	rng := rand.New(rand.NewPCG(1, 2))
	if stop >= 0 {
		frame = frame[:stop]
	}
	for len(frame) > 0 {
		k := min(len(frame), 1+rng.IntN(90<<10))
		if _, err := nc.Write(frame[:k]); err != nil {
			return
		}
		frame = frame[k:]
		if rng.IntN(4) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// readSpliced reads one frame from server with a spliced reader.
func readSpliced(t *testing.T, srv *Server, server net.Conn) (*spliceReq, []byte, bool, error) {
	t.Helper()
	cc := newClientConn(srv, server, 1)
	br := bufio.NewReaderSize(server, 8<<10)
	sp := newSpliceReq(cc, br, newLowatReader(server), func(int) error { return nil })
	if sp == nil {
		t.Fatal("no spliced reader on a TCP socket")
	}
	_ = server.SetReadDeadline(time.Now().Add(srv.opts.Limits.ReadTimeout))
	n, err := readFrameSize(br, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !sp.wants(n) {
		t.Fatalf("a %d-byte Produce frame is not read spliced", n)
	}
	frame, spliced, _, err := sp.read(n, nil)
	return sp, frame, spliced, err
}

// The incremental reader walks every Produce version kproxy accepts, with
// sections split across reads, and agrees with kmsg: the request it
// fills, once its pipes are read back, is what kmsg decodes from the same
// bytes; the encoding of the filled request with its bodies left in the
// pipes (appendProduceBody with pieces) is kmsg's encoding with gaps
// exactly where the bodies are; and every pipe goes back to the pool.
func TestSplicedProduceReaderAgreesWithKmsgEveryVersion(t *testing.T) {
	srv := spliceTestServer(t)
	for v := int16(3); v <= 13; v++ {
		req := spliceRequest(v)
		frame := appendRequest(nil, 77, kmsg.StringPtr("splice-client"), req)
		server, client := tcpPair(t)
		go sendInPieces(client, frame, -1)
		sp, _, spliced, err := readSpliced(t, srv, server)
		if err != nil || !spliced {
			t.Fatalf("v%d: spliced %v, err %v", v, spliced, err)
		}
		h := sp.header(nil)
		if h.corr != 77 || h.version != v || h.clientID == nil || *h.clientID != "splice-client" {
			t.Fatalf("v%d: header %+v", v, h)
		}
		want := kmsg.NewPtrProduceRequest()
		want.Version = v
		_, r, _ := parseRequestHeader(frame[4:], nil)
		if _, err := decodeRequest(&r, want, false); err != nil {
			t.Fatal(err)
		}
		got := kmsg.NewPtrProduceRequest()
		sp.fill(got)
		if n := len(sp.secs); n != 3 {
			t.Fatalf("v%d: %d sections spliced, want 3", v, n)
		}
		// The encoding with gaps: kmsg's bytes with the bodies cut out.
		enc, pieces := appendProduceBodyPieces(nil, got, sp, nil)
		wantBody := want.AppendTo(nil)
		m, j := 0, 0
		for _, pc := range pieces {
			k := pc.at - m
			if j+k > len(wantBody) || !bytes.Equal(enc[m:pc.at], wantBody[j:j+k]) {
				t.Fatalf("v%d: the encoding before the gap at %d is not kmsg's", v, pc.at)
			}
			m, j = pc.at, j+k+pc.n // kmsg's bytes go on after the body
		}
		if !bytes.Equal(enc[m:], wantBody[min(j, len(wantBody)):]) {
			t.Fatalf("v%d: the encoding after the last gap is not kmsg's", v)
		}
		body, err := sp.materialize(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, wantBody) {
			t.Fatalf("v%d: the request read back encodes differently from kmsg's", v)
		}
		if !reflect.DeepEqual(got.Topics, want.Topics) {
			t.Fatalf("v%d: topics differ from kmsg's decoding", v)
		}
		sp.finish()
		if n := splicePipes.InUse(); n != 0 {
			t.Fatalf("v%d: %d pipes still out of the pool", v, n)
		}
	}
}

// appendProduceBody without spliced sections is kmsg's encoding, every
// version (the writer encodes sub-requests with it).
func TestAppendProduceBodyIsKmsgs(t *testing.T) {
	for v := int16(3); v <= 13; v++ {
		req := spliceRequest(v)
		req.TransactionID = kmsg.StringPtr("txn")
		if got, want := appendProduceBody(nil, req, nil, nil), req.AppendTo(nil); !bytes.Equal(got, want) {
			t.Fatalf("v%d: %d bytes, kmsg %d", v, len(got), len(want))
		}
	}
}

// Unusual input found after bodies were spliced (a legacy batch in a later
// large section; tagged fields after a spliced section) sends the frame
// the buffered way, rebuilt byte for byte; unusual input found before
// (acks=0, a transactional id) reads the rest into memory at once.
func TestSplicedProduceReaderFallsBackWithTheFrameAsSent(t *testing.T) {
	srv := spliceTestServer(t)
	legacy := spliceRequest(9)
	lb := spliceBatch(80<<10, 9)
	lb[16] = 1
	legacy.Topics[1].Partitions[0].Records = lb
	tagged := spliceRequest(11)
	tagged.Topics[1].Partitions[0].UnknownTags.Set(5, []byte("x"))
	acks0 := spliceRequest(7)
	acks0.Acks = 0
	txn := spliceRequest(10)
	txn.TransactionID = kmsg.StringPtr("t")
	for _, c := range []struct {
		name    string
		req     *kmsg.ProduceRequest
		rebuilt bool
	}{{"legacy batch", legacy, true}, {"tags", tagged, true}, {"acks=0", acks0, false}, {"transactional", txn, false}} {
		frame := appendRequest(nil, 5, nil, c.req)
		server, client := tcpPair(t)
		go sendInPieces(client, frame, -1)
		before := produceRebuilt.Load()
		_, got, spliced, err := readSpliced(t, srv, server)
		if err != nil || spliced {
			t.Fatalf("%s: spliced %v, err %v", c.name, spliced, err)
		}
		if !bytes.Equal(got, frame[4:]) {
			t.Fatalf("%s: the frame handed to the buffered path differs from the one sent", c.name)
		}
		if rebuilt := produceRebuilt.Load() > before; rebuilt != c.rebuilt {
			t.Fatalf("%s: rebuilt %v, want %v", c.name, rebuilt, c.rebuilt)
		}
		if n := splicePipes.InUse(); n != 0 {
			t.Fatalf("%s: %d pipes still out of the pool", c.name, n)
		}
	}
}

// A client that stalls mid-body holds its pipes only until the read
// deadline, which ends the read with a timeout; the pipes are given back
// (closed: they hold bytes).
func TestSplicedProduceReaderStallEndsAtTheReadDeadline(t *testing.T) {
	srv := spliceTestServer(t)
	srv.opts.Limits.ReadTimeout = 300 * time.Millisecond
	frame := appendRequest(nil, 5, nil, spliceRequest(11))
	server, client := tcpPair(t)
	go sendInPieces(client, frame, 200<<10) // into a large section, then silence
	_, _, spliced, err := readSpliced(t, srv, server)
	if spliced || err == nil || !isTimeout(err) {
		t.Fatalf("spliced %v, err %v; want a timeout", spliced, err)
	}
	if n := splicePipes.InUse(); n != 0 {
		t.Fatalf("%d pipes still out of the pool after the stall", n)
	}

}

// A large Produce through the proxy goes the spliced way and the broker
// receives the client's request body byte for byte (nothing to rewrite:
// no producer id), spliced and small sections mixed, v3 to v11; the
// answer names every partition.
func TestSplicedProduceReachesTheBrokerAsSent(t *testing.T) {
	mb := newMemBroker(t, 6, nil)
	mb.produced = make(chan []byte, 4)
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	for _, v := range []int16{3, 9, 11} {
		batch := benchBatch(300, 1024) // 300 KiB: spliced
		req := produceRequest(v, 6, batch)
		req.Topics[0].Partitions[2].Records = benchBatch(4, 1024) // small: in memory
		frame := appendRequest(nil, int32(v), kmsg.StringPtr("c"), req)
		before := produceSpliced.Load()
		go sendInPieces(nc, frame, -1)
		var got []byte
		select {
		case got = <-mb.produced:
		case <-time.After(20 * time.Second):
			t.Fatalf("v%d: the broker got no Produce", v)
		}
		_, r, _ := parseRequestHeader(got, nil)
		wantHdr := frame[4:]
		_, wr, _ := parseRequestHeader(wantHdr, nil)
		if v >= 9 {
			r.Src, wr.Src = skipTagSection(r.Src), skipTagSection(wr.Src)
		}
		if !bytes.Equal(r.Src, wr.Src) {
			t.Fatalf("v%d: the broker's request body differs from the client's (%d bytes, sent %d)", v, len(r.Src), len(wr.Src))
		}
		answer, err := readFrame(br, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		// Counted when the request's pipes are given back, which the
		// read loop does after the write upstream: it may come after the
		// broker has the request and even after its answer.
		waitUntil(t, fmt.Sprintf("v%d: the request counted as spliced", v), func() bool { return produceSpliced.Load() > before })
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = v
		body := answer[4:]
		if v >= 9 {
			body = body[1:]
		}
		if err := resp.ReadFrom(body); err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 6 {
			t.Fatalf("v%d: answer %+v, err %v", v, resp, err)
		}
	}
	waitUntil(t, "every pipe back in the pool", func() bool { return splicePipes.InUse() == 0 })
}

// produceAnswerPlain, which reads a Produce answer's bytes, agrees with
// produceAnswerAsIs on the decoded answer, every version, for a plain
// answer and for each way an answer is not plain (an error, a leader
// hint, brokers, partitions out of order, one missing, one extra, an
// offset map); where it is stricter (tags) it only says no.
func TestProduceAnswerPlainAgreesWithDecoding(t *testing.T) {
	for v := int16(3); v <= 13; v++ {
		asked := &partsAsked{}
		asked.reset(4)
		ref := brokerRef{cluster: Source}
		plans := make([]producePlan, 4)
		base := kmsg.NewPtrProduceResponse()
		base.Version = v
		for ti, name := range []string{"a", "b"} {
			rt := kmsg.NewProduceResponseTopic()
			k := partKey{}
			if v >= 13 {
				rt.TopicID = [16]byte{byte(ti + 1)}
				k.id = rt.TopicID
			} else {
				rt.Topic = name
				k.topic = name
			}
			for p := int32(0); p < 2; p++ {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.BaseOffset = p, 100+int64(p)
				rt.Partitions = append(rt.Partitions, rp)
				k.partition = p
				asked.ask(ref, k)
			}
			base.Topics = append(base.Topics, rt)
		}
		mutations := map[string]func(r *kmsg.ProduceResponse, pl []producePlan){
			"plain":  func(*kmsg.ProduceResponse, []producePlan) {},
			"error":  func(r *kmsg.ProduceResponse, _ []producePlan) { r.Topics[1].Partitions[0].ErrorCode = 6 },
			"leader": func(r *kmsg.ProduceResponse, _ []producePlan) { r.Topics[0].Partitions[1].CurrentLeader.LeaderID = 3 },
			"brokers": func(r *kmsg.ProduceResponse, _ []producePlan) {
				r.Brokers = []kmsg.ProduceResponseBroker{{NodeID: 3, Host: "h", Port: 1}}
			},
			"swapped": func(r *kmsg.ProduceResponse, _ []producePlan) { r.Topics[0], r.Topics[1] = r.Topics[1], r.Topics[0] },
			"missing": func(r *kmsg.ProduceResponse, _ []producePlan) { r.Topics = r.Topics[:1] },
			"extra":   func(r *kmsg.ProduceResponse, _ []producePlan) { r.Topics = append(r.Topics, r.Topics[0]) },
			"offsets": func(_ *kmsg.ProduceResponse, pl []producePlan) { pl[2].offsets = stubOffsetMap{} },
			"rec-error": func(r *kmsg.ProduceResponse, _ []producePlan) {
				r.Topics[0].Partitions[0].ErrorMessage = kmsg.StringPtr("x")
			},
		}
		for name, mut := range mutations {
			resp := kmsg.NewPtrProduceResponse()
			resp.Version = v
			if err := resp.ReadFrom(base.AppendTo(nil)); err != nil {
				t.Fatal(err)
			}
			pl := append([]producePlan(nil), plans...)
			mut(resp, pl)
			body := resp.AppendTo(nil)
			dec := kmsg.NewPtrProduceResponse()
			dec.Version = v
			if err := dec.ReadFrom(body); err != nil {
				t.Fatal(err)
			}
			want := produceAnswerAsIs(dec, asked, pl)
			got := produceAnswerPlain(body, v, asked, pl)
			if got != want && !(name == "rec-error" && !got) {
				t.Errorf("v%d %s: plain %v, decoded %v", v, name, got, want)
			}
			if name == "plain" && !got {
				t.Errorf("v%d: a plain answer is not seen as plain", v)
			}
		}
	}
}

// stubOffsetMap is an offset map that is there (its values unused).
type stubOffsetMap struct{}

func (stubOffsetMap) ToTarget(v int64) (int64, bool) { return v, true }
func (stubOffsetMap) ToSource(t int64) (int64, bool) { return t, true }
func (stubOffsetMap) SourceStart() int64             { return 0 }
func (stubOffsetMap) SourceEnd() int64               { return 0 }
func (stubOffsetMap) TargetStart() int64             { return 0 }
func (stubOffsetMap) TargetEnd() int64               { return 0 }
