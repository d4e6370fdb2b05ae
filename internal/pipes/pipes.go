// Package pipes holds kernel pipes for splice(2) between sockets: bytes go
// socket -> pipe -> socket without passing through user space. The
// replicator's copy splices unchanged record batch bodies from its source
// fetch connection to its target produce connection with it
// (replicator/fetchsplice.go); the proxy splices large Produce batch
// bodies from the client to the broker (proxy/produce_splice.go) and
// streamed Fetch batch bodies from the broker to the client
// (proxy/fetch_splice.go) with it.
//
// Pipes are pooled (creating one is three syscalls) and capped per pool: a
// caller that finds none takes its buffered path. A pipe goes back to the
// pool only empty: one left with bytes in it (a splice that failed half
// way) is closed.
package pipes

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"

	"github.com/kproxy/kproxy/internal/lowat"
)

const (
	// Size is the room asked for each pipe (F_SETPIPE_SZ; the default
	// /proc/sys/fs/pipe-max-size is 1 MiB). Spliced socket pages may fill
	// a pipe's slots before its bytes reach this: In reports a full pipe
	// (ErrFull) and the caller goes on in the next one.
	Size = 1 << 20

	fSetPipeSz = 1031   // F_SETPIPE_SZ
	fionread   = 0x541B // FIONREAD (SIOCINQ)
	spliceMove = 0x1    // SPLICE_F_MOVE
	spliceNB   = 0x2    // SPLICE_F_NONBLOCK
	spliceMore = 0x4    // SPLICE_F_MORE
)

// Pipe is one pipe: its ends (non-blocking) and N, the bytes in it.
type Pipe struct {
	r, w int
	N    int
}

// Pool keeps empty pipes for reuse and bounds how many are open at once:
// what the pool's users hold in the kernel is at most Max*Size bytes.
type Pool struct {
	Max int

	mu     sync.Mutex
	idle   []*Pipe
	open   int
	closed bool // Close ran: pipes put back are closed
}

// Get returns an empty pipe, or nil when Max are open or the kernel
// refused one.
func (pp *Pool) Get() *Pipe {
	pp.mu.Lock()
	if n := len(pp.idle); n > 0 {
		p := pp.idle[n-1]
		pp.idle = pp.idle[:n-1]
		pp.mu.Unlock()
		return p
	}
	if pp.open >= pp.Max || pp.closed {
		pp.mu.Unlock()
		return nil
	}
	pp.open++
	pp.mu.Unlock()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		pp.mu.Lock()
		pp.open--
		pp.mu.Unlock()
		return nil
	}
	// Smaller than asked (a user over its pipe page limit) still works:
	// the pipe is full sooner.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSz, Size)
	return &Pipe{r: fds[0], w: fds[1]}
}

// Put gives p back: to the pool when empty, else closed (its bytes are
// garbage now: the pipe is never reused with them).
func (pp *Pool) Put(p *Pipe) {
	pp.mu.Lock()
	if p.N == 0 && !pp.closed {
		pp.idle = append(pp.idle, p)
		pp.mu.Unlock()
		return
	}
	pp.open--
	pp.mu.Unlock()
	p.close()
}

// Close closes the idle pipes, and every pipe put back from now on; Get
// returns nil after it. For the end of the pool's user (a stopped
// replicator), whose pipes would otherwise stay open with the process.
func (pp *Pool) Close() {
	pp.mu.Lock()
	idle := pp.idle
	pp.idle, pp.closed = nil, true
	pp.open -= len(idle)
	pp.mu.Unlock()
	for _, p := range idle {
		p.close()
	}
}

func (p *Pipe) close() {
	syscall.Close(p.r)
	syscall.Close(p.w)
}

// InUse is how many pipes are out of the pool.
func (pp *Pool) InUse() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.open - len(pp.idle)
}

// ErrFull says a pipe has no room left for what was asked.
var ErrFull = errors.New("pipe full")

