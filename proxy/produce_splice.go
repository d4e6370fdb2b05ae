package proxy

// The spliced Produce path: a large Produce request from a plaintext client
// is read incrementally, its batch bodies moved client socket -> pipe ->
// upstream socket with splice(2), so the record bytes never enter user
// space (issue 12; docs/decisions/010-produce-splice.md).
//
// Why it can: kproxy changes nothing in a batch but its header (the producer
// id and epoch, ident_pid.go, and the CRC, derived from the old one,
// internal/batchcrc), and decides where a partition goes from the topic,
// the partition and the header alone. So the reader keeps in memory every
// byte of the frame except the bodies (bytes 61 on) of the batches of a
// records section of produceSpliceMin bytes or more: the request header,
// the prefix fields, topic names, partition indexes, small sections whole,
// and each large section's batch headers, 61 bytes each. Each large
// section's bodies go, in order, into pipes of its own (splice_pipes.go, internal/pipes).
//
// The handler (00_produce.go) sees a large section as its batch headers
// only (a sparse section: 61 bytes per batch, each header's length field
// still the batch's true length); the functions that walk batches are told
// (sparse), and routing, the producer id rewrite, policy refusals, split
// leaders and the answers work as for any request. The sub-request for an
// upstream broker is encoded here (appendProduceBody, checked against kmsg
// for every version) with a sparse section's headers in memory and a
// placeholder for each body, then written under the connection's write
// lock: memory bytes by write, bodies by splice from the section's pipes,
// in order (upstreamConn.writeSpliced). A section not sent (a refused or
// failed partition) is dropped with its pipes when the request's
// synchronous part ends (finish): a pipe with bytes left is closed, not
// pooled.
//
// When: a plaintext TCP client (TLS needs the bytes in user space), a
// frame of produceSpliceMin or more, Produce v3+ in the advertised range,
// acks != 0 (an acks=0 request may wait in a cutover hold past its read),
// no transactional id (txn_producers.go rebases sequences per partition
// and may refuse them), no replicated topic (a cutover may hold its parts,
// which then outlive the read; produce_unanswered.go keys its batches), no
// tagged fields, v2 batches whose lengths add up. Anything else, found
// before the first body was spliced, reads the rest of the frame into
// memory and takes the buffered path; found after, the frame is rebuilt
// in memory from the kept bytes and the pipes (rebuild), and takes the
// buffered path too. A topic that becomes replicated between the read and
// the handler is caught there: the handler reads the bodies back into
// memory (materialize) before it routes anything.
//
// Limits: every byte of the frame, spliced or not, is charged to the
// buffer budget before it is read, as on the buffered path; the read
// deadline applies to each splice; pipes are pooled and capped (pipeMax
// in the process, spliceMaxPipes per request): a request that finds none
// goes on in memory. A client that stalls mid-frame holds its request's
// pipes until the read deadline closes it.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/lowat"
	"github.com/kproxy/kproxy/internal/pipes"
)

// produceSpliceMin is the records section size whose batch bodies are
// spliced; below it the syscalls cost more than the copy they save (as
// for the Fetch relay's spliceMin). 0 turns the path off. A variable for
// tests.
var produceSpliceMin = 64 << 10

// spliceMaxPipes bounds the pipes one request holds.
const spliceMaxPipes = 16

// produceSpliced counts requests sent upstream with spliced bodies, and
// produceRebuilt those that fell back after splicing began (tests).
var produceSpliced, produceRebuilt atomic.Int64

// batchHeaderLen is a v2 record batch's header, up to its records count.
const batchHeaderLen = 61

// spliceSection is one large records section: its batch headers in
// memory (mem[off:off+61*nb]), its bodies in chain, in order.
type spliceSection struct {
	off, nb int
	total   int           // the records section's length on the wire
	chain   []*pipes.Pipe // the pipes its bodies are in
	ci      int           // the first chain pipe not yet emptied (writer)
	full    bool          // the last chain pipe took what it could
	sent    bool
}

// bodyPiece says that n bytes of section sec's pipes come before mem[at:]
// in the frame (rebuild).
type bodyPiece struct{ at, sec, n int }

type prTopic struct {
	nameOff, nameLen int
	id               [16]byte
	first, n         int // its partitions in parts
}

