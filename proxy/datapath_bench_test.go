package proxy

// In-process benchmarks of the data path: Produce and Fetch forwarded
// through a proxy to a fake broker that answers from memory, one request at
// a time on one client connection. The fake and the driving client encode
// nothing per request (frames are built once, only the correlation id is
// patched), so -benchmem's B/op and allocs/op are the proxy's own. kfake is
// not used: its engine (storing and reading records) would dominate the
// profile.
//
//	go test -run '^$' -bench 'Forwarded' -benchmem ./proxy/
//
// Figures and profiles: bench/RESULTS.md (section "Data path in-process").

import (
	"bufio"
	"context"
	"encoding/binary"
	"hash/crc32"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const benchTopic = "bench"

// memTopicID is the fake broker's id for benchTopic.
var memTopicID = [16]byte{1, 2, 3}

// memBroker is a one-node Kafka broker that answers ApiVersions and Metadata
// properly and Produce and Fetch with frames built once per (key, version):
// every produced partition is acknowledged, every fetch gets the same
// record batches.
type memBroker struct {
	ln         net.Listener
	partitions int32
	fetchBody  func(version int16) []byte // the Fetch response body (after the header)

	// silentFetch: Fetch requests are read and never answered; each one
	// is reported on fetched, and a connection that carried one reports
	// its end on fetchConnDone.
	silentFetch   bool
	fetched       chan struct{}
	fetchConnDone chan struct{}
	// produced, when set, gets a copy of each Produce frame body.
	produced chan []byte
	// dropProduce: a Produce closes its connection instead of an answer.
	dropProduce bool
	// holdProduce, when set, holds each Produce's answer until it gets a
	// token.
	holdProduce chan struct{}

	mu     sync.Mutex // guards cached
	cached map[[2]int16][]byte
	conns  []net.Conn
}

func newMemBroker(tb testing.TB, partitions int32, fetchBody func(int16) []byte) *memBroker {
	tb.Helper()
	return newMemBrokerOn(tb, nil, partitions, fetchBody)
}

// newMemBrokerOn is newMemBroker whose listener is wrap's (nil: as it is),
// for brokers that pace what they send (newDribblingBroker).
func newMemBrokerOn(tb testing.TB, wrap func(net.Listener) net.Listener, partitions int32, fetchBody func(int16) []byte) *memBroker {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var served net.Listener = ln
	if wrap != nil {
		served = wrap(ln)
	}
	b := &memBroker{ln: served, partitions: partitions, fetchBody: fetchBody, cached: map[[2]int16][]byte{},
		fetched: make(chan struct{}, 16), fetchConnDone: make(chan struct{}, 16)}
	go b.accept()
	tb.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *memBroker) addr() string { return b.ln.Addr().String() }

func (b *memBroker) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		go b.serve(c)
	}
}

