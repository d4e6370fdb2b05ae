package proxy

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// tcpPair is a connected loopback TCP pair: what the test writes on w, the
// read loop's code reads on r.
func tcpPair(t *testing.T) (r, w net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	w, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r = <-accepted
	if r == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// A large frame body sent in uneven pieces is read whole and in order
// through the low-water-mark reader, into a reused buffer (chunks up to
// lowatChunk) and into a growing one; after it, the mark is back at one
// byte, so a small frame that comes while the read loop waits wakes it (a
// mark left at the large body's size would keep it waiting until the
// deadline).
func TestLowatReaderReadsLargeBodiesAndThenSmallFrames(t *testing.T) {
	r, w := tcpPair(t)
	lw := newLowatReader(r)
	if lw == nil {
		t.Fatal("no low-water-mark reader on a TCP connection")
	}
	br := bufio.NewReaderSize(r, 8<<10)
	fill := func(b []byte) (int, error) { return fillBody(br, lw, b) }
	rng := rand.New(rand.NewPCG(1, 2))
	var reuse []byte
	for round, n := range []int{3<<20 + 17, 3<<20 + 17, 200 << 10} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		small := []byte("tail!")
		go func(seed uint64) {
			rng := rand.New(rand.NewPCG(seed, 3)) // the writer's own
			for rest := body; len(rest) > 0; {
				k := min(len(rest), 1+rng.IntN(300<<10))
				if _, err := w.Write(rest[:k]); err != nil {
					return
				}
				rest = rest[k:]
				time.Sleep(time.Millisecond)
			}
		}(uint64(round))
		_ = r.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := readBodyChunks(n, reuse, nil, fill, lowatChunk)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("round %d: the body read differs from the body sent", round)
		}
		if err := lw.Release(); err != nil {
			t.Fatal(err)
		}
		// The small frame comes once the read loop waits for it.
		go func() {
			time.Sleep(50 * time.Millisecond)
			_, _ = w.Write(small)
		}()
		_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
		tail := make([]byte, len(small))
		if _, err := fill(tail); err != nil || !bytes.Equal(tail, small) {
			t.Fatalf("round %d: the small frame after the large one: %q, %v", round, tail, err)
		}
		reuse = got[:0]
	}
}