type prPart struct {
	partition int32
	off, n    int // its records in mem
}

// splicePiece is a body a sub-request's encoding leaves out: n bytes of
// sec's pipes go after the encoding's first at bytes.
type splicePiece struct {
	at  int
	sec *spliceSection
	n   int
}

// spliceReq reads a Produce frame incrementally and holds it until the
// request's synchronous part is done: one per client connection, owned by
// its read loop (the handler's synchronous part runs there too).
type spliceReq struct {
	cc      *clientConn
	br      *bufio.Reader
	lw      *lowat.Reader
	ss      *pipes.Splicer
	acquire func(int) error // charges the budget (and sets the deadline)

	n       int // the frame's size
	left    int // frame bytes not read yet
	owed    int // bytes charged to the budget and not read yet
	charged int64
	mem     []byte
	err     error // reading failed: the connection ends
	unusual bool  // the buffered path takes the frame

	h         requestHeader
	clientOff int // -1: null
	clientLen int
	acks      int16
	timeout   int32
	topics    []prTopic
	parts     []prPart
	secs      []spliceSection
	bodies    []bodyPiece
	pipesHeld int
}

func newSpliceReq(cc *clientConn, br *bufio.Reader, lw *lowat.Reader, acquire func(int) error) *spliceReq {
	ss := pipes.NewSplicer(cc.nc)
	if ss == nil || lw == nil {
		return nil // not a plain TCP socket: no splice
	}
	ss.LW = lw
	return &spliceReq{cc: cc, br: br, lw: lw, ss: ss, acquire: acquire}
}

// wants reports whether a frame of n bytes whose first bytes br holds is
// one to read incrementally: a Produce large enough to hold a section to
// splice.
func (r *spliceReq) wants(n int) bool {
	if r == nil || produceSpliceMin <= 0 || n < produceSpliceMin {
		return false
	}
	// Only what arrived with the size is looked at: waiting here for the
	// key would wait before anything is charged to the budget
	// (TestStalledHugeFramesHoldOnlyWhatArrived). A client's frame starts
	// in the segment its size is in.
	if r.br.Buffered() < 2 {
		return false
	}
	b, err := r.br.Peek(2)
	return err == nil && binary.BigEndian.Uint16(b) == uint16(kmsg.Produce.Int16())
}

// read reads an n-byte frame body. spliced: the request is in r (dispatch
// it with r, then call finish); else frame is the whole body, in memory,
// for the buffered path (reuse is the buffer it may go into). charged is
// what the frame holds of the budget, also on error.
func (r *spliceReq) read(n int, reuse []byte) (frame []byte, spliced bool, charged int64, err error) {
	r.reset()
	r.n, r.left, r.mem = n, n, reuse[:0]
	r.parse()
	if r.err == nil && r.unusual {
		r.readRest()
	}
	charged = r.charged
	if r.err != nil {
		r.finish()
		return nil, false, charged, r.err
	}
	if len(r.bodies) == 0 {
		frame = r.mem // nothing spliced: the frame as it came
		r.mem = nil
		r.finish()
		return frame, false, charged, nil
	}
	if r.unusual {
		frame, err = r.rebuild()
		r.mem = nil
		r.finish()
		produceRebuilt.Add(1)
		r.cc.srv.metrics.produceSpliceRebuilt.Inc()
		return frame, false, charged, err
	}
	return nil, true, charged, nil
}

func (r *spliceReq) reset() {
	r.err, r.unusual, r.charged, r.owed = nil, false, 0, 0
	r.topics, r.parts, r.secs, r.bodies = r.topics[:0], r.parts[:0], r.secs[:0], r.bodies[:0]
	r.pipesHeld = 0
	r.clientOff = -1
}

// finish ends the request's use of its pipes: emptied ones go back to the
// pool, others are closed (a refused partition's bodies with them).
func (r *spliceReq) finish() {
	sent := false
	for i := range r.secs {
		s := &r.secs[i]
		sent = sent || s.sent
		for _, p := range s.chain {
			splicePipes.Put(p)
		}
		clear(s.chain)
		s.chain = s.chain[:0]
	}
	if sent {
		produceSpliced.Add(1)
		r.cc.srv.metrics.produceSpliced.Inc()
	}
	r.secs = r.secs[:0]
	r.bodies = r.bodies[:0]
}