func (b *memBroker) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	var frame, out []byte
	sawFetch := false
	defer func() {
		if sawFetch {
			b.fetchConnDone <- struct{}{}
		}
	}()
	for {
		var err error
		if frame, err = readFrameInto(br, 256<<20, frame); err != nil {
			return
		}
		key := int16(binary.BigEndian.Uint16(frame))
		ver := int16(binary.BigEndian.Uint16(frame[2:]))
		corr := frame[4:8]
		if key == kmsg.Fetch.Int16() && b.silentFetch {
			sawFetch = true
			b.fetched <- struct{}{}
			continue
		}
		if key == kmsg.Produce.Int16() && b.produced != nil {
			b.produced <- append([]byte(nil), frame...)
		}
		if key == kmsg.Produce.Int16() && b.dropProduce {
			return
		}
		if key == kmsg.Produce.Int16() && b.holdProduce != nil {
			<-b.holdProduce
		}
		var resp []byte
		switch key {
		case kmsg.Produce.Int16(), kmsg.Fetch.Int16():
			resp = b.template(key, ver, frame)
		default:
			resp = b.answer(key, ver, frame)
		}
		if resp == nil {
			return
		}
		out = append(out[:0], resp...)
		copy(out[4:8], corr)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// template is the cached answer frame for a Produce or Fetch of this
// version (the correlation id is patched by the caller). A Produce answer
// acknowledges the partitions of the first request of its version; the
// benchmark sends the same request every time.
func (b *memBroker) template(key, ver int16, frame []byte) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.cached[[2]int16{key, ver}]; ok {
		return t
	}
	req := kmsg.RequestForKey(key)
	req.SetVersion(ver)
	_, r, err := parseRequestHeader(frame, nil)
	if err != nil {
		return nil
	}
	if _, err := decodeRequest(&r, req, false); err != nil {
		return nil
	}
	var resp kmsg.Response
	var body []byte
	switch q := req.(type) {
	case *kmsg.ProduceRequest:
		pr := q.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range q.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.BaseOffset = 42
				rt.Partitions = append(rt.Partitions, rp)
			}
			pr.Topics = append(pr.Topics, rt)
		}
		resp, body = pr, pr.AppendTo(nil)
	case *kmsg.FetchRequest:
		resp, body = q.ResponseKind(), b.fetchBody(ver)
	}
	t := appendResponseHeader(nil, 0, resp)
	t = append(t, body...)
	setFrameSize(t, 0)
	b.cached[[2]int16{key, ver}] = t
	return t
}

// answer decodes and answers the control requests the proxy's own client
// sends at start and on refresh: ApiVersions and Metadata.
func (b *memBroker) answer(key, ver int16, frame []byte) []byte {
	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil
	}
	req.SetVersion(ver)
	_, r, err := parseRequestHeader(frame, nil)
	if err != nil {
		return nil
	}
	if key != kmsg.ApiVersions.Int16() {
		if _, err := decodeRequest(&r, req, false); err != nil {
			return nil
		}
	}
	resp := req.ResponseKind()
	switch rr := resp.(type) {
	case *kmsg.ApiVersionsResponse:
		if ver > 3 {
			rr.SetVersion(0)
			rr.ErrorCode = 35 // UNSUPPORTED_VERSION
		}
		for _, k := range []struct{ key, min, max int16 }{
			{0, 3, 11}, {1, 4, 16}, {3, 0, 12}, {18, 0, 3},
		} {
			ak := kmsg.NewApiVersionsResponseApiKey()
			ak.ApiKey, ak.MinVersion, ak.MaxVersion = k.key, k.min, k.max
			rr.ApiKeys = append(rr.ApiKeys, ak)
		}
	case *kmsg.MetadataResponse:
		host, port, _ := net.SplitHostPort(b.addr())
		p, _ := strconv.Atoi(port)
		mb := kmsg.NewMetadataResponseBroker()
		mb.NodeID, mb.Host, mb.Port = 0, host, int32(p)
		rr.Brokers = []kmsg.MetadataResponseBroker{mb}
		rr.ClusterID = kmsg.StringPtr("mem")
		rr.ControllerID = 0
		t := kmsg.NewMetadataResponseTopic()
		t.Topic = kmsg.StringPtr(benchTopic)
		t.TopicID = memTopicID
		for i := int32(0); i < b.partitions; i++ {
			mp := kmsg.NewMetadataResponseTopicPartition()
			mp.Partition, mp.Leader, mp.Replicas, mp.ISR = i, 0, []int32{0}, []int32{0}
			t.Partitions = append(t.Partitions, mp)
		}
		rr.Topics = []kmsg.MetadataResponseTopic{t}
	default:
		return nil
	}
	out := appendResponseHeader(nil, 0, resp)
	out = resp.AppendTo(out)
	setFrameSize(out, 0)
	return out
}

