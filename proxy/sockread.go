package proxy

import (
	"fmt"
	"io"
	"net"
	"syscall"
)

// lowatChunk is the least a client connection's read loop wakes up for
// while a large frame body arrives (SO_RCVLOWAT; less only for the body's
// last bytes), and the most one read of it takes. Without it the read loop
// woke and read whatever had arrived, a loopback segment or less, each read
// followed by an EAGAIN and a goroutine wake-up, and a window-update ACK
// per read whose transmission the kernel runs in the reader's context: the
// read side was 44% of kproxy's samples while a producer sent 1 MiB
// batches, the copy itself a third of that (bench/profiles). The kernel
// caps the mark at half the receive buffer, which it grows to fit.
const lowatChunk = 1 << 20

// lowatMin is the rest of a frame body from which the read loop reads it
// with a low-water mark: below it the mark's two setsockopt calls cost
// more than the wake-ups they save.
const lowatMin = 64 << 10

// lowatReader reads frame bodies straight from a plain TCP socket, woken
// only once lowatChunk bytes (or the rest of the body) arrived, as the
// replicator's fetch connection does (replicator/fetchconn.go). Owned by
// one read loop. A TLS connection has none: its reads go through the TLS
// layer, which a mark above what it buffered could stall.
type lowatReader struct {
	raw   syscall.RawConn
	lowat int // the SO_RCVLOWAT last set on the socket

	// The read in progress, for onReadable, which is bound once (a
	// closure handed to RawConn.Read per read would be allocated).
	b          []byte
	got        int
	err        error
	onReadable func(fd uintptr) bool
	onControl  func(fd uintptr)
}

// newLowatReader returns nc's reader, or nil when nc is not a plain TCP
// connection.
func newLowatReader(nc net.Conn) *lowatReader {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &lowatReader{raw: raw, lowat: 1}
	r.onReadable = r.readable
	r.onControl = func(fd uintptr) { r.setMark(fd, 1) }
	return r
}

// readFull fills b from the socket and returns how much it read. Its read
// callback (readable) reads what is there and, short of b's end, sets the
// mark to what is still missing (at most lowatChunk) and waits; the poller
// wakes it once that much arrived. A short read means the socket's queue
// was empty, and setting the mark signals the poller at once if it is
// already met, so no arrival is missed. The connection's read deadline
// applies (RawConn.Read waits as Read does).
func (r *lowatReader) readFull(b []byte) (int, error) {
	r.b, r.got, r.err = b, 0, nil
	err := r.raw.Read(r.onReadable)
	got := r.got
	if err == nil {
		err = r.err
	}
	r.b, r.err = nil, nil
	return got, err
}

// readable is readFull's RawConn.Read callback: true when the read is
// over (done or failed), false to wait for the mark.
func (r *lowatReader) readable(fd uintptr) bool {
	if !r.setMark(fd, min(len(r.b)-r.got, lowatChunk)) {
		return true
	}
	for {
		n, err := syscall.Read(int(fd), r.b[r.got:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			r.err = err
			return true
		case n == 0:
			r.err = io.ErrUnexpectedEOF
			return true
		}
		r.got += n
		if r.got == len(r.b) {
			return true
		}
		// Short: wait for the mark (set for what is left), without the
		// read that would only say EAGAIN.
		return !r.setMark(fd, min(len(r.b)-r.got, lowatChunk))
	}
}

// release sets the mark back to one byte, before the read loop waits for
// the next frame through its buffered reader (which would otherwise wait
// for a mark a small frame never reaches).
func (r *lowatReader) release() error {
	if r.lowat == 1 {
		return nil
	}
	r.err = nil
	if err := r.raw.Control(r.onControl); err != nil {
		return err
	}
	err := r.err
	r.err = nil
	return err
}

// setMark sets SO_RCVLOWAT to want unless it is set already; false (and
// r.err) when the kernel refused.
func (r *lowatReader) setMark(fd uintptr, want int) bool {
	if want == r.lowat {
		return true
	}
	if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, want); err != nil {
		r.err = fmt.Errorf("setting SO_RCVLOWAT: %w", err)
		return false
	}
	r.lowat = want
	return true
}
