package proxy

// The streaming Fetch relay: an upstream Fetch answer goes to the client
// partition by partition as it arrives, instead of being read whole first.
//
// When (decided in handleFetch, before the request goes upstream): the
// client's Fetch goes to exactly one upstream broker, every partition was
// planned without error, no partition's offsets go through an offset map
// (identity or plain cluster routes), and no policy or Metadata filter
// edits the answer afterwards. Any version kproxy accepts (v4-18).
//
// How: the answer's header fields are parsed as they arrive and patched in
// place, each change keeping its length (topic ids, -1 for epochs and the
// preferred read replica, this instance for a current leader); the record
// sets are copied through, each batch's PartitionLeaderEpoch set to -1 on
// the way, and batch bodies of spliceMin or more go socket to socket
// (io.CopyN between TCP connections is splice on Linux). So the client
// frame has the upstream's size, known from its first four bytes.
//
// Nothing goes to the client until a record set of fetchStreamMin bytes
// or more arrives (commit). Up to then the bytes are kept unpatched; an
// answer that is not a plain one (an error, a preferred replica, a leader
// hint, tagged fields, partitions not as asked) or that ends before commit
// is read whole and answered by the buffered path, which therefore still
// answers every small or unusual fetch exactly as before.
//
// After commit, per-partition errors, leader hints and diverging epochs are
// patched in place as the buffered path re-encodes them (the same bytes for
// a canonically encoded answer: FetchStreamMatchesBuffered). What cannot be
// patched in place after commit - partitions not in the order asked, a
// Brokers list (v16+, only with a leader hint), unknown tags - closes the
// client connection: a fetch is a read, the client fetches again, and the
// topics' leaders are refreshed so the next plan differs.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchStreamMin is the record set size that starts streaming (commit);
// 0 or less turns the relay off. A variable for tests.
var fetchStreamMin = 32 << 10

// fetchStreamed counts answers whose relay committed to streaming (tests).
var fetchStreamed atomic.Int64

// spliceMin is the batch body size copied socket to socket rather than
// through the staging buffer: below it, the syscalls of a splice cost more
// than the copy they save.
const spliceMin = 64 << 10

// stageMax is how much the staging buffer gathers before a write.
const stageMax = 64 << 10

// streamStall bounds each wait for upstream bytes while streaming, and is
// the slack on the first one.
const streamStall = 30 * time.Second

// errStreamAbandoned fails an upstream connection whose streamed answer
// was never read (the client went away first).
var errStreamAbandoned = errors.New("streamed fetch answer abandoned")

// fetchStream is the response handleFetch gives the write loop for a fetch
// relayed as it streams; the write loop calls relay at its turn.
type fetchStream struct {
	*kmsg.FetchResponse // the client's version, for the write loop

	s          *Server
	p          *pending // the one sub-request, sent with upstreamCall.stream
	sub        *kmsg.FetchRequest
	cluster    string
	plans      []fetchPlan // in sub-request order (one upstream)
	virtualIDs topicIDPairs
	// buffered answers from a whole body when the relay does not stream
	// (p.call.body holds it then), or from p's error.
	buffered func(p *pending) kmsg.Response
	ended    bool // the upstream stream was given back (or never existed)
	// sc, when set, is the connection's Fetch scratch, whose relay state
	// the relay reuses (nil: a relay of its own).
	sc *fetchScratch
	// capGen is Server.capGen when the partitions were planned: an answer
	// read after a later cap goes the buffered way, which plans again
	// (replanAfterCap).
	capGen uint64
	// splicer is the relay's splicer when sc is nil (fetch_splice.go).
	splicer *fetchSplicer
}

// abandon gives the upstream connection up when the answer is never
// relayed: its socket is mid-frame (or will be).
func (f *fetchStream) abandon() {
	if f.ended {
		return
	}
	f.ended = true
	c := f.p.call
	if c == nil {
		return
	}
	if c.taken() { // c.sr is set (or c.err) and readLoop waits for end
		if c.sr != nil {
			c.sr.end(errStreamAbandoned)
		}
		return
	}
	f.p.u.fail(errStreamAbandoned)
}

// relayOut is where a relay writes: the client socket, with the write
// loop's deadline per write, and a copy for Options.Capture (tests).
type relayOut struct {
	nc      net.Conn
	wt      time.Duration
	capture *[]byte
	n       int
	writes  int // writes and splices to the client (tests)
}