// benchBatch is a v2 record batch of n records of size bytes each, with no
// producer id (so nothing in it is rewritten) and a valid CRC.
func benchBatch(n, size int) []byte {
	var recs []byte
	val := make([]byte, size)
	for i := 0; i < n; i++ {
		r := kmsg.Record{OffsetDelta: int32(i), Value: val}
		r.Length = int32(len(r.AppendTo(nil)) - 1) // the body after a 1-byte varint of 0
		recs = r.AppendTo(recs)
	}
	rb := kmsg.RecordBatch{
		Magic: 2, LastOffsetDelta: int32(n - 1), NumRecords: int32(n),
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		Records: recs,
	}
	out := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// benchRig is a proxy over a memBroker and one raw client connection to it.
type benchRig struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	in  []byte
}

// newBenchRig starts a memBroker and, unless direct, a proxy over it; the
// rig's client connection goes to the proxy, or straight to the broker.
func newBenchRig(b *testing.B, direct bool, partitions int32, fetchBody func(int16) []byte) *benchRig {
	b.Helper()
	mb := newMemBroker(b, partitions, fetchBody)
	if direct {
		nc, err := net.Dial("tcp", mb.addr())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { nc.Close() })
		return &benchRig{nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
	}
	srv, err := New(Options{Listen: "127.0.0.1:0", Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	return &benchRig{srv: srv, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

// requestFrame encodes req once as a client would send it.
func requestFrame(req kmsg.Request) []byte {
	return appendRequest(nil, 0, kmsg.StringPtr("bench"), req)
}

// roundTrip sends frame under correlation id corr and reads the answer,
// checking that it answers corr.
func (r *benchRig) roundTrip(b *testing.B, frame []byte, corr int32) {
	binary.BigEndian.PutUint32(frame[8:], uint32(corr))
	if _, err := r.nc.Write(frame); err != nil {
		b.Fatal(err)
	}
	var err error
	if r.in, err = readFrameInto(r.br, 256<<20, r.in); err != nil {
		b.Fatal(err)
	}
	if got := int32(binary.BigEndian.Uint32(r.in)); got != corr {
		b.Fatalf("answer for correlation id %d, want %d", got, corr)
	}
}

func produceRequest(version int16, partitions int32, batch []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = version, -1, 30000
	t := kmsg.NewProduceRequestTopic()
	t.Topic = benchTopic
	for p := int32(0); p < partitions; p++ {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p, batch
		t.Partitions = append(t.Partitions, rp)
	}
	req.Topics = []kmsg.ProduceRequestTopic{t}
	return req
}

func fetchRequest(version int16, partitions int32, id [16]byte) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = version, 500, 1, 50<<20
	req.SessionEpoch = -1
	t := kmsg.NewFetchRequestTopic()
	t.Topic, t.TopicID = benchTopic, id
	for p := int32(0); p < partitions; p++ {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, 100, 1<<20
		t.Partitions = append(t.Partitions, rp)
	}
	req.Topics = []kmsg.FetchRequestTopic{t}
	return req
}

// fetchAnswer is a Fetch response body with batch in every partition.
func fetchAnswer(partitions int32, batch []byte) func(int16) []byte {
	return func(ver int16) []byte {
		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(ver)
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = benchTopic, memTopicID
		for p := int32(0); p < partitions; p++ {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition, rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = p, 1000, 1000, 0
			rp.RecordBatches = batch
			t.Partitions = append(t.Partitions, rp)
		}
		resp.Topics = []kmsg.FetchResponseTopic{t}
		return resp.AppendTo(nil)
	}
}

// benchForwarded runs b.N round trips of frame through the rig; SetBytes
// is the records each round trip moves.
func benchForwarded(b *testing.B, r *benchRig, req kmsg.Request, recordBytes int) {
	frame := requestFrame(req)
	for i := 0; i < 100; i++ { // warm up: upstream dial, pools
		r.roundTrip(b, frame, int32(i))
	}
	checkAnswer(b, req, r.in)
	b.SetBytes(int64(recordBytes))
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.roundTrip(b, frame, int32(i))
	}
	b.StopTimer()
	// CPU time of the whole process (proxy, fake broker, client) per
	// round trip: on a shared machine it moves much less than ns/op.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is this process's user+system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// checkAnswer fails b unless frame answers every partition of req without
// error (and, for Fetch, with its records): a benchmark of error answers
// would measure nothing.
func checkAnswer(b *testing.B, req kmsg.Request, frame []byte) {
	b.Helper()
	resp := req.ResponseKind()
	body := frame[4:]
	if resp.IsFlexible() {
		body = body[1:]
	}
	if err := resp.ReadFrom(body); err != nil {
		b.Fatalf("answer does not decode: %v", err)
	}
	n := 0
	switch r := resp.(type) {
	case *kmsg.ProduceResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 || p.BaseOffset != 42 {
					b.Fatalf("produce partition %d: error %d, base offset %d", p.Partition, p.ErrorCode, p.BaseOffset)
				}
				n++
			}
		}
	case *kmsg.FetchResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 || len(p.RecordBatches) == 0 {
					b.Fatalf("fetch partition %d: error %d, %d record bytes", p.Partition, p.ErrorCode, len(p.RecordBatches))
				}
				n++
			}
		}
	}
	if want := requestPartitions(req); n != want {
		b.Fatalf("answer has %d partitions, want %d", n, want)
	}
}

