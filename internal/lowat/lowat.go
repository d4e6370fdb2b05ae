// Package lowat reads from a plain TCP socket with a low-water mark
// (SO_RCVLOWAT): a reader of a large frame is woken only once a chunk of it
// (or its rest) arrived, instead of for whatever a loopback segment
// brought, each such read followed by an EAGAIN, a goroutine wake-up and a
// window-update ACK the kernel sends in the reader's context. The proxy's
// client read loop (proxy/sockread.go) and the replicator's fetch
// connection (replicator/fetchconn.go) read this way.
//
// A TLS connection has no such reader: its reads go through the TLS layer,
// which a mark above what it buffered could stall.
package lowat

import (
	"fmt"
	"io"
	"net"
	"syscall"
)

// Reader reads from one socket; owned by one goroutine.
type Reader struct {
	raw   syscall.RawConn
	chunk int // the most one mark asks for (and one read takes)
	lowat int // the SO_RCVLOWAT last set on the socket

	// The read in progress, for onReadable, which is bound once (a
	// closure handed to RawConn.Read per read would be allocated).
	b          []byte
	got        int
	err        error
	first      bool // ReadFirst: read before setting the mark
	onReadable func(fd uintptr) bool
	onControl  func(fd uintptr)
}

// RawConn returns nc's raw connection when nc is a plain TCP connection,
// nil otherwise (a TLS connection: its bytes pass through the TLS layer,
// so neither a mark nor a splice may go around it).
func RawConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// New returns raw's reader, which wakes for at most chunk bytes at a time.
// The kernel caps the mark at half the receive buffer.
func New(raw syscall.RawConn, chunk int) *Reader {
	r := &Reader{raw: raw, chunk: chunk, lowat: 1}
	r.onReadable = r.readable
	r.onControl = func(fd uintptr) { r.setMark(fd, 1) }
	return r
}

// ReadFull fills b from the socket and returns how much it read. Its read
// callback (readable) reads what is there and, short of b's end, sets the
// mark to what is still missing (at most the chunk) and waits; the poller
// wakes it once that much arrived. A short read means the socket's queue
// was empty, and setting the mark signals the poller at once if it is
// already met, so no arrival is missed. The connection's read deadline
// applies (RawConn.Read waits as Read does).
func (r *Reader) ReadFull(b []byte) (int, error) {
	r.b, r.got, r.err = b, 0, nil
	err := r.raw.Read(r.onReadable)
	got := r.got
	if err == nil {
		err = r.err
	}
	r.b, r.err = nil, nil
	return got, err
}

// ReadFirst is ReadFull that reads before it sets the mark, and sets it
// only to wait for the rest: a read that finds all of b queued leaves the
// mark as it was, a setsockopt fewer. For a caller whose every wait on the
// socket goes through this Reader (or MarkFD) until it calls Release: the
// mark left may be above what another reader waits for.
func (r *Reader) ReadFirst(b []byte) (int, error) {
	r.first = true
	n, err := r.ReadFull(b)
	r.first = false
	return n, err
}

// readable is ReadFull's RawConn.Read callback: true when the read is
// over (done or failed), false to wait for the mark.
func (r *Reader) readable(fd uintptr) bool {
	if !r.first && !r.setMark(fd, min(len(r.b)-r.got, r.chunk)) {
		return true
	}
	for {
		n, err := syscall.Read(int(fd), r.b[r.got:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			// Set already unless ReadFirst, whose wait it is for.
			return !r.setMark(fd, min(len(r.b)-r.got, r.chunk))
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
		return !r.setMark(fd, min(len(r.b)-r.got, r.chunk))
	}
}

// Release sets the mark back to one byte, for a caller that next waits
// for the socket through other reads (a buffered reader would otherwise
// wait for a mark a small frame never reaches).
func (r *Reader) Release() error {
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

// MarkFD sets the socket's mark to want (at most the chunk) from inside a
// RawConn callback of another reader of the same socket (the proxy's
// spliced Produce reader, which waits for a batch body with it), keeping
// the mark this Reader knows right: Release sets it back afterwards.
func (r *Reader) MarkFD(fd uintptr, want int) bool {
	ok := r.setMark(fd, max(1, min(want, r.chunk)))
	r.err = nil
	return ok
}

// setMark sets SO_RCVLOWAT to want unless it is set already; false (and
// r.err) when the kernel refused.
func (r *Reader) setMark(fd uintptr, want int) bool {
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