func (o *relayOut) Write(b []byte) (int, error) {
	_ = o.nc.SetWriteDeadline(time.Now().Add(o.wt))
	n, err := o.nc.Write(b)
	o.n += n
	o.writes++
	if o.capture != nil {
		*o.capture = append(*o.capture, b[:n]...)
	}
	return n, err
}

// relay waits for the upstream answer and streams it to out under the
// client's correlation id. It returns (nil, nil) when the answer was
// streamed whole; a response to write the ordinary way when it was not
// streamed (nothing was written); or an error after which the client
// connection must be closed (part of a frame may have been written).
func (f *fetchStream) relay(out *relayOut, corr int32) (kmsg.Response, error) {
	p := f.p
	if p.err != nil || p.call == nil {
		f.ended = true
		return f.buffered(p), nil
	}
	if _, err := p.call.wait(p.u, upstreamTimeout(f.sub)); err != nil {
		f.ended = true
		return f.buffered(p), nil
	}
	st := p.call.sr
	var r *fetchRelay
	if f.sc != nil {
		r = &f.sc.relay
		*r = fetchRelay{patches: r.patches[:0], stale: r.stale[:0]}
	} else {
		r = new(fetchRelay)
	}
	r.f, r.st, r.out, r.flex, r.version, r.upNC = f, st, out, f.sub.IsFlexible(), f.sub.Version, p.u.nc
	if tc, ok := out.nc.(*net.TCPConn); ok && out.capture == nil {
		if up, ok := p.u.nc.(*net.TCPConn); ok {
			r.spliceTo, r.spliceFrom = tc, up
			cached := &f.splicer
			if f.sc != nil {
				cached = &f.sc.splicer
			}
			r.sp = fetchSplicerFor(cached, up, tc)
		}
	}
	r.staged = getBuf()
	defer func() { putBuf(r.staged) }()
	_ = p.u.nc.SetReadDeadline(time.Now().Add(upstreamTimeout(f.sub)))
	err := r.run(corr)
	_ = p.u.nc.SetReadDeadline(time.Time{})
	switch {
	case err == nil && r.committed:
		f.ended = true
		st.end(nil)
		f.s.metrics.fetchStreamed.Inc()
		f.s.refreshSoon(f.cluster, dedupe(r.stale))
		return nil, nil
	case !r.committed:
		// Not streamed: the buffered path answers from the whole body
		// (and reports a malformed one as before), or from the error.
		f.ended = true
		f.s.metrics.fetchBuffered.Inc()
		if r.headerDone && !r.upstreamBroken {
			body, frame, rerr := r.rest()
			st.end(rerr)
			if rerr == nil {
				p.call.body, p.call.frame, p.call.framePool = body, frame, &fetchFramePool
				return f.buffered(p), nil
			}
			err = rerr
		} else {
			st.end(err)
		}
		p.call.err = fmt.Errorf("%w: upstream %s broker %d: %v", errUpstreamClosed, f.cluster, p.u.broker, err)
		return f.buffered(p), nil
	default:
		f.ended = true
		f.s.metrics.fetchRelayCut.Inc()
		if r.upstreamBroken {
			st.end(err)
		} else {
			st.end(r.drain())
		}
		f.s.refreshSoon(f.cluster, f.topicNames())
		return nil, fmt.Errorf("streamed fetch answer from %s broker %d: %w", f.cluster, p.u.broker, err)
	}
}

func (f *fetchStream) topicNames() []string {
	var names []string
	for i := range f.plans {
		if i == 0 || f.plans[i].name != f.plans[i-1].name {
			names = append(names, f.plans[i].name)
		}
	}
	return dedupe(names)
}

// errNotPlain stops the parse before commit: the answer goes the buffered
// way. After commit the same conditions are errStreamUnpatchable.
var (
	errNotPlain          = errors.New("not a plain fetch answer")
	errStreamUnpatchable = errors.New("answer needs a rewrite that changes its size")
)

// fetchRelay is one relay's parse state. staged holds bytes read and not
// yet written: before commit, the client frame's header space and the
// answer's body so far, unpatched; after commit, what was read since the
// last write. patches apply to staged when it is written.
type fetchRelay struct {
	f       *fetchStream
	st      *upstreamStream
	out     *relayOut
	flex    bool
	version int16

	staged     *[]byte
	patches    []relayPatch
	committed  bool
	hdr        int // header bytes at the start of staged before commit
	bodyLen    int // the answer body's size (the client frame's, less its header)
	corr       int32
	headerDone bool // the upstream response header was read
	entry      int  // plan index of the partition being read
	stale      []string

	upNC                 net.Conn // the upstream socket (read deadlines)
	spliceTo, spliceFrom *net.TCPConn
	sp                   *fetchSplicer    // the own splice loop (nil: io.CopyN)
	spliced              bool             // the last batch body went through sp
	marked               bool             // sp may have left the upstream socket's mark above one byte
	lim                  io.LimitedReader // copyThrough's splice source
	upstreamBroken       bool             // a read from upstream failed
}

