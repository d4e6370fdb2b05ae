package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// dribbleListener serves a memBroker whose writes reach the proxy in
// small pieces, as a busy broker's do: the relay must still splice a body
// out once per chunk, not once per arrival.
type dribbleListener struct {
	net.Listener
	piece int
	pause time.Duration
}

func (l dribbleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return dribbleConn{Conn: c, l: l}, nil
}

type dribbleConn struct {
	net.Conn
	l dribbleListener
}

func (c dribbleConn) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Conn.Write(b[n:min(len(b), n+c.l.piece)])
		n += k
		if err != nil {
			return n, err
		}
		time.Sleep(c.l.pause)
	}
	return n, nil
}

func newDribblingBroker(t *testing.T, partitions int32, body func(int16) []byte, piece int, pause time.Duration) *memBroker {
	t.Helper()
	return newMemBrokerOn(t, func(ln net.Listener) net.Listener {
		return dribbleListener{Listener: ln, piece: piece, pause: pause}
	}, partitions, body)
}

// A large batch body that arrives in 16 KiB pieces is spliced to the client
// in one piece (the upstream socket's low-water mark), with the bytes
// before it in the same splice; the answer is byte for byte the buffered
// path's; the upstream socket's mark is back at one byte afterwards (a
// small answer on the same connection is not held back by it), and the
// pipe is back in the pool. Without the relay's own splice loop
// (fetchSpliceChunk 0, io.CopyN) the same answer is also right, but
// nothing counts as spliced here.
func TestFetchSpliceOneWakePerChunk(t *testing.T) {
	big := epochBatch(600, 1024, 9) // 600 KiB: one chunk
	body := func(v int16) []byte {
		if v == 11 {
			return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, epochBatch(2, 100, 9))})
		}
		return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, epochBatch(3, 500, 4)), dataPart(1, big)})
	}
	mb := newDribblingBroker(t, 2, body, 16<<10, 500*time.Microsecond)
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	rc := dialRaw(t, srv)
	nc, br := rc.nc, rc.br
	fetch := func(v int16) []byte {
		t.Helper()
		if _, err := nc.Write(requestFrame(fetchRequest(v, 2, srv.virtualTopicID(benchTopic)))); err != nil {
			t.Fatal(err)
		}
		// Far below the relay's stall bound (30 s): a mark left set
		// would hold the small answer past it.
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		frame, err := readFrame(br, 256<<20)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		return frame
	}
	want := fetchThrough(t, 12, 2, body) // relayed without dribbling, for comparison
	for round := range 3 {
		pumps, streamed := fetchSplicePumps.Load(), fetchStreamed.Load()
		got := fetch(12)
		sameStreamedAnswer(t, round, got, want, streamed)
		// One splice out for the body and what came before it; without
		// the mark, one per arrival (about 38 here).
		if n := fetchSplicePumps.Load() - pumps; n != 1 {
			t.Fatalf("round %d: %d splices to the client for one 600 KiB body, want 1", round, n)
		}
		if small := fetch(11); len(small) == 0 {
			t.Fatalf("round %d: empty small answer", round)
		}
		if n := splicePipes.InUse(); n != 0 {
			t.Fatalf("round %d: %d pipes out of the pool after the relay", round, n)
		}
	}
}

// legacyEntry is an old-format (magic 1) message set entry of n bytes,
// shorter than a v2 batch header when n < 61: the relay patches and counts
// nothing in it, and must not lose the bytes it read past it.
func legacyEntry(offset int64, n int) []byte {
	e := make([]byte, n)
	binary.BigEndian.PutUint64(e, uint64(offset))
	binary.BigEndian.PutUint32(e[8:], uint32(n-12))
	e[16] = 1 // magic
	for i := 17; i < n; i++ {
		e[i] = byte(i)
	}
	return e
}

// After a spliced body, the next batch's header is read from the socket in
// one read of a whole header (61 bytes), not a read of 17 and one of 44,
// also when it arrives split across segments; an old-format entry shorter
// than that leaves the bytes read past it for the next one. The answer is
// byte for byte the buffered path's.
func TestFetchSpliceReadsEachHeaderOnce(t *testing.T) {
	big := func(epoch int32) []byte { return epochBatch(90, 1024, epoch) } // over spliceMin
	set := slices.Concat(big(9), big(7), legacyEntry(180, 44), legacyEntry(181, 50), big(5), legacyEntry(272, 40))
	body := func(v int16) []byte {
		return answerWith(v, []kmsg.FetchResponseTopicPartition{dataPart(0, set), dataPart(1, epochBatch(3, 500, 4))})
	}
	defer func(m int) { fetchStreamMin = m }(fetchStreamMin)
	fetchStreamMin = 0
	want := fetchThrough(t, 12, 2, body) // the buffered path
	fetchStreamMin = 32 << 10
	if want == nil {
		t.Fatal("buffered path: no answer")
	}
	// 1000-byte pieces: headers arrive split, the relay waits for their rest.
	mb := newDribblingBroker(t, 2, body, 1000, 20*time.Microsecond)
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: {mb.addr()}}, Router: StaticRouter(Source)})
	rc := dialRaw(t, srv)
	nc, br := rc.nc, rc.br
	for round := range 2 {
		reads, streamed := fetchHeaderReads.Load(), fetchStreamed.Load()
		if _, err := nc.Write(requestFrame(fetchRequest(12, 2, srv.virtualTopicID(benchTopic)))); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := readFrame(br, 256<<20)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		sameStreamedAnswer(t, round, got, want, streamed)
		// Straight from the socket: the second batch's header, then the
		// first old entry's (with the second's first 17 bytes). The second
		// old entry's body goes through the upstream reader, and so do the
		// headers after it.
		if n := fetchHeaderReads.Load() - reads; n != 2 {
			t.Fatalf("round %d: %d header reads from the socket, want 2", round, n)
		}
		if n := splicePipes.InUse(); n != 0 {
			t.Fatalf("round %d: %d pipes out of the pool after the relay", round, n)
		}
	}
}

// sameStreamedAnswer checks that a round's answer is want byte for byte
// and that it was streamed (fetchStreamed moved past streamed).
func sameStreamedAnswer(t *testing.T, round int, got, want []byte, streamed int64) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("round %d: answer differs (%d vs %d bytes, first difference at %d)", round, len(got), len(want), firstDiff(got, want))
	}
	if fetchStreamed.Load() == streamed {
		t.Fatalf("round %d: the answer was not streamed", round)
	}
}