// memory hands the read loop the memory the request used: its buffer may
// hold the next frame.
func (r *spliceReq) memory() []byte {
	m := r.mem
	r.mem = nil
	return m
}

func (r *spliceReq) bad() bool { return r.err != nil || r.unusual }

// charge makes sure k more bytes are charged to the budget before they
// are read, a chunk at a time (the buffered path's accounting).
func (r *spliceReq) charge(k int) bool {
	for r.owed < k {
		c := min(frameChunk, r.n-int(r.charged))
		if c <= 0 {
			break
		}
		if err := r.acquire(c); err != nil {
			r.err = err
			return false
		}
		r.charged += int64(c)
		r.owed += c
	}
	r.owed -= k
	return true
}

// bytes reads the next k bytes of the frame into mem and returns them; nil
// once reading stopped (bad) or when the frame has no k bytes left.
func (r *spliceReq) bytes(k int) []byte {
	if r.bad() {
		return nil
	}
	if k < 0 || k > r.left {
		r.unusual = true // malformed: the buffered path says so
		return nil
	}
	if !r.charge(k) {
		return nil
	}
	at := len(r.mem)
	if cap(r.mem)-at < k {
		grown := make([]byte, at, max(2*cap(r.mem), at+k, 4<<10))
		copy(grown, r.mem)
		r.mem = grown
	}
	r.mem = r.mem[:at+k]
	if _, err := fillBody(r.br, r.lw, r.mem[at:]); err != nil {
		r.err = fmt.Errorf("reading %d-byte frame body (%d received): %w", r.n, r.n-r.left, err)
		return nil
	}
	r.left -= k
	return r.mem[at:]
}

func (r *spliceReq) readRest() {
	r.unusual = false // bytes refuses to read once unusual
	for r.left > 0 && r.err == nil {
		r.bytes(min(r.left, frameChunk))
	}
	r.unusual = true
}