// relayPatch is one in-place change to staged bytes: n bytes at off set to
// val's first n bytes (-1 when val is nil), or, for a record set (stats
// set), epochs cleared and the batches counted.
type relayPatch struct {
	off, n int
	val    [16]byte // the value (n bytes), unless fill
	fill   bool     // n bytes of 0xff (-1)
	recs   bool
	stats  *topicStats
}

// need reads n more bytes of the answer into staged and returns them.
func (r *fetchRelay) need(n int) ([]byte, error) {
	if n < 0 || n > r.st.left {
		return nil, fmt.Errorf("%w: field of %d bytes, %d left in frame", errMalformed, n, r.st.left)
	}
	if err := r.releaseMark(); err != nil {
		return nil, err
	}
	b := *r.staged
	at := len(b)
	b = grow(b, n)
	if _, err := io.ReadFull(r.st.r, b[at:at+n]); err != nil {
		r.upstreamBroken = true
		return nil, err
	}
	r.st.left -= n
	*r.staged = b
	return b[at : at+n], nil
}

var errMalformed = errors.New("malformed fetch answer")

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		g := make([]byte, len(b), 2*cap(b)+n)
		copy(g, b)
		b = g
	}
	return b[:len(b)+n]
}

func (r *fetchRelay) int16() (int16, error) {
	b, err := r.need(2)
	if err != nil {
		return 0, err
	}
	return int16(binary.BigEndian.Uint16(b)), nil
}

func (r *fetchRelay) int32() (int32, error) {
	b, err := r.need(4)
	if err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(b)), nil
}

