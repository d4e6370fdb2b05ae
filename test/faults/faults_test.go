package faults

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echo is an upstream that writes back what it reads.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	p, err := Listen("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

// roundTrip writes msg and reads it back within d; it reports whether the
// echo arrived.
func roundTrip(t *testing.T, c net.Conn, msg string, d time.Duration) bool {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	return readBack(t, c, msg, d)
}

func readBack(t *testing.T, c net.Conn, msg string, d time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
	return true
}

func TestForwardsBothWays(t *testing.T) {
	_, c := start(t)
	if !roundTrip(t, c, "hello", 5*time.Second) {
		t.Fatal("no echo through the proxy")
	}
}

func TestBlackholeHoldsUntilHealed(t *testing.T) {
	p, c := start(t)
	roundTrip(t, c, "warm", 5*time.Second)
	p.Blackhole(true)
	if roundTrip(t, c, "held", 300*time.Millisecond) {
		t.Fatal("a blackholed connection delivered")
	}
	// New connections are accepted but get nothing either.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if roundTrip(t, c2, "new", 300*time.Millisecond) {
		t.Fatal("a connection made during the blackhole delivered")
	}
	p.Blackhole(false)
	if !readBack(t, c, "held", 5*time.Second) || !readBack(t, c2, "new", 5*time.Second) {
		t.Fatal("what was sent during the blackhole did not arrive after it healed")
	}
}

func TestResetSendsRST(t *testing.T) {
	p, c := start(t)
	roundTrip(t, c, "warm", 5*time.Second)
	if n := p.Reset(); n != 1 {
		t.Fatalf("reset %d connections, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %v, want ECONNRESET", err)
	}
	// The proxy still accepts.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if !roundTrip(t, c2, "again", 5*time.Second) {
		t.Fatal("no echo on a new connection after the reset")
	}
}

func TestHalfOpenStopsOneDirection(t *testing.T) {
	p, c := start(t)
	roundTrip(t, c, "warm", 5*time.Second)
	p.HalfOpen(ToClient, true)
	// The request reaches the echo server, but its answer is not read.
	if roundTrip(t, c, "stuck", 300*time.Millisecond) {
		t.Fatal("an answer arrived while its direction was not read")
	}
	// With requests not read either, a writer eventually blocks.
	p.HalfOpen(ToServer, true)
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	big := bytes.Repeat([]byte("x"), 1<<20)
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		_, werr = c.Write(big)
	}
	var ne net.Error
	if !errors.As(werr, &ne) || !ne.Timeout() {
		t.Fatalf("writes into a connection nobody reads: %v, want a timeout", werr)
	}
}

func TestLatencyDelaysEachChunk(t *testing.T) {
	p, c := start(t)
	p.SetLatency(100 * time.Millisecond)
	t0 := time.Now()
	if !roundTrip(t, c, "slow", 5*time.Second) {
		t.Fatal("no echo with latency")
	}
	// A lower bound, not a timing assertion on speed: the chunk was held
	// at least once per direction.
	if el := time.Since(t0); el < 200*time.Millisecond {
		t.Fatalf("round trip took %v with 100 ms each way", el)
	}
}

func TestBandwidthCapStillDeliversInOrder(t *testing.T) {
	p, c := start(t)
	p.SetBandwidth(256 << 10)
	msg := string(bytes.Repeat([]byte("0123456789abcdef"), 4096)) // 64 KiB
	if !roundTrip(t, c, msg, 10*time.Second) {
		t.Fatal("no echo under a bandwidth cap")
	}
}