func (r *spliceReq) i16() int16 {
	if b := r.bytes(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *spliceReq) i32() int32 {
	if b := r.bytes(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (r *spliceReq) uvarint() uint32 {
	var x uint32
	for s := uint(0); s < 35; s += 7 {
		b := r.bytes(1)
		if b == nil {
			return 0
		}
		x |= uint32(b[0]&0x7f) << s
		if b[0] < 0x80 {
			return x
		}
	}
	r.unusual = true
	return 0
}

// length reads an array, string or bytes length: compact (uvarint, one
// more than the length, 0 null) when flexible, else int16 (short) or
// int32; -1 for null.
func (r *spliceReq) length(flex, short bool) int {
	switch {
	case flex:
		return int(r.uvarint()) - 1
	case short:
		return int(r.i16())
	}
	return int(r.i32())
}

// noTags reads a tag section that must be empty (kproxy would have to keep
// unknown tags: the buffered path does).
func (r *spliceReq) noTags() {
	if n := r.uvarint(); n != 0 {
		r.unusual = true
	}
}

// parse reads the frame as far as it can take it: everything, with the
// large sections' bodies in pipes, or up to the point where it set
// unusual. Produce's layout is kmsg's ProduceRequest (fields in order;
// flexible from v9: compact lengths and tag sections; topic ids from v13).
func (r *spliceReq) parse() {
	key, ver, corr := r.i16(), r.i16(), r.i32()
	if cl := int(r.i16()); cl >= 0 {
		r.clientOff, r.clientLen = len(r.mem), cl
		r.bytes(cl)
	}
	if r.bad() {
		return
	}
	r.h = requestHeader{key: key, version: ver, corr: corr}
	vr, ok := r.cc.srv.advertised()[key]
	if key != kmsg.Produce.Int16() || !ok || ver < max(vr.min, 3) || ver > vr.max {
		r.unusual = true // the buffered path answers or refuses it
		return
	}
	flex := ver >= 9
	if flex {
		r.noTags()
	}
	if r.length(flex, true) >= 0 {
		r.unusual = true // a transactional id
	}
	r.acks, r.timeout = r.i16(), r.i32()
	if r.acks == 0 {
		r.unusual = true
	}
	router := r.cc.srv.routes()
	nt := r.length(flex, false)
	if nt < 0 || nt > r.left {
		r.unusual = true
	}
	for range max(nt, 0) {
		if r.bad() {
			return
		}
		t := prTopic{first: len(r.parts)}
		var name string
		if ver >= 13 {
			if b := r.bytes(16); b != nil {
				copy(t.id[:], b)
				name, _ = r.cc.srv.topicIDs.name(t.id)
			}
		} else {
			l := r.length(flex, true)
			t.nameOff, t.nameLen = len(r.mem), max(l, 0)
			if b := r.bytes(l); b != nil {
				name = unsafe.String(unsafe.SliceData(b), len(b))
			}
		}
		if r.bad() {
			return
		}
		if name != "" && router.Replicated(name) {
			r.unusual = true
			return
		}
		np := r.length(flex, false)
		if np < 0 || np > r.left {
			r.unusual = true
			return
		}
		for range np {
			part := r.i32()
			n := r.length(flex, false)
			if r.bad() {
				return
			}
			if n < 0 {
				r.unusual = true // null records
				return
			}
			if n >= produceSpliceMin {
				r.readSection(part, n)
			} else {
				off := len(r.mem)
				r.bytes(n)
				r.parts = append(r.parts, prPart{partition: part, off: off, n: n})
			}
			if flex {
				r.noTags()
			}
			if r.bad() {
				return
			}
		}
		t.n = len(r.parts) - t.first
		r.topics = append(r.topics, t)
		if flex {
			r.noTags()
		}
	}
	if flex {
		r.noTags()
	}
	if r.left != 0 {
		r.unusual = true
	}
}

// readSection reads an n-byte records section: each batch's header into
// memory, its body into the section's pipes.
func (r *spliceReq) readSection(partition int32, n int) {
	idx := len(r.secs)
	if idx < cap(r.secs) {
		r.secs = r.secs[:idx+1] // keeps the old element's chain array
		chain := r.secs[idx].chain[:0]
		r.secs[idx] = spliceSection{chain: chain}
	} else {
		r.secs = append(r.secs, spliceSection{})
	}
	sec := &r.secs[idx]
	sec.off, sec.total = len(r.mem), n
	for rem := n; rem > 0 && !r.bad(); {
		if rem < batchHeaderLen {
			r.unusual = true
			return
		}
		h := r.bytes(batchHeaderLen)
		if h == nil {
			return
		}
		blen := int(int32(binary.BigEndian.Uint32(h[8:]))) + 12
		if h[16] != 2 || blen < batchHeaderLen || blen > rem {
			r.unusual = true // what the buffered path forwards as it is
			return
		}
		sec.nb++
		r.spliceBody(sec, idx, blen-batchHeaderLen)
		rem -= blen
	}
	if !r.bad() {
		r.parts = append(r.parts, prPart{partition: partition, off: sec.off, n: sec.nb * batchHeaderLen})
	}
}

// spliceBody moves the next n bytes of the frame (a batch body) into sec's
// pipes: first what the buffered reader holds of them, then from the
// socket. Short of pipes it sets unusual: the rest goes into memory.
func (r *spliceReq) spliceBody(sec *spliceSection, idx, n int) {
	for n > 0 && !r.bad() {
		var p *pipes.Pipe
		if k := len(sec.chain); k > 0 && !sec.full {
			p = sec.chain[k-1]
		} else {
			if r.pipesHeld >= spliceMaxPipes {
				r.unusual = true
				return
			}
			if p = splicePipes.Get(); p == nil {
				r.unusual = true
				return
			}
			sec.chain = append(sec.chain, p)
			sec.full = false
			r.pipesHeld++
		}
		var got int
		var err error
		if m := r.br.Buffered(); m > 0 {
			b, _ := r.br.Peek(min(m, n))
			if !r.charge(len(b)) {
				return
			}
			got, err = p.WriteIn(b)
			_, _ = r.br.Discard(got)
			r.owed += len(b) - got // charged, not taken
		} else {
			// Up to a MiB at a time, waking once it arrived (the
			// splicer sets the mark: sockread.go's reasons).
			k := min(n, lowatChunk)
			if !r.charge(k) {
				return
			}
			_ = r.cc.nc.SetReadDeadline(time.Now().Add(r.cc.srv.opts.Limits.ReadTimeout))
			got, err = r.ss.In(p, k)
			r.owed += k - got
			// Memory reads through the buffered reader must not wait
			// for the mark (no syscall when it is one byte).
			if rerr := r.lw.Release(); rerr != nil && err == nil {
				err = rerr
			}
		}
		if got > 0 {
			if m := len(r.bodies); m > 0 && r.bodies[m-1].at == len(r.mem) && r.bodies[m-1].sec == idx {
				r.bodies[m-1].n += got
			} else {
				r.bodies = append(r.bodies, bodyPiece{at: len(r.mem), sec: idx, n: got})
			}
		}
		n -= got
		r.left -= got
		switch {
		case errors.Is(err, pipes.ErrFull):
			sec.full = true
		case err != nil:
			r.err = fmt.Errorf("splicing a %d-byte frame body (%d received): %w", r.n, r.n-r.left, err)
		}
	}
}

// rebuild is the frame in memory: the kept bytes with the bodies read back
// from the pipes in their places.
func (r *spliceReq) rebuild() ([]byte, error) {
	out := make([]byte, 0, r.n)
	m := 0
	for _, b := range r.bodies {
		out = append(out, r.mem[m:b.at]...)
		m = b.at
		at := len(out)
		out = out[:at+b.n]
		if err := r.secs[b.sec].take(out[at:]); err != nil {
			return nil, err
		}
	}
	return append(out, r.mem[m:]...), nil
}

// take reads len(b) bytes of the section's bodies out of its pipes.
func (s *spliceSection) take(b []byte) error {
	for len(b) > 0 {
		if s.ci >= len(s.chain) {
			return errors.New("spliced section: pipes hold fewer bytes than recorded")
		}
		p := s.chain[s.ci]
		if p.N == 0 {
			s.ci++
			continue
		}
		k := min(len(b), p.N)
		if err := p.ReadOut(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

// header is the request header, its client id the connection's last one
// when it has the same bytes (parseRequestHeader).
func (r *spliceReq) header(prev *string) requestHeader {
	h := r.h
	if r.clientOff >= 0 {
		b := r.mem[r.clientOff : r.clientOff+r.clientLen]
		if prev != nil && string(b) == *prev {
			h.clientID = prev
		} else {
			id := string(b)
			h.clientID = &id
		}
	}
	return h
}

// fill makes req (emptied by decodeInto, its arrays kept) the request
// read: records alias mem, a large section's are its batch headers only.
func (r *spliceReq) fill(req *kmsg.ProduceRequest) {
	req.Version, req.TransactionID, req.Acks, req.TimeoutMillis = r.h.version, nil, r.acks, r.timeout
	topics := req.Topics[:0]
	for _, pt := range r.topics {
		var parts []kmsg.ProduceRequestTopicPartition
		if n := len(topics); n < cap(topics) {
			parts = topics[:n+1][n].Partitions[:0]
		}
		t := kmsg.ProduceRequestTopic{TopicID: pt.id}
		if r.h.version < 13 {
			t.Topic = topicNames.intern(unsafe.String(unsafe.SliceData(r.mem[pt.nameOff:]), pt.nameLen))
		}
		for _, p := range r.parts[pt.first : pt.first+pt.n] {
			parts = append(parts, kmsg.ProduceRequestTopicPartition{Partition: p.partition, Records: r.mem[p.off : p.off+p.n : p.off+p.n]})
		}
		t.Partitions = parts
		topics = append(topics, t)
	}
	req.Topics = topics
}

// section returns the large section whose batch headers records is, or
// nil (records in memory, whole).
func (r *spliceReq) section(records []byte) *spliceSection {
	if r == nil || len(records) == 0 {
		return nil
	}
	d := unsafe.SliceData(records)
	for i := range r.secs {
		if s := &r.secs[i]; s.nb > 0 && d == &r.mem[s.off] {
			return s
		}
	}
	return nil
}

// sparse reports whether records is a large section's headers only.
func (r *spliceReq) sparse(records []byte) bool { return r.section(records) != nil }

// materialize reads every large section of req back into memory (a new
// buffer each) and makes body the request's encoding: the buffered path
// takes it from here. The bytes were charged to the budget when read.
func (r *spliceReq) materialize(req *kmsg.ProduceRequest) ([]byte, error) {
	for i := range req.Topics {
		for j := range req.Topics[i].Partitions {
			p := &req.Topics[i].Partitions[j]
			s := r.section(p.Records)
			if s == nil {
				continue
			}
			whole := make([]byte, 0, s.total)
			for h := p.Records; len(h) >= batchHeaderLen; h = h[batchHeaderLen:] {
				whole = append(whole, h[:batchHeaderLen]...)
				body := int(int32(binary.BigEndian.Uint32(h[8:]))) + 12 - batchHeaderLen
				at := len(whole)
				whole = whole[:at+body]
				if err := s.take(whole[at:]); err != nil {
					return nil, err
				}
			}
			p.Records = whole
		}
	}
	r.cc.srv.metrics.produceSpliceRead.Inc()
	return appendProduceBody(nil, req, nil, nil), nil
}

// appendProduceBody encodes req's body (what follows the request header)
// as kmsg does, except that a large section of sp is encoded as its
// headers, each followed by a gap for its body, noted in pieces.
func appendProduceBody(dst []byte, req *kmsg.ProduceRequest, sp *spliceReq, pieces []splicePiece) []byte {
	body, _ := appendProduceBodyPieces(dst, req, sp, pieces)
	return body
}

func appendProduceBodyPieces(dst []byte, req *kmsg.ProduceRequest, sp *spliceReq, pieces []splicePiece) ([]byte, []splicePiece) {
	v := req.Version
	flex := v >= 9
	if flex {
		dst = kbin.AppendCompactNullableString(dst, req.TransactionID)
	} else {
		dst = kbin.AppendNullableString(dst, req.TransactionID)
	}
	dst = kbin.AppendInt16(dst, req.Acks)
	dst = kbin.AppendInt32(dst, req.TimeoutMillis)
	dst = appendArrayLen(dst, len(req.Topics), flex)
	for i := range req.Topics {
		t := &req.Topics[i]
		switch {
		case v >= 13:
			dst = kbin.AppendUuid(dst, t.TopicID)
		case flex:
			dst = kbin.AppendCompactString(dst, t.Topic)
		default:
			dst = kbin.AppendString(dst, t.Topic)
		}
		dst = appendArrayLen(dst, len(t.Partitions), flex)
		for j := range t.Partitions {
			p := &t.Partitions[j]
			dst = kbin.AppendInt32(dst, p.Partition)
			if s := sp.section(p.Records); s != nil {
				if flex {
					dst = kbin.AppendUvarint(dst, uint32(s.total)+1)
				} else {
					dst = kbin.AppendInt32(dst, int32(s.total))
				}
				for h := p.Records; len(h) >= batchHeaderLen; h = h[batchHeaderLen:] {
					dst = append(dst, h[:batchHeaderLen]...)
					if body := int(int32(binary.BigEndian.Uint32(h[8:]))) + 12 - batchHeaderLen; body > 0 {
						pieces = append(pieces, splicePiece{at: len(dst), sec: s, n: body})
					}
				}
			} else if flex {
				dst = kbin.AppendCompactNullableBytes(dst, p.Records)
			} else {
				dst = kbin.AppendNullableBytes(dst, p.Records)
			}
			if flex {
				dst = appendTags(dst, &p.UnknownTags)
			}
		}
		if flex {
			dst = appendTags(dst, &t.UnknownTags)
		}
	}
	if flex {
		dst = appendTags(dst, &req.UnknownTags)
	}
	return dst, pieces
}

func appendArrayLen(dst []byte, n int, flex bool) []byte {
	if flex {
		return kbin.AppendCompactArrayLen(dst, n)
	}
	return kbin.AppendArrayLen(dst, n)
}

// appendTags writes a tag section: the unknown tags kmsg kept (Produce
// defines none of its own).
func appendTags(dst []byte, t *kmsg.Tags) []byte {
	if t.Len() == 0 {
		return append(dst, 0)
	}
	return t.AppendEach(kbin.AppendUvarint(dst, uint32(t.Len())))
}
