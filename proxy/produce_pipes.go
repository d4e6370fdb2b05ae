package proxy

// Kernel pipes for the spliced Produce path (produce_splice.go): a batch
// body goes client socket -> pipe -> upstream socket with splice(2), never
// through user space. Pipes are pooled (creating one is three syscalls) and
// capped: pipeMax pipes in the process, each with room for up to pipeSize
// bytes; a request that finds none reads the rest of its frame into memory
// (the buffered path). A pipe goes back to the pool only empty: one left
// with bytes in it (a send that failed half way) is closed.

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
	// pipeSize is the room asked for each pipe (F_SETPIPE_SZ; the default
	// /proc/sys/fs/pipe-max-size is 1 MiB). Spliced socket pages may fill
	// a pipe's slots before its bytes reach this: a full pipe is detected
	// (spliceIn) and the body goes on in the next one.
	pipeSize = 1 << 20
	// pipeMax bounds the pipes open at once, process-wide: what spliced
	// requests hold in the kernel is at most pipeMax*pipeSize, besides the
	// buffer budget they are charged to like any frame.
	pipeMax = 64

	fSetPipeSz = 1031   // F_SETPIPE_SZ
	fionread   = 0x541B // FIONREAD (SIOCINQ)
	spliceMove = 0x1    // SPLICE_F_MOVE
	spliceNB   = 0x2    // SPLICE_F_NONBLOCK
	spliceMore = 0x4    // SPLICE_F_MORE
)

// kpipe is one pipe: r and w its ends (non-blocking), n the bytes in it.
type kpipe struct {
	r, w int
	n    int
}

type pipePool struct {
	mu   sync.Mutex
	idle []*kpipe
	open int
}

var pipes pipePool

// get returns an empty pipe, or nil when pipeMax are open or the kernel
// refused one.
func (pp *pipePool) get() *kpipe {
	pp.mu.Lock()
	if n := len(pp.idle); n > 0 {
		p := pp.idle[n-1]
		pp.idle = pp.idle[:n-1]
		pp.mu.Unlock()
		return p
	}
	if pp.open >= pipeMax {
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
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSz, pipeSize)
	return &kpipe{r: fds[0], w: fds[1]}
}

// put gives p back: to the pool when empty, else closed.
func (pp *pipePool) put(p *kpipe) {
	if p.n != 0 {
		syscall.Close(p.r)
		syscall.Close(p.w)
		pp.mu.Lock()
		pp.open--
		pp.mu.Unlock()
		return
	}
	pp.mu.Lock()
	pp.idle = append(pp.idle, p)
	pp.mu.Unlock()
}

// inUse is how many pipes are out of the pool (tests).
func (pp *pipePool) inUse() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.open - len(pp.idle)
}

// errPipeFull says a pipe has no room left for what was asked.
var errPipeFull = errors.New("pipe full")

// writeIn copies b (bytes a buffered reader already holds) into p; it
// returns what fit.
func (p *kpipe) writeIn(b []byte) (int, error) {
	got := 0
	for got < len(b) {
		n, err := syscall.Write(p.w, b[got:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return got, errPipeFull
		}
		if err != nil {
			return got, err
		}
		got += n
		p.n += n
	}
	return got, nil
}

// readOut reads len(b) bytes out of p (which holds them).
func (p *kpipe) readOut(b []byte) error {
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
		p.n -= n
	}
	return nil
}

// sockSplicer splices between one socket and pipes; its callbacks are
// bound once (a closure per RawConn call would be allocated).
type sockSplicer struct {
	raw syscall.RawConn
	// lw, when set, is the socket's low-water-mark reader: a splice
	// from the socket waits for the rest of what it wants (up to a
	// chunk) with it, one wake-up instead of one per segment; the caller
	// releases the mark after.
	lw *lowat.Reader
	// the splice in progress
	p    *kpipe
	want int
	got  int
	full bool // in: the pipe is full (the socket still has bytes)
	more bool // out: more of the frame follows
	err  error

	b []byte // send's bytes

	onReadable func(fd uintptr) bool
	onWritable func(fd uintptr) bool
	onSend     func(fd uintptr) bool
}

func newSockSplicer(nc net.Conn) *sockSplicer {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockSplicer{raw: raw}
	s.onReadable = s.readable
	s.onWritable = s.writable
	s.onSend = s.send
	return s
}

// in splices up to n bytes from the socket into p. It returns what it
// moved; errPipeFull when p filled first (the rest goes to another pipe).
// The socket's read deadline applies.
func (s *sockSplicer) in(p *kpipe, n int) (int, error) {
	s.p, s.want, s.got, s.full, s.err = p, n, 0, false, nil
	err := s.raw.Read(s.onReadable)
	got := s.got
	if err == nil {
		err = s.err
	}
	if err == nil && s.full {
		err = errPipeFull
	}
	s.p, s.err = nil, nil
	return got, err
}

func (s *sockSplicer) readable(fd uintptr) bool {
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
			if s.lw != nil {
				s.lw.MarkFD(fd, s.want-s.got)
			}
			return false // wait for the socket
		case err != nil:
			s.err = fmt.Errorf("splicing from the client: %w", err)
			return true
		case n == 0:
			s.err = io.ErrUnexpectedEOF
			return true
		}
		s.got += int(n)
		s.p.n += int(n)
	}
	return true
}

// out splices n bytes (which p holds) from p into the socket; more says
// more of the frame follows (SPLICE_F_MORE). The socket's write deadline
// applies.
func (s *sockSplicer) out(p *kpipe, n int, more bool) error {
	s.p, s.want, s.got, s.more, s.err = p, n, 0, more, nil
	err := s.raw.Write(s.onWritable)
	if err == nil {
		err = s.err
	}
	s.p, s.err = nil, nil
	return err
}

func (s *sockSplicer) writable(fd uintptr) bool {
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
			s.err = fmt.Errorf("splicing to the broker: %w", err)
			return true
		case n == 0:
			s.err = io.ErrUnexpectedEOF
			return true
		}
		s.got += int(n)
		s.p.n -= int(n)
	}
	return true
}

// sendMore writes b to the socket with MSG_MORE: the bytes wait for the
// body spliced after them instead of leaving as a segment of their own
// (the socket has TCP_NODELAY), so the broker wakes once per request's
// worth of segments, not per piece. The socket's write deadline applies.
func (s *sockSplicer) sendMore(b []byte) error {
	s.b, s.got, s.err = b, 0, nil
	err := s.raw.Write(s.onSend)
	if err == nil {
		err = s.err
	}
	s.b, s.err = nil, nil
	return err
}

func (s *sockSplicer) send(fd uintptr) bool {
	for s.got < len(s.b) {
		n, err := syscall.SendmsgN(int(fd), s.b[s.got:], nil, nil, syscall.MSG_MORE)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			s.err = fmt.Errorf("writing to the broker: %w", err)
			return true
		}
		s.got += n
	}
	return true
}
