package proxy

// Batch bodies of a streamed Fetch answer (fetch_stream.go), upstream
// socket -> pipe -> client socket with kproxy's own splice loop instead of
// io.CopyN (Go's splice). What it saves, per batch body, measured with
// strace and perf on a 1 KiB-record topic read by franz-go (bench/RESULTS.md
// "Fetch relay CPU"):
//
//   - the bytes before the body (the patched batch header, the partition
//     fields, smaller record sets gathered in staged) and what the upstream
//     reader had already buffered went out as two write(2)s of their own,
//     each a loopback segment whose receive processing (and the client's
//     wake-up) the kernel runs in kproxy's context. Here they are written
//     into the pipe and leave with the body's first chunk in one splice.
//   - Go's splice takes whatever the upstream socket holds, so every
//     arrival was a splice in, a splice out, often an EAGAIN and a poller
//     wake-up, and a window-update ACK sent in kproxy's context per read.
//     Here the upstream socket's low-water mark (SO_RCVLOWAT) is set to
//     the rest of the chunk, so the relay wakes once per fetchSpliceChunk.
//   - the batch header after a spliced body was read through the upstream
//     reader, which filled its 32 KiB buffer with the next body: copied
//     into user space and written out again. batchBytes reads just the
//     header, whole in one read (17 bytes and then 44 were two), and sets
//     the socket's mark only when it must wait for the rest.
//
// Not SPLICE_F_MORE (MSG_MORE) on the splices out, as the Produce path
// does: measured, kproxy's CPU per GB was lower without it (medians 0.41
// against 0.46 CPU-s/GB over 10 paired rounds: lower in 9, one tie).
//
// Pipes come from the proxy's pool (splice_pipes.go), which caps them
// process-wide; a relay that finds none uses io.CopyN as before. The
// upstream socket's mark is set back to one byte after each record set
// relayed this way (releaseMark), and before anything reads the socket
// through its buffered reader (which would otherwise wait for a mark a
// small frame never reaches); between the set's bodies and headers every
// wait sets the mark it needs.

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/kproxy/kproxy/internal/lowat"
	"github.com/kproxy/kproxy/internal/pipes"
)

// fetchSpliceChunk is the most of a batch body spliced in before it is
// spliced out, and the low-water mark the relay waits for; 0 turns the
// relay's own splice off (io.CopyN). A variable for tests and benchmarks.
// Splicing in at most what the pipe has room for keeps the mark within what
// one splice can take.
var fetchSpliceChunk = 1 << 20

// fetchSplicePumps counts splices of a relay's pipe to a client, and
// fetchHeaderReads the batch header reads straight from the upstream
// socket (tests).
var fetchSplicePumps, fetchHeaderReads atomic.Int64

// fetchSplicer is a connection's splice state for relayed batch bodies:
// a splicer on each of the two sockets (internal/pipes) and the upstream
// socket's low-water-mark reader, which the splice in sets the mark with.
type fetchSplicer struct {
	upNC, downNC net.Conn
	up, down     *pipes.Splicer
	lw           *lowat.Reader
	p            *pipes.Pipe // the pipe of the body in progress
}

// fetchSplicerFor returns a splicer between up and down, reusing *cached
// when it is for the same two connections; nil when either is not plain TCP.
func fetchSplicerFor(cached **fetchSplicer, up, down net.Conn) *fetchSplicer {
	if fetchSpliceChunk <= 0 {
		return nil
	}
	if s := *cached; s != nil && s.upNC == up && s.downNC == down {
		return s
	}
	us, ds := pipes.NewSplicer(up), pipes.NewSplicer(down)
	if us == nil || ds == nil {
		return nil
	}
	s := &fetchSplicer{upNC: up, downNC: down, up: us, down: ds, lw: lowat.New(lowat.RawConn(up), fetchSpliceChunk)}
	us.LW = s.lw
	*cached = s
	return s
}

// fill writes b (bytes already in user space) into the pipe, splicing
// the pipe out to the client whenever it is full.
func (s *fetchSplicer) fill(b []byte, out *relayOut) error {
	for len(b) > 0 {
		n, err := s.p.WriteIn(b)
		b = b[n:]
		switch {
		case err == pipes.ErrFull:
			if err := s.pump(out); err != nil {
				return err
			}
		case err != nil:
			return err
		}
	}
	return nil
}

// in splices up to want bytes from the upstream socket into the pipe,
// woken by the poller only once the rest of want arrived (the mark); it
// returns what it moved, with pipes.ErrFull when the pipe filled first.
// The upstream read deadline applies.
func (s *fetchSplicer) in(want int) (int, error) {
	return s.up.In(s.p, want)
}