// requestPartitions is how many partitions a bench Produce or Fetch names.
func requestPartitions(req kmsg.Request) int {
	n := 0
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		for _, t := range r.Topics {
			n += len(t.Partitions)
		}
	case *kmsg.FetchRequest:
		for _, t := range r.Topics {
			n += len(t.Partitions)
		}
	}
	return n
}

// BenchmarkProduceSmall and BenchmarkFetchSmall: one request at a time of
// one partition and one 1 KiB record, the shape of the latency phase of
// bench/run.sh (franz-go, linger 0, 5k records/s): per request, not per
// byte, is what costs here (wake-ups, syscalls; bench/RESULTS.md, "Small
// requests").
func BenchmarkProduceSmall(b *testing.B) {
	for _, path := range []string{"direct", "proxy"} {
		b.Run(path+"/v11", func(b *testing.B) {
			batch := benchBatch(1, 1024)
			r := newBenchRig(b, path == "direct", 1, nil)
			benchForwarded(b, r, produceRequest(11, 1, batch), len(batch))
		})
	}
}

func BenchmarkFetchSmall(b *testing.B) {
	for _, path := range []string{"direct", "proxy"} {
		b.Run(path+"/v16", func(b *testing.B) {
			batch := benchBatch(1, 1024)
			r := newBenchRig(b, path == "direct", 1, fetchAnswer(1, batch))
			id := memTopicID
			if r.srv != nil {
				id = r.srv.virtualTopicID(benchTopic)
			}
			benchForwarded(b, r, fetchRequest(16, 1, id), len(batch))
		})
	}
}

// BenchmarkProduceForwarded: acks=all Produce, 6 partitions of one 16 KiB
// batch each (16 records of 1 KiB), all led by one broker, nothing to
// rewrite (no producer id, identity routes).
func BenchmarkProduceForwarded(b *testing.B) {
	for _, path := range []string{"direct", "proxy"} {
		for _, v := range []int16{9, 11} {
			b.Run(path+"/v"+strconv.Itoa(int(v)), func(b *testing.B) {
				batch := benchBatch(16, 1024)
				r := newBenchRig(b, path == "direct", 6, nil)
				benchForwarded(b, r, produceRequest(v, 6, batch), 6*len(batch))
			})
		}
	}
}