func (r *fetchRelay) uvarint() (uint32, error) {
	var x uint32
	for shift := uint(0); shift < 35; shift += 7 {
		b, err := r.need(1)
		if err != nil {
			return 0, err
		}
		x |= uint32(b[0]&0x7f) << shift
		if b[0] < 0x80 {
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: uvarint too long", errMalformed)
}

// length reads an array, string or bytes length in the version's
// encoding: flexible ones are compact (uvarint n+1, 0 for null); null is -1.
func (r *fetchRelay) length(int16Len bool) (int, error) {
	if r.flex {
		u, err := r.uvarint()
		return int(u) - 1, err
	}
	if int16Len {
		n, err := r.int16()
		return int(n), err
	}
	n, err := r.int32()
	return int(n), err
}

// tags reads a tagged-field section, calling each for every field with its
// tag, the offset of its value in staged, and its size. Values are read
// into staged.
func (r *fetchRelay) tags(each func(tag uint32, off, n int) error) error {
	k, err := r.uvarint()
	if err != nil {
		return err
	}
	for ; k > 0; k-- {
		tag, err := r.uvarint()
		if err != nil {
			return err
		}
		n, err := r.uvarint()
		if err != nil {
			return err
		}
		if _, err := r.need(int(n)); err != nil {
			return err
		}
		if err := each(tag, len(*r.staged)-int(n), int(n)); err != nil {
			return err
		}
	}
	return nil
}

// notPlain is errNotPlain before commit; after it, the condition is
// patched in place by the caller (nil) or, when unpatchable, is fatal.
func (r *fetchRelay) notPlain(patchable bool) error {
	if !r.committed {
		return errNotPlain
	}
	if patchable {
		return nil
	}
	return errStreamUnpatchable
}

// run parses the answer, committing and writing as it goes.
func (r *fetchRelay) run(corr int32) error {
	r.corr = corr
	// The client frame's header goes first in staged (filled at commit).
	r.hdr = 8
	if r.flex {
		r.hdr = 9
	}
	*r.staged = grow((*r.staged)[:0], r.hdr)
	// The upstream response header: correlation id and, flexible, tags.
	b, err := r.need(4)
	if err != nil {
		return err
	}
	if got := int32(binary.BigEndian.Uint32(b)); got != r.f.p.call.corr {
		r.upstreamBroken = true
		return fmt.Errorf("%w: correlation id %d, expected %d", errMalformed, got, r.f.p.call.corr)
	}
	if r.flex {
		if err := r.tags(func(uint32, int, int) error { return nil }); err != nil {
			return err
		}
	}
	*r.staged = (*r.staged)[:r.hdr] // the upstream header is not the client's
	r.bodyLen = r.st.left
	r.headerDone = true
	if r.f.s.capGen.Load() != r.f.capGen {
		return errNotPlain // planned before a cutover's cap: the buffered path plans again
	}

	v := r.version
	if v >= 1 {
		if _, err := r.need(4); err != nil { // ThrottleMillis
			return err
		}
	}
	if v >= 7 {
		code, err := r.int16()
		if err != nil {
			return err
		}
		session, err := r.int32()
		if err != nil {
			return err
		}
		if code != 0 || session != 0 {
			return errNotPlain // before commit, always
		}
	}
	nt, err := r.length(false)
	if err != nil {
		return err
	}
	if nt != len(r.f.sub.Topics) {
		return errNotPlain
	}
	for ti := range nt {
		asked := &r.f.sub.Topics[ti]
		if v <= 12 {
			n, err := r.length(true)
			if err != nil {
				return err
			}
			name, err := r.need(max(n, 0))
			if err != nil {
				return err
			}
			if n < 0 || string(name) != asked.Topic {
				return r.notPlain(false)
			}
		}
		if v >= 13 {
			id, err := r.need(16)
			if err != nil {
				return err
			}
			if !bytes.Equal(id, asked.TopicID[:]) {
				return r.notPlain(false)
			}
			if virt := r.f.s.fetchVirtualID(r.f.cluster, asked.TopicID, r.f.virtualIDs); virt != asked.TopicID {
				r.patch(len(*r.staged)-16, 16, virt[:])
			}
		}
		np, err := r.length(false)
		if err != nil {
			return err
		}
		if np != len(asked.Partitions) {
			return r.notPlain(false)
		}
		for pi := range np {
			if err := r.partition(asked.Partitions[pi].Partition); err != nil {
				return err
			}
			r.entry++
		}
		if r.flex {
			if err := r.tags(func(uint32, int, int) error { return r.notPlain(false) }); err != nil {
				return err
			}
		}
	}
	if r.flex {
		// Brokers (v16+) names upstream brokers and must be rewritten to
		// this instance, a different size; other top-level tags are
		// unknown to kproxy.
		if err := r.tags(func(uint32, int, int) error { return r.notPlain(false) }); err != nil {
			return err
		}
	}
	if r.st.left != 0 {
		return fmt.Errorf("%w: %d bytes after the answer", errMalformed, r.st.left)
	}
	if !r.committed {
		return errNotPlain // small: the buffered path answers it
	}
	return r.flush()
}

// partition parses one partition of the answer.
func (r *fetchRelay) partition(asked int32) error {
	v := r.version
	b, err := r.need(4 + 2 + 8)
	if err != nil {
		return err
	}
	if int32(binary.BigEndian.Uint32(b)) != asked {
		return r.notPlain(false)
	}
	code := int16(binary.BigEndian.Uint16(b[4:]))
	plan := &r.f.plans[r.entry]
	if code != 0 {
		if err := r.notPlain(true); err != nil {
			return err
		}
		if isStaleLeaderCode(code) {
			r.stale = append(r.stale, plan.name)
		}
	}
	fixed := 0
	if v >= 4 {
		fixed += 8 // LastStableOffset
	}
	if v >= 5 {
		fixed += 8 // LogStartOffset
	}
	if _, err := r.need(fixed); err != nil {
		return err
	}
	if v >= 4 {
		n, err := r.length(false)
		if err != nil {
			return err
		}
		for range max(n, 0) {
			if _, err := r.need(16); err != nil { // ProducerID, FirstOffset
				return err
			}
			if r.flex {
				if err := r.tags(func(uint32, int, int) error { return r.notPlain(false) }); err != nil {
					return err
				}
			}
		}
	}
	if v >= 11 {
		rep, err := r.int32()
		if err != nil {
			return err
		}
		if rep >= 0 {
			if err := r.notPlain(true); err != nil {
				return err
			}
			r.patch(len(*r.staged)-4, 4, nil)
		}
	}
	n, err := r.length(false)
	if err != nil {
		return err
	}
	if err := r.records(max(n, 0), plan.stats); err != nil {
		return err
	}
	if r.flex {
		return r.tags(r.partitionTag)
	}
	return nil
}

// partitionTag patches a partition's tagged field in place: a leader hint
// names this instance with no epoch, a diverging epoch becomes unknown
// (kproxy asks with no last fetched epoch, so a broker sends none).
func (r *fetchRelay) partitionTag(tag uint32, off, n int) error {
	b := (*r.staged)[off : off+n]
	switch {
	case tag == 1 && n == 9 && b[8] == 0: // CurrentLeader: LeaderID, LeaderEpoch, no tags
		id := int32(binary.BigEndian.Uint32(b))
		if id < 0 { // re-encoded as absent by the buffered path
			return r.notPlain(false)
		}
		if err := r.notPlain(true); err != nil {
			return err
		}
		var val [4]byte
		binary.BigEndian.PutUint32(val[:], uint32(r.f.s.virtualNode(id)))
		r.patch(off, 4, val[:])
		r.patch(off+4, 4, nil)
		return nil
	}
	return r.notPlain(false)
}

// patch records an in-place change to staged (see relayPatch).
func (r *fetchRelay) patch(off, n int, val []byte) {
	p := relayPatch{off: off, n: n, fill: val == nil}
	copy(p.val[:n], val)
	r.patches = append(r.patches, p)
}

// records relays one partition's record set of n bytes.
func (r *fetchRelay) records(n int, stats *topicStats) error {
	if n == 0 {
		return nil
	}
	if n < fetchStreamMin || (!r.committed && n > r.st.left) {
		if _, err := r.need(n); err != nil {
			return err
		}
		r.patches = append(r.patches, relayPatch{off: len(*r.staged) - n, n: n, recs: true, stats: stats})
		if r.committed && len(*r.staged) >= stageMax {
			return r.flush()
		}
		return nil
	}
	if !r.committed {
		r.committed = true
		fetchStreamed.Add(1)
		b := *r.staged
		binary.BigEndian.PutUint32(b, uint32(r.hdr-4+r.bodyLen))
		binary.BigEndian.PutUint32(b[4:], uint32(r.corr))
		if r.flex {
			b[8] = 0
		}
	}
	// Batch by batch, as clearBatchEpochs and countBatches walk them: the
	// header is patched and counted in staged, the body copied through.
	// have is how much of the set from the current batch's start is read
	// into staged already (batchBytes may read past a short batch).
	var c batchCount
	c.bytes = n
	counting := true
	have := 0
	for n >= 17 {
		var err error
		if have, err = r.batchBytes(17, n, have); err != nil {
			return err
		}
		h := (*r.staged)[len(*r.staged)-have:]
		size := int(int32(binary.BigEndian.Uint32(h[8:]))) + 12
		if size < 17 || size > n {
			break
		}
		if h[16] == 2 {
			copy(h[12:16], []byte{0xff, 0xff, 0xff, 0xff}) // PartitionLeaderEpoch
		}
		if counting && size >= 61 {
			if have, err = r.batchBytes(61, n, have); err != nil {
				return err
			}
			h = (*r.staged)[len(*r.staged)-have:]
			if h[16] == 2 {
				c.offsets += int64(int32(binary.BigEndian.Uint32(h[23:]))) + 1
				attrs := binary.BigEndian.Uint16(h[21:])
				if attrs&batchControl == 0 {
					c.records += int64(int32(binary.BigEndian.Uint32(h[57:])))
				}
			}
		} else {
			counting = false
		}
		n -= size
		if have >= size { // all of it read (a batch shorter than a header)
			have -= size
			continue
		}
		if err := r.copyThrough(size - have); err != nil {
			return err
		}
		have = 0
	}
	if err := r.copyThrough(n - have); err != nil { // a truncated last batch, as it is
		return err
	}
	if err := r.releaseMark(); err != nil {
		return err
	}
	if stats != nil {
		i := clusterIndex(r.f.cluster)
		stats.fetchBytes[i].Add(float64(c.bytes))
		stats.fetchRecords[i].Add(float64(c.records))
	}
	return nil
}

// copyThrough copies n bytes of the answer to the client unchanged: large
// runs socket to socket, the rest through staged.
func (r *fetchRelay) copyThrough(n int) error {
	if n >= spliceMin && r.sp != nil {
		if done, err := r.spliceBody(n); done {
			return err
		}
	}
	if n >= spliceMin && r.spliceTo != nil {
		if err := r.flush(); err != nil {
			return err
		}
		// What the reader has buffered first, then the socket itself.
		for n > 0 && r.st.r.Buffered() > 0 {
			b, _ := r.st.r.Peek(min(n, r.st.r.Buffered()))
			if _, err := r.out.Write(b); err != nil {
				return err
			}
			_, _ = r.st.r.Discard(len(b))
			n -= len(b)
			r.st.left -= len(b)
		}
		if err := r.releaseMark(); err != nil {
			return err
		}
		_ = r.spliceFrom.SetReadDeadline(time.Now().Add(streamStall))
		_ = r.spliceTo.SetWriteDeadline(time.Now().Add(r.out.wt))
		// io.CopyN, with the relay's own LimitedReader: CopyN makes one
		// per call, an allocation per spliced batch.
		r.lim = io.LimitedReader{R: r.spliceFrom, N: int64(n)}
		m, err := r.spliceTo.ReadFrom(&r.lim)
		if err == nil && m < int64(n) {
			err = io.EOF
		}
		r.lim.R = nil
		r.st.left -= int(m)
		r.out.n += int(m)
		if err != nil {
			r.upstreamBroken = true // which side failed is unknown: both go
			return err
		}
		return nil
	}
	r.spliced = false
	for n > 0 {
		k := min(n, stageMax)
		if _, err := r.need(k); err != nil {
			return err
		}
		n -= k
		if len(*r.staged) >= stageMax {
			_ = r.spliceFromDeadline()
			if err := r.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// spliceFromDeadline extends the upstream read deadline while bytes flow.
func (r *fetchRelay) spliceFromDeadline() error {
	if r.upNC == nil {
		return nil
	}
	return r.upNC.SetReadDeadline(time.Now().Add(streamStall))
}

// flush applies the patches to staged and writes it (after commit).
func (r *fetchRelay) flush() error {
	r.applyPatches()
	b := *r.staged
	if len(b) > 0 {
		if _, err := r.out.Write(b); err != nil {
			return err
		}
	}
	*r.staged = b[:0]
	return nil
}

// applyPatches applies the patches to staged.
func (r *fetchRelay) applyPatches() {
	b := *r.staged
	for _, p := range r.patches {
		switch {
		case p.recs:
			clearBatchEpochs(b[p.off : p.off+p.n])
			if p.stats != nil {
				p.stats.noteFetched(r.f.cluster, b[p.off:p.off+p.n])
			}
		case p.fill:
			for i := p.off; i < p.off+p.n; i++ {
				b[i] = 0xff
			}
		default:
			copy(b[p.off:p.off+p.n], p.val[:p.n])
		}
	}
	r.patches = r.patches[:0]
}

// rest reads the remainder of an answer that is not streamed and returns
// the whole body (after the upstream header) in a pooled frame buffer.
func (r *fetchRelay) rest() ([]byte, *[]byte, error) {
	if err := r.releaseMark(); err != nil {
		return nil, nil, err
	}
	pooled := fetchFramePool.Get().(*[]byte)
	prefix := (*r.staged)[min(r.hdr, len(*r.staged)):]
	body := append((*pooled)[:0], prefix...)
	at := len(body)
	body = grow(body, r.st.left)
	if _, err := io.ReadFull(r.st.r, body[at:]); err != nil {
		putFetchFrame(pooled)
		return nil, nil, err
	}
	r.st.left = 0
	*pooled = body
	return body, pooled, nil
}

// drain reads and drops what is left of the upstream frame, so that the
// upstream connection can carry on after a relay the client could not get.
func (r *fetchRelay) drain() error {
	if err := r.releaseMark(); err != nil {
		return err
	}
	_, err := io.CopyN(io.Discard, r.st.r, int64(r.st.left))
	r.st.left = 0
	return err
}

// relayFetch runs a streamed Fetch's relay on the write loop: the answer
// written whole (nil response, its size), or the response to write as any
// other when it was not streamed, or an error that closes the connection.
func (cc *clientConn) relayFetch(fs *fetchStream, s *slot, wt time.Duration) (kmsg.Response, int, error) {
	var out *relayOut
	if fs.sc != nil {
		out = &fs.sc.out
	} else {
		out = new(relayOut)
	}
	*out = relayOut{nc: cc.nc, wt: wt}
	capture := cc.srv.opts.Capture
	if capture != nil {
		out.capture = new([]byte)
	}
	resp, err := fs.relay(out, s.corr)
	if err == nil && resp == nil && capture != nil {
		capture(s.key, s.version, *out.capture)
	}
	return resp, out.n, err
}