// pump splices everything in the pipe to the client. The client write
// deadline applies.
func (s *fetchSplicer) pump(out *relayOut) error {
	n := s.p.N
	err := s.down.Out(s.p, n, false)
	out.n += n - s.p.N
	out.writes++
	fetchSplicePumps.Add(1)
	return err
}

// release sets the upstream socket's mark back to one byte.
func (s *fetchSplicer) release() error { return s.lw.Release() }

// spliceBody relays n bytes of a batch body with the relay's splicer:
// staged (patched) and what the upstream reader buffered go into the pipe
// first, then the body chunk by chunk. false when no pipe was free (the
// caller copies another way; nothing was done).
func (r *fetchRelay) spliceBody(n int) (bool, error) {
	p := splicePipes.Get()
	if p == nil {
		return false, nil
	}
	s := r.sp
	s.p = p
	r.marked = true // released once the record set is relayed (releaseMark)
	err := r.spliceBodyWith(s, n)
	s.p = nil
	splicePipes.Put(p) // closed, not pooled, when bytes were left in it
	r.spliced = err == nil
	return true, err
}

func (r *fetchRelay) spliceBodyWith(s *fetchSplicer, n int) error {
	r.applyPatches()
	if err := s.fill(*r.staged, r.out); err != nil {
		r.upstreamBroken = true // which side failed is unknown: both go
		return err
	}
	*r.staged = (*r.staged)[:0]
	for n > 0 && r.st.r.Buffered() > 0 {
		b, _ := r.st.r.Peek(min(n, r.st.r.Buffered()))
		if err := s.fill(b, r.out); err != nil {
			r.upstreamBroken = true
			return err
		}
		_, _ = r.st.r.Discard(len(b))
		n -= len(b)
		r.st.left -= len(b)
	}
	_ = r.upNC.SetReadDeadline(time.Now().Add(streamStall))
	_ = r.out.nc.SetWriteDeadline(time.Now().Add(r.out.wt))
	for n > 0 {
		got, err := s.in(max(1, min(n, fetchSpliceChunk, pipes.Size-s.p.N)))
		n -= got
		r.st.left -= got
		if err != nil && err != pipes.ErrFull {
			r.upstreamBroken = true
			return err
		}
		if err := s.pump(r.out); err != nil {
			r.upstreamBroken = true
			return err
		}
	}
	if s.p.N > 0 { // only the bytes before the body, when it was all buffered
		if err := s.pump(r.out); err != nil {
			r.upstreamBroken = true
			return err
		}
	}
	return nil
}

// batchBytes makes at least k bytes of the current batch read into
// staged, of which have are there already, and returns how many are; n is
// what the record set holds from the batch's start. After a spliced body
// (the upstream reader's buffer empty) it reads from the socket itself,
// where need would fill the buffer (32 KiB) with the start of the next
// body, bytes copied into user space only to be written back into the
// pipe; and it reads as much of a whole header as the set holds at once,
// one receive per batch where the 17 bytes that give the batch's size and
// the 44 after them were two. A batch turning out shorter than that (an
// old message format) leaves what was read past it in staged, the next
// batch's start (have). The read sets the socket's mark only to wait
// (lowat ReadFirst): the mark a splice left stays until releaseMark.
func (r *fetchRelay) batchBytes(k, n, have int) (int, error) {
	if have >= k {
		return have, nil
	}
	want := max(k, min(n, batchHeaderLen)) - have
	if !r.spliced || n < spliceMin || r.st.r.Buffered() > 0 || want > r.st.left {
		if _, err := r.need(k - have); err != nil {
			return have, err
		}
		return k, nil
	}
	b := grow(*r.staged, want)
	r.marked = true
	fetchHeaderReads.Add(1)
	if _, err := r.sp.lw.ReadFirst(b[len(b)-want:]); err != nil {
		r.upstreamBroken = true
		return have, err
	}
	r.st.left -= want
	*r.staged = b
	return have + want, nil
}

// releaseMark sets the upstream socket's mark back to one byte after the
// relay's splices and header reads, before anything waits for the socket
// through the upstream reader (or Go's poller), which would otherwise wait
// for a mark a small frame never reaches. Once per record set, not once per
// batch body.
func (r *fetchRelay) releaseMark() error {
	if !r.marked {
		return nil
	}
	r.marked = false
	if err := r.sp.release(); err != nil {
		r.upstreamBroken = true
		return err
	}
	return nil
}