// BenchmarkFetchForwarded: a Fetch of 6 partitions from one broker, each
// answered with one 16 KiB batch; nothing to rewrite.
func BenchmarkFetchForwarded(b *testing.B) {
	for _, path := range []string{"direct", "proxy"} {
		for _, v := range []int16{12, 16} {
			b.Run(path+"/v"+strconv.Itoa(int(v)), func(b *testing.B) {
				batch := benchBatch(16, 1024)
				r := newBenchRig(b, path == "direct", 6, fetchAnswer(6, batch))
				id := memTopicID // the broker's own id, when talking to it
				if r.srv != nil {
					id = r.srv.virtualTopicID(benchTopic)
				}
				benchForwarded(b, r, fetchRequest(v, 6, id), 6*len(batch))
			})
		}
	}
}

// A Fetch runs its handler's rest on the client's write loop (slot.run),
// which then waits on the upstream answer. When the client goes away, the
// upstream connection must close at once: serve closes the upstream
// connections before it waits for the write loop. In the other order the
// write loop waits for an answer that comes only when the long poll ends
// (here: never, until MaxWait plus 30 s of slack), and the upstream
// connection with it.
func TestClosedClientClosesTheUpstreamOfAWaitingFetch(t *testing.T) {
	mb := newMemBroker(t, 1, nil)
	mb.silentFetch = true
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	req := fetchRequest(12, 1, [16]byte{})
	req.MaxWaitMillis = 120_000
	if _, err := nc.Write(requestFrame(req)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-mb.fetched:
	case <-time.After(30 * time.Second):
		t.Fatal("the Fetch never reached the broker")
	}
	nc.Close()
	select {
	case <-mb.fetchConnDone:
	case <-time.After(60 * time.Second): // far below MaxWait + 30 s
		t.Fatal("the upstream connection of the waiting Fetch stayed open after its client left")
	}
}

// BenchmarkFetchForwardedLarge: a Fetch of 6 partitions from one broker,
// each answered with one 256 KiB batch, nothing to rewrite: through the
// buffered path (streaming off), the streaming relay (its batch bodies go
// socket to socket), and direct.
func BenchmarkFetchForwardedLarge(b *testing.B) {
	for _, path := range []string{"direct", "buffered", "streamed"} {
		b.Run(path+"/v16", func(b *testing.B) {
			defer func(m int) { fetchStreamMin = m }(fetchStreamMin)
			if path == "buffered" {
				fetchStreamMin = 0
			}
			batch := benchBatch(256, 1024)
			r := newBenchRig(b, path == "direct", 6, fetchAnswer(6, batch))
			id := memTopicID
			if r.srv != nil {
				id = r.srv.virtualTopicID(benchTopic)
			}
			before := fetchStreamed.Load()
			benchForwarded(b, r, fetchRequest(16, 6, id), 6*len(batch))
			if streamed := fetchStreamed.Load() > before; streamed != (path == "streamed") {
				b.Fatalf("%s: streamed=%v", path, streamed)
			}
		})
	}
}

// BenchmarkProduceForwardedLarge: acks=all Produce, 6 partitions of one
// 256 KiB batch each, all led by one broker, nothing to rewrite: through
// the buffered path (splicing off), the spliced path (batch bodies socket
// to socket through pipes, produce_splice.go), and direct.
func BenchmarkProduceForwardedLarge(b *testing.B) {
	for _, path := range []string{"direct", "buffered", "spliced"} {
		b.Run(path+"/v11", func(b *testing.B) {
			defer func(m int) { produceSpliceMin = m }(produceSpliceMin)
			if path == "buffered" {
				produceSpliceMin = 0
			}
			batch := benchBatch(256, 1024)
			r := newBenchRig(b, path == "direct", 6, nil)
			before := produceSpliced.Load()
			benchForwarded(b, r, produceRequest(11, 6, batch), 6*len(batch))
			if spliced := produceSpliced.Load() > before; spliced != (path == "spliced") {
				b.Fatalf("%s: spliced=%v", path, spliced)
			}
		})
	}
}
