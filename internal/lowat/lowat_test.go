package lowat

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// A body larger than several chunks, sent in uneven pieces, is read whole
// and in order; Release puts the mark back at one byte, after which a
// small read is woken by a few bytes (a mark left at a chunk would keep it
// waiting until the deadline); and a peer that closes mid-body is an
// unexpected EOF.
func TestReadFullAcrossChunksThenReleaseThenEOF(t *testing.T) {
	w, rc, r := connectedReader(t)

	body := make([]byte, 1<<20+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	go func() {
		for rest := body; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(100<<10))
			if _, err := w.Write(rest[:k]); err != nil {
				return
			}
			rest = rest[k:]
		}
	}()
	_ = rc.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(body))
	if n, err := r.ReadFull(got); err != nil || n != len(body) || !bytes.Equal(got, body) {
		t.Fatalf("ReadFull = %d, %v; equal %v", n, err, bytes.Equal(got, body))
	}
	if err := r.Release(); err != nil {
		t.Fatal(err)
	}
	if r.lowat != 1 {
		t.Fatalf("mark after Release = %d, want 1", r.lowat)
	}

	if _, err := w.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	tail := make([]byte, 10)
	n, err := r.ReadFull(tail)
	if err != io.ErrUnexpectedEOF || string(tail[:n]) != "abc" {
		t.Fatalf("ReadFull past the peer's close = %q, %v; want \"abc\", unexpected EOF", tail[:n], err)
	}
}

// ReadFirst takes bytes already queued without touching the mark (a
// setsockopt fewer than ReadFull, which sets it first), and for bytes
// still on their way sets the mark to what is missing and waits for it.
func TestReadFirstSetsTheMarkOnlyToWait(t *testing.T) {
	w, rc, r := connectedReader(t)
	_ = rc.SetReadDeadline(time.Now().Add(20 * time.Second))
	// A mark left high by an earlier wait (a splice's, say).
	if err := r.raw.Control(func(fd uintptr) { r.setMark(fd, 100<<10) }); err != nil || r.err != nil {
		t.Fatal(err, r.err)
	}

	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; { // until both bytes are queued
		var queued int
		_ = r.raw.Control(func(fd uintptr) { queued, _ = ioctlInq(fd) })
		if queued == 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b := make([]byte, 10)
	if n, err := r.ReadFirst(b); err != nil || string(b[:n]) != "0123456789" {
		t.Fatalf("ReadFirst = %q, %v", b[:n], err)
	}
	if r.lowat != 100<<10 {
		t.Fatalf("mark after reading queued bytes = %d, want it untouched (%d)", r.lowat, 100<<10)
	}

	go func() {
		_, _ = w.Write([]byte("abc"))
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte("defg"))
	}()
	b = make([]byte, 7)
	if n, err := r.ReadFirst(b); err != nil || string(b[:n]) != "abcdefg" {
		t.Fatalf("ReadFirst across two sends = %q, %v", b[:n], err)
	}
	if r.lowat > 7 {
		t.Fatalf("mark after waiting for 7 bytes = %d", r.lowat)
	}
}

// ioctlInq is how many bytes the socket's receive queue holds.
func ioctlInq(fd uintptr) (int, error) {
	var n int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, 0x541B /* SIOCINQ */, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, e
	}
	return int(n), nil
}

// connectedReader is a loopback TCP connection: the writing end, the
// reading end and a Reader (256 KiB chunks) on the reading end; all are
// closed when the test ends.
func connectedReader(t *testing.T) (w, rc net.Conn, r *Reader) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	rc, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	raw, err := rc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return w, rc, New(raw, 256<<10)
}