// WriteIn copies b (bytes a buffered reader already holds) into p; it
// returns what fit, with ErrFull when p filled first.
func (p *Pipe) WriteIn(b []byte) (int, error) {
	got := 0
	for got < len(b) {
		n, err := syscall.Write(p.w, b[got:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return got, ErrFull
		}
		if err != nil {
			return got, fmt.Errorf("writing a pipe: %w", err)
		}
		got += n
		p.N += n
	}
	return got, nil
}

// ReadOut reads len(b) bytes out of p (which holds them).
func (p *Pipe) ReadOut(b []byte) error {
	got := 0
	for got < len(b) {
		n, err := syscall.Read(p.r, b[got:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading a pipe: %w", err)
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		got += n
		p.N -= n
	}
	return nil
}

// Splicer splices between one plain TCP socket and pipes; its callbacks
// are bound once (a closure per RawConn call would be allocated).
type Splicer struct {
	raw syscall.RawConn
	// LW, when set, is the socket's low-water-mark reader: a splice from
	// the socket waits for the rest of what it wants (up to a chunk)
	// with it, one wake-up instead of one per segment.
	LW *lowat.Reader

	// the splice in progress
	p    *Pipe
	want int
	got  int
	full bool // In: the pipe is full (the socket still has bytes)
	more bool // Out: more of the request follows
	err  error
	b    []byte // SendMore's bytes

	onReadable func(fd uintptr) bool
	onWritable func(fd uintptr) bool
	onSend     func(fd uintptr) bool
	onDiscard  func(fd uintptr) bool
}

// NewSplicer returns a splicer for nc, or nil when nc is not a plain TCP
// connection (TLS: its bytes must pass through user space).
func NewSplicer(nc net.Conn) *Splicer {
	raw := lowat.RawConn(nc)
	if raw == nil {
		return nil
	}
	s := &Splicer{raw: raw}
	s.onReadable = s.readable
	s.onWritable = s.writable
	s.onSend = s.send
	s.onDiscard = s.discard
	return s
}

// In splices up to n bytes from the socket into p. It returns what it
// moved; ErrFull when p filled first (the rest goes to another pipe). The
// socket's read deadline applies.
func (s *Splicer) In(p *Pipe, n int) (int, error) {
	s.p, s.want, s.got, s.full, s.err = p, n, 0, false, nil
	err := s.raw.Read(s.onReadable)
	got := s.got
	if err == nil {
		err = s.err
	}
	if err == nil && s.full {
		err = ErrFull
	}
	s.p, s.err = nil, nil
	return got, err
}

func (s *Splicer) readable(fd uintptr) bool {
	for s.got < s.want {
		n, err := syscall.Splice(int(fd), nil, s.p.w, nil, s.want-s.got, spliceMove|spliceNB)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			// The socket is empty, or the pipe is full: the socket's
			// queue tells which.
			var queued int32
			if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, fionread, uintptr(unsafe.Pointer(&queued))); e == 0 && queued > 0 {
				s.full = true
				return true
			}
			if s.LW != nil {
				s.LW.MarkFD(fd, s.want-s.got)
			}
			return false // wait for the socket
		case err != nil:
			s.err = fmt.Errorf("splicing from the socket: %w", err)
			return true
		case n == 0:
			s.err = io.ErrUnexpectedEOF
			return true
		}
		s.got += int(n)
		s.p.N += int(n)
	}
	return true
}

// Out splices n bytes (which p holds) from p into the socket; more says
// more of the request follows (SPLICE_F_MORE). The socket's write
// deadline applies.
func (s *Splicer) Out(p *Pipe, n int, more bool) error {
	s.p, s.want, s.got, s.more, s.err = p, n, 0, more, nil
	err := s.raw.Write(s.onWritable)
	if err == nil {
		err = s.err
	}
	s.p, s.err = nil, nil
	return err
}

func (s *Splicer) writable(fd uintptr) bool {
	flags := spliceMove | spliceNB
	if s.more {
		flags |= spliceMore
	}
	for s.got < s.want {
		n, err := syscall.Splice(s.p.r, nil, int(fd), nil, s.want-s.got, flags)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false // the socket is full (the pipe holds the bytes)
		case err != nil:
			s.err = fmt.Errorf("splicing to the socket: %w", err)
			return true
		case n == 0:
			s.err = io.ErrUnexpectedEOF
			return true
		}
		s.got += int(n)
		s.p.N -= int(n)
	}
	return true
}

// SendMore writes b to the socket with MSG_MORE: the bytes wait for the
// body spliced after them instead of leaving as a segment of their own
// (the socket has TCP_NODELAY). The socket's write deadline applies.
func (s *Splicer) SendMore(b []byte) error {
	s.b, s.got, s.err = b, 0, nil
	err := s.raw.Write(s.onSend)
	if err == nil {
		err = s.err
	}
	s.b, s.err = nil, nil
	return err
}

func (s *Splicer) send(fd uintptr) bool {
	for s.got < len(s.b) {
		n, err := syscall.SendmsgN(int(fd), s.b[s.got:], nil, nil, syscall.MSG_MORE)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			s.err = fmt.Errorf("writing to the socket: %w", err)
			return true
		}
		s.got += n
	}
	return true
}

// Discard drops the next n bytes from the socket without copying them to
// user space (recv with MSG_TRUNC, which TCP takes as "drop"). The
// socket's read deadline applies.
func (s *Splicer) Discard(n int) error {
	s.want, s.got, s.err = n, 0, nil
	err := s.raw.Read(s.onDiscard)
	if err == nil {
		err = s.err
	}
	s.err = nil
	return err
}

func (s *Splicer) discard(fd uintptr) bool {
	for s.got < s.want {
		n, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, 0, uintptr(s.want-s.got), syscall.MSG_TRUNC|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			if s.LW != nil {
				s.LW.MarkFD(fd, s.want-s.got)
			}
			return false
		case e != 0:
			s.err = fmt.Errorf("discarding from the socket: %w", e)
			return true
		case n == 0:
			s.err = io.ErrUnexpectedEOF
			return true
		}
		s.got += int(n)
	}
	return true
}
