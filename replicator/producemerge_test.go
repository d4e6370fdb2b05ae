package replicator

import (
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Sends of different partitions queued while another send writes go out
// in one Produce request, one batch per partition (a partition's second
// batch in the next request), and the answer is split to each call by
// topic and partition, whatever order the broker answers in.

const mergeVer = 9

// mergeConn is a produce connection over an in-memory pipe whose far end
// is the test's broker: a write blocks until the test reads it, so a
// send that writes holds the connection busy as long as the test wants.
func mergeConn(t *testing.T) (*produceConn, net.Conn) {
	ours, broker := net.Pipe()
	c := newProduceConn(ours, nil, 1, mergeVer, time.Minute, 64)
	c.yieldFirst = true // as the shared connections (produceConnFor)
	t.Cleanup(func() { c.fail(errConnClosed); broker.Close() })
	return c, broker
}

// mergeCall is a partition's call with its own request, as a pipeline's.
func mergeCall(topic string, part int32) (*produceCall, *kmsg.ProduceRequest) {
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 30000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = part
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return &produceCall{done: make(chan struct{}, 1)}, req
}

// readProduce reads one Produce request off the broker's end.
func readProduce(t *testing.T, broker net.Conn) (int32, *kmsg.ProduceRequest) {
	t.Helper()
	frame, err := readFrame(broker, nil, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	r := kbin.Reader{Src: frame}
	if key := r.Int16(); key != int16(kmsg.Produce) {
		t.Fatalf("request key %d", key)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Version = r.Int16()
	corr := r.Int32()
	r.NullableString() // client id
	kmsg.SkipTags(&r)
	if err := req.ReadFrom(r.Src); err != nil {
		t.Fatal(err)
	}
	return corr, req
}

// partsOf lists a request's topic/partition pairs and their records.
func partsOf(req *kmsg.ProduceRequest) map[string]string {
	m := map[string]string{}
	for _, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			m[rt.Topic+"/"+string(rune('0'+rp.Partition))] = string(rp.Records)
		}
	}
	return m
}

// answer writes a Produce answer for corr with the given partitions.
func answer(t *testing.T, broker net.Conn, corr int32, parts ...kmsg.ProduceResponseTopic) {
	t.Helper()
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = mergeVer
	resp.Topics = parts
	out := kbin.AppendInt32(make([]byte, 4), corr)
	out = append(out, 0) // the header's tags
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	if _, err := broker.Write(out); err != nil {
		t.Fatal(err)
	}
}

func respTopic(topic string, parts ...kmsg.ProduceResponseTopicPartition) kmsg.ProduceResponseTopic {
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic, rt.Partitions = topic, parts
	return rt
}

func respPart(part int32, code int16, base int64) kmsg.ProduceResponseTopicPartition {
	rp := kmsg.NewProduceResponseTopicPartition()
	rp.Partition, rp.ErrorCode, rp.BaseOffset = part, code, base
	return rp
}

func counted(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// busy sends a's batch from another goroutine and returns once that send
// is writing (blocked on the pipe until the test reads): the sends after
// it queue.
func busy(t *testing.T, c *produceConn, req *kmsg.ProduceRequest, call *produceCall, records string) {
	go func() {
		if err := c.send(req, []byte(records), nil, call); err != nil {
			t.Error(err)
		}
	}()
	for {
		// The call taken into the request being written (its
		// correlation id set), not merely a writer at work: an earlier
		// writer may not have noticed its queue is empty yet, and this
		// send may still be yielding before it takes the queue.
		c.qmu.Lock()
		w := c.writing && call.corr != 0
		c.qmu.Unlock()
		if w {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// A send alone in the queue yields before it writes, so the copies of
// other partitions that are ready to run (woken by one fetch answer) put
// their batches in its request instead of each sending its own. On one
// P, three sends made ready at once go out as one request; without the
// yield the first writes alone (and parks in the write), and the other
// two share the next. The scheduler takes from its global queue first
// at every 61st tick, so a yield can come straight back: 8 trials of 10
// must merge all three (without the yield none does).
func TestLoneSendYieldsToReadyPartitions(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	merged := 0
	for range 10 {
		c, broker := mergeConn(t)
		start := make(chan struct{})
		calls := make([]*produceCall, 3)
		for i := range calls {
			call, req := mergeCall("a", int32(i))
			calls[i] = call
			go func() {
				<-start
				if err := c.send(req, []byte{'r', byte('0' + i)}, nil, call); err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		var parts []kmsg.ProduceResponseTopicPartition
		for n := 0; n < len(calls); {
			corr, req := readProduce(t, broker)
			got := partsOf(req)
			if n == 0 && len(got) == len(calls) {
				merged++
			}
			parts = parts[:0]
			for _, p := range req.Topics[0].Partitions {
				parts = append(parts, respPart(p.Partition, 0, int64(p.Partition)+1))
			}
			answer(t, broker, corr, respTopic("a", parts...))
			n += len(got)
		}
		timer := time.NewTimer(time.Hour)
		for i, call := range calls {
			c.wait(call, timer)
			if err := c.produceErr(call); err != nil || call.baseOffset != int64(i+1) {
				t.Fatalf("partition %d: %v, base %d", i, err, call.baseOffset)
			}
		}
	}
	if merged < 8 {
		t.Fatalf("the three ready partitions shared the first request in %d trials of 10, want 8 or more", merged)
	}
}

func TestProduceConnMergesPartitions(t *testing.T) {
	c, broker := mergeConn(t)
	c.reqs, c.batches = prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})
	a0, ra0 := mergeCall("a", 0)
	a1, ra1 := mergeCall("a", 1)
	b0, rb0 := mergeCall("b", 0)
	a0second := &produceCall{done: make(chan struct{}, 1)}
	a1second := &produceCall{done: make(chan struct{}, 1)}

	busy(t, c, ra0, a0, "a0-1")
	// Queued behind the write in progress.
	for _, s := range []struct {
		req     *kmsg.ProduceRequest
		call    *produceCall
		records string
	}{{ra1, a1, "a1-1"}, {rb0, b0, "b0-1"}, {ra0, a0second, "a0-2"}, {ra1, a1second, "a1-2"}} {
		if err := c.send(s.req, []byte(s.records), nil, s.call); err != nil {
			t.Fatal(err)
		}
	}

	corr1, req1 := readProduce(t, broker)
	corr2, req2 := readProduce(t, broker)
	corr3, req3 := readProduce(t, broker)
	if got := partsOf(req1); len(got) != 1 || got["a/0"] != "a0-1" {
		t.Fatalf("first request: %v", got)
	}
	// One batch per partition: a/0's second batch is the first of its
	// partition left, so it joins; a/1's second waits for the next.
	if got := partsOf(req2); len(got) != 3 || got["a/1"] != "a1-1" || got["b/0"] != "b0-1" || got["a/0"] != "a0-2" {
		t.Fatalf("merged request: %v", got)
	}
	if len(req2.Topics) != 2 {
		t.Fatalf("merged request has %d topic entries, want one per topic", len(req2.Topics))
	}
	if got := partsOf(req3); len(got) != 1 || got["a/1"] != "a1-2" {
		t.Fatalf("third request: %v", got)
	}

	if r, b := counted(c.reqs), counted(c.batches); r != 3 || b != 5 {
		t.Fatalf("counted %v requests of %v batches, want 3 of 5", r, b)
	}

	answer(t, broker, corr1, respTopic("a", respPart(0, 0, 100)))
	// The merged answer in another order than asked, with an error for
	// one partition.
	answer(t, broker, corr2, respTopic("b", respPart(0, 0, 300)),
		respTopic("a", respPart(1, kerr.NotLeaderForPartition.Code, -1), respPart(0, 0, 101)))
	answer(t, broker, corr3, respTopic("a", respPart(1, 0, 200)))
	for _, w := range []struct {
		name string
		call *produceCall
		err  error
		base int64
	}{{"a/0 first", a0, nil, 100}, {"a/0 second", a0second, nil, 101}, {"b/0", b0, nil, 300},
		{"a/1 first", a1, kerr.NotLeaderForPartition, -1}, {"a/1 second", a1second, nil, 200}} {
		c.wait(w.call, time.NewTimer(time.Hour))
		if err := c.produceErr(w.call); !errors.Is(err, w.err) || (w.err == nil && err != nil) {
			t.Fatalf("%s: error %v, want %v", w.name, err, w.err)
		}
		if w.err == nil && w.call.baseOffset != w.base {
			t.Fatalf("%s: base offset %d, want %d", w.name, w.call.baseOffset, w.base)
		}
	}
}

// A partition the merged answer leaves out fails its call alone; a
// connection that fails fails every call of its merged request and every
// call still queued.
func TestProduceConnMergedFailures(t *testing.T) {
	c, broker := mergeConn(t)
	a0, ra0 := mergeCall("a", 0)
	a1, ra1 := mergeCall("a", 1)
	a2, ra2 := mergeCall("a", 2)
	busy(t, c, ra0, a0, "x")
	for _, s := range []struct {
		req  *kmsg.ProduceRequest
		call *produceCall
	}{{ra1, a1}, {ra2, a2}} {
		if err := c.send(s.req, []byte("y"), nil, s.call); err != nil {
			t.Fatal(err)
		}
	}
	corr1, _ := readProduce(t, broker)
	corr2, req2 := readProduce(t, broker)
	if len(partsOf(req2)) != 2 {
		t.Fatalf("merged request: %v", partsOf(req2))
	}
	answer(t, broker, corr1, respTopic("a", respPart(0, 0, 5)))
	answer(t, broker, corr2, respTopic("a", respPart(2, 0, 6)))
	timer := time.NewTimer(time.Hour)
	for _, call := range []*produceCall{a0, a1, a2} {
		c.wait(call, timer)
	}
	if c.produceErr(a0) != nil || c.produceErr(a2) != nil || a2.baseOffset != 6 {
		t.Fatalf("answered partitions: %v, %v (base %d)", c.produceErr(a0), c.produceErr(a2), a2.baseOffset)
	}
	if c.produceErr(a1) == nil {
		t.Fatal("a partition missing from the answer succeeded")
	}

	// Now a merged request written, never answered, and the connection
	// breaks: all its calls fail, and so does one queued behind it.
	b0, rb0 := mergeCall("b", 0)
	b1, rb1 := mergeCall("b", 1)
	b2, rb2 := mergeCall("b", 2)
	b0second := &produceCall{done: make(chan struct{}, 1)}
	busy(t, c, rb0, b0, "z")
	for _, s := range []struct {
		req  *kmsg.ProduceRequest
		call *produceCall
	}{{rb1, b1}, {rb2, b2}, {rb0, b0second}} {
		if err := c.send(s.req, []byte("z"), nil, s.call); err != nil {
			t.Fatal(err)
		}
	}
	readProduce(t, broker)
	if _, req := readProduce(t, broker); len(partsOf(req)) != 3 {
		t.Fatalf("merged request: %v", partsOf(req))
	}
	broker.Close()
	for _, call := range []*produceCall{b0, b1, b2, b0second} {
		c.wait(call, timer)
		if !errors.Is(c.produceErr(call), errConnClosed) {
			t.Fatalf("call on a broken connection: %v", c.produceErr(call))
		}
	}
	if err := c.send(rb1, []byte("z"), nil, b1); !errors.Is(err, errConnClosed) {
		t.Fatalf("send on a broken connection: %v", err)
	}
}
