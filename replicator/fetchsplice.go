package replicator

// The spliced copy (decision 014): a large batch's body goes from the
// source socket into a kernel pipe and from the pipe into the target
// socket with splice(2), never through user space. The copy changes only a
// batch's 61-byte header (producer id, epoch, sequence, first offset,
// leader epoch, attributes) and derives its CRC from the stored one
// (internal/batchcrc), so it never needs the body's bytes; reading them in
// and writing them out again were the two kernel copies that made up most
// of the copy's CPU (bench/RESULTS.md, "Copy CPU, session 15").
//
// A fetch answer is read as a stream (readStreamed): its fields, every
// small batch, and each large batch's header (with whatever of its body
// came in the same read) go into the frame's buffer as before; the rest of
// a large batch's body goes into pipes. The record set's length field in
// the buffer is rewritten to what stayed in memory, so kmsg decodes the
// buffer as today and the copy loop finds a spliced batch as its in-memory
// head (frame.splices says where, and which pipes hold the rest).
//
// Only a plain TCP connection on both sides (TLS bytes pass through user
// space anyway), and only batches the copy sends as they are: anything it
// would read or rebuild (legacy magic, control batches, compaction gaps,
// LogAppendTime), a batch too small to be worth it, or one that finds no
// free pipe is read into memory, the buffered path exactly as before.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/kproxy/kproxy/internal/pipes"
)

const (
	// spliceMinBytes is the smallest batch spliced. Below it the
	// syscalls of a splice (one into a pipe, one out of it, the header
	// write apart from the body) cost about what copying the bytes
	// would, and small batches come many to an answer, where one large
	// read takes them all: 64 KiB keeps the reads of an answer of small
	// batches few (readAhead), and a batch this large is the
	// size producers reach under load (batch.size 16 KiB grows with
	// linger and compression; the bench's are 1 MiB).
	spliceMinBytes = 64 << 10
	// readAhead is what a read asks for beyond the bytes a small batch
	// still needs: the next small batches come in the same read. A
	// large batch behind it has up to this much of its body in memory,
	// which is written out from there.
	readAhead = spliceMinBytes
	// fieldAhead is what a read of an answer's fields (or of the header
	// after a spliced batch) asks for beyond what it needs: the fields
	// and the next batch header in one read, and little of a large body.
	fieldAhead = 256
	// replicatorPipes bounds the pipes the copy holds at once: at most
	// 64 MiB of batch bodies in the kernel, on top of the frame budget.
	// A batch that finds none is read into memory.
	replicatorPipes = 64
	// maxStreamedFetchVersion is the last Fetch version whose answer
	// layout the stream reader knows (kmsg's newest: the layout last
	// changed at v13, topic ids; v16 added a tagged field); a newer one
	// is read whole.
	maxStreamedFetchVersion = 18
)

// splicedBatch is a batch whose body (after its first mem bytes, which are
// in the frame at at) is in pipes: the frame's chain[first:first+n].
type splicedBatch struct {
	at, mem, total int
	first, n       int
	owned          bool // handed to a partition's copy loop (deliver)
}

// answerStream reads one fetch answer from a plain socket, splicing large
// batch bodies into pipes. It lives with its fetchConn.
type answerStream struct {
	c    *fetchConn
	sp   *pipes.Splicer
	pool *pipes.Pool
	// spliceOK says whether a partition's batches may be spliced (nil:
	// all); the fetcher says no for a partition whose last spliced batch
	// the target refused as corrupt, so it is checked in memory.
	spliceOK func(topic string, id [16]byte, partition int32) bool

	// one answer's state
	f        *fetchFrame
	buf      []byte // the frame's buffer: everything not spliced
	left     int    // answer bytes not read from the socket yet
	pos      int    // the parse cursor in buf
	flexible bool
	ver      int16
	err      error
}

// read reads an answer of n bytes (its size already read) into f.
func (s *answerStream) read(f *fetchFrame, n int, ver int16) error {
	// The buffer grows as bytes stay in memory (grow), not to the
	// answer's size up front: most of a large answer goes into pipes,
	// and a fresh buffer of the whole size would be zeroed by the
	// runtime, every page of it (6 % of the copy's CPU).
	f.splices, f.chain = f.splices[:0], f.chain[:0]
	s.f, s.buf, s.left, s.pos, s.ver, s.flexible, s.err = f, f.buf[:0], n, 0, ver, ver >= 12, nil
	s.parse()
	f.buf = s.buf
	err := s.err
	if err == nil && s.left != 0 {
		err = fmt.Errorf("answer has %d bytes after its fields", s.left)
	}
	s.f, s.buf = nil, nil
	if err != nil {
		f.closeSplices()
	}
	return err
}

// parse walks the answer (kmsg's FetchResponse layout, versions 4 to
// maxStreamedFetchVersion), streaming each record set.
func (s *answerStream) parse() {
	s.skip(4) // correlation id
	if s.flexible {
		s.skipTags()
	}
	if s.ver >= 1 {
		s.skip(4) // throttle
	}
	if s.ver >= 7 {
		s.skip(2 + 4) // error code, session id
	}
	for t := s.arrayLen(); t > 0 && s.err == nil; t-- {
		var topic string
		var id [16]byte
		if s.ver >= 13 {
			s.ensure(16, fieldAhead)
			if s.err == nil {
				copy(id[:], s.buf[s.pos:])
			}
			s.skip(16)
		} else {
			topic = s.str()
		}
		for p := s.arrayLen(); p > 0 && s.err == nil; p-- {
			part := s.int32()
			s.skip(2 + 8 + 8) // error code, high watermark, last stable offset
			if s.ver >= 5 {
				s.skip(8) // log start offset
			}
			for a := s.arrayLen(); a > 0 && s.err == nil; a-- {
				s.skip(16) // producer id, first offset
				if s.flexible {
					s.skipTags()
				}
			}
			if s.ver >= 11 {
				s.skip(4) // preferred read replica
			}
			s.records(s.spliceOK == nil || s.spliceOK(topic, id, part))
			if s.flexible {
				s.skipTags()
			}
		}
		if s.flexible {
			s.skipTags()
		}
	}
	if s.flexible {
		s.skipTags()
	}
}

// records streams one partition's record set and rewrites its length
// field to the bytes that stayed in memory.
func (s *answerStream) records(spliceOK bool) {
	lenAt := s.pos
	var size int
	if s.flexible {
		size = int(s.uvarint()) - 1
	} else {
		size = int(s.int32())
	}
	lenEnd := s.pos
	if s.err != nil || size <= 0 {
		return // null or empty
	}
	rem, inMem := size, 0
	ahead := fieldAhead
	for rem > 0 && s.err == nil {
		hn := min(rem, batchHeaderLen)
		s.ensure(hn, ahead)
		if s.err != nil {
			return
		}
		n := 0
		if hn == batchHeaderLen {
			n = int(int32(binary.BigEndian.Uint32(s.buf[s.pos+offLength:]))) + 12
		}
		if n > rem && s.buf[s.pos+offMagic] == 2 {
			// The last batch, cut by the size limit (KIP-74): the copy
			// drops it (splitRecordSet) and the next fetch starts at
			// it. Its header stays, so the record set still ends in a
			// partial batch; the rest is dropped from the socket
			// unread (with 1 MiB batches this tail is up to a batch).
			have := min(len(s.buf)-s.pos, rem)
			s.pos += have
			inMem += have
			if err := s.sp.Discard(rem - have); err != nil {
				s.fail(fmt.Errorf("dropping a cut batch: %w", err))
				return
			}
			s.left -= rem - have
			break
		}
		if n < batchHeaderLen || n > rem {
			// Garbage, or a cut tail shorter than a header: into
			// memory, for the copy loop to judge as before.
			s.ensure(rem, 0)
			s.pos += rem
			inMem += rem
			break
		}
		have := min(len(s.buf)-s.pos, n)
		if have < n && spliceOK && s.spliceable(s.buf[s.pos:], n, have) && s.splice(n, have) {
			s.pos += have
			inMem += have
			rem -= n
			ahead = fieldAhead // the next batch is likely large too
			continue
		}
		if s.err != nil {
			return
		}
		ahead = readAhead
		if n >= spliceMinBytes {
			ahead = fieldAhead
		}
		s.ensure(n, ahead)
		s.pos += n
		inMem += n
		rem -= n
	}
	if s.err != nil || inMem == size {
		return
	}
	if s.flexible {
		putPaddedUvarint(s.buf[lenAt:lenEnd], uint32(inMem+1))
	} else {
		binary.BigEndian.PutUint32(s.buf[lenAt:], uint32(inMem))
	}
}

// spliceable says, from its header, whether a batch of n bytes (have of
// them in memory) is copied as it is: the copy never reads its body.
func (s *answerStream) spliceable(b []byte, n, have int) bool {
	if n < spliceMinBytes || n-have < spliceMinBytes/2 || b[offMagic] != 2 {
		return false
	}
	attrs := int16(binary.BigEndian.Uint16(b[offAttributes:]))
	lastDelta := int32(binary.BigEndian.Uint32(b[offLastOffsetDelta:]))
	numRecords := int32(binary.BigEndian.Uint32(b[offNumRecords:]))
	// The same tests as rebuildReason's and abortFilter's that need
	// the body: a control batch's marker is read, a batch with offset
	// gaps or LogAppendTime is rebuilt.
	return attrs&(attrControl|attrLogAppendTime) == 0 && int64(lastDelta)+1 == int64(numRecords)
}

// splice moves the rest of a batch of n bytes (have of them in memory)
// into pipes. false: no pipe was free, and the bytes that went into pipes
// are back in memory (the caller reads the rest as a small batch's).
func (s *answerStream) splice(n, have int) bool {
	f := s.f
	sb := splicedBatch{at: s.pos, mem: have, total: n, first: len(f.chain)}
	want := n - have
	for want > 0 {
		p := s.pool.Get()
		if p == nil {
			s.unsplice(sb.first)
			return false
		}
		got, err := s.sp.In(p, want)
		want -= got
		if got > 0 {
			f.chain = append(f.chain, p)
		} else {
			s.pool.Put(p)
		}
		if err != nil && !(errors.Is(err, pipes.ErrFull) && got > 0) {
			s.fail(fmt.Errorf("splicing a %d-byte batch body: %w", n, err))
			return false
		}
	}
	s.left -= n - have
	sb.n = len(f.chain) - sb.first
	f.splices = append(f.splices, sb)
	return true
}

// unsplice reads the pipes from chain[first:] back into memory, after the
// batch's head (no free pipe for the rest of its body).
func (s *answerStream) unsplice(first int) {
	f := s.f
	for _, p := range f.chain[first:] {
		k := p.N
		at := len(s.buf)
		s.grow(k)
		s.buf = s.buf[:at+k]
		if err := p.ReadOut(s.buf[at:]); err != nil {
			s.fail(err)
		}
		s.left -= k // counted as read from the socket now
		s.pool.Put(p)
	}
	clear(f.chain[first:])
	f.chain = f.chain[:first]
}

// grow makes room for k more bytes in memory: at least double, at most
// the whole answer, in whole 64 KiB. Nothing holds a slice of the buffer
// while the answer is read (splices are kept as positions), so it may move.
func (s *answerStream) grow(k int) {
	if len(s.buf)+k <= cap(s.buf) {
		return
	}
	c := max(2*cap(s.buf), len(s.buf)+k, 64<<10)
	c = min((c+64<<10-1)&^(64<<10-1), len(s.buf)+s.left)
	nb := make([]byte, len(s.buf), c)
	copy(nb, s.buf)
	s.buf = nb
}

func (s *answerStream) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// ensure makes k bytes from the cursor available in memory, reading up to
// ahead bytes more (never past the answer) while it is at it.
func (s *answerStream) ensure(k, ahead int) {
	if s.err != nil {
		return
	}
	need := s.pos + k - len(s.buf)
	if need <= 0 {
		return
	}
	if need > s.left {
		s.fail(fmt.Errorf("answer ends %d bytes before its fields do", need-s.left))
		return
	}
	n := min(s.left, need+ahead)
	at := len(s.buf)
	s.grow(n)
	s.buf = s.buf[:at+n]
	if _, err := s.c.lw.ReadFull(s.buf[at:]); err != nil {
		s.buf = s.buf[:at]
		s.fail(err)
		return
	}
	s.left -= n
}

func (s *answerStream) skip(k int) {
	s.ensure(k, fieldAhead)
	if s.err == nil {
		s.pos += k
	}
}

func (s *answerStream) int32() int32 {
	s.ensure(4, fieldAhead)
	if s.err != nil {
		return 0
	}
	v := int32(binary.BigEndian.Uint32(s.buf[s.pos:]))
	s.pos += 4
	return v
}

func (s *answerStream) uvarint() uint32 {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		s.ensure(1, fieldAhead)
		if s.err != nil {
			return 0
		}
		b := s.buf[s.pos]
		s.pos++
		v |= uint32(b&0x7f) << shift
		if b < 0x80 {
			return v
		}
	}
	s.fail(errors.New("answer has a varint longer than 5 bytes"))
	return 0
}

// arrayLen reads an array's length; null and empty are 0.
func (s *answerStream) arrayLen() int {
	if s.flexible {
		return max(int(s.uvarint())-1, 0)
	}
	return max(int(s.int32()), 0)
}

// str reads a (non-null) string; the answer's topic names.
func (s *answerStream) str() string {
	var n int
	if s.flexible {
		n = int(s.uvarint()) - 1
	} else {
		s.ensure(2, fieldAhead)
		if s.err != nil {
			return ""
		}
		n = int(int16(binary.BigEndian.Uint16(s.buf[s.pos:])))
		s.pos += 2
	}
	if n <= 0 {
		return ""
	}
	s.ensure(n, fieldAhead)
	if s.err != nil {
		return ""
	}
	v := unsafe.String(&s.buf[s.pos], n) // the frame outlives the read
	s.pos += n
	return v
}

func (s *answerStream) skipTags() {
	for n := s.uvarint(); n > 0 && s.err == nil; n-- {
		s.uvarint() // tag
		s.skip(int(s.uvarint()))
	}
}

// putPaddedUvarint writes v as a uvarint filling all of b (a length
// field's old bytes): continuation bytes carry zeros where a shorter
// encoding would have stopped. Kafka's and kmsg's decoders read it as v.
func putPaddedUvarint(b []byte, v uint32) {
	for i := range b {
		c := byte(v & 0x7f)
		v >>= 7
		if i < len(b)-1 {
			c |= 0x80
		}
		b[i] = c
	}
}

// splicesIn returns the splices of the record set rs (a slice of f.buf),
// in order.
func (f *fetchFrame) splicesIn(rs []byte) []splicedBatch {
	if len(f.splices) == 0 || len(rs) == 0 {
		return nil
	}
	start := int(uintptr(unsafe.Pointer(unsafe.SliceData(rs))) - uintptr(unsafe.Pointer(unsafe.SliceData(f.buf))))
	end := start + len(rs)
	i := 0
	for i < len(f.splices) && f.splices[i].at < start {
		i++
	}
	j := i
	for j < len(f.splices) && f.splices[j].at < end {
		j++
	}
	return f.splices[i:j:j]
}

// pipesOf returns the pipes holding sb's body.
func (f *fetchFrame) pipesOf(sb *splicedBatch) []*pipes.Pipe {
	return f.chain[sb.first : sb.first+sb.n]
}

// closeSplices gives back every pipe of the answer not handed to a copy
// loop (owned): they hold bytes, so they are closed, not pooled.
func (f *fetchFrame) closeSplices() {
	for i := range f.splices {
		if sb := &f.splices[i]; !sb.owned {
			f.dropPipes(sb)
		}
	}
}

// dropSplicesOf closes the pipes of the record set rs's spliced batches
// not sent (a copy loop that ends with the answer unfinished).
func (f *fetchFrame) dropSplicesOf(rs []byte) {
	spl := f.splicesIn(rs)
	for i := range spl {
		f.dropPipes(&spl[i])
	}
}

// dropPipes closes sb's pipes still in the frame (the copy loop takes
// each one out when its bytes were sent).
func (f *fetchFrame) dropPipes(sb *splicedBatch) {
	for i := sb.first; i < sb.first+sb.n; i++ {
		if p := f.chain[i]; p != nil {
			f.pool.Put(p)
			f.chain[i] = nil
		}
	}
}

// readSpliced reads a spliced batch whole into a new buffer: for the rare
// batch the copy must read after all (one that starts before the resume
// offset, a target without splice).
func (f *fetchFrame) readSpliced(head []byte, sb *splicedBatch) ([]byte, error) {
	b := make([]byte, sb.total)
	at := copy(b, head)
	for i := sb.first; i < sb.first+sb.n; i++ {
		p := f.chain[i]
		if p == nil {
			return nil, errors.New("spliced batch body already sent")
		}
		k := p.N
		if at+k > len(b) {
			return nil, fmt.Errorf("spliced batch body longer than its %d bytes", sb.total)
		}
		if err := p.ReadOut(b[at : at+k]); err != nil {
			return nil, err
		}
		at += k
		f.pool.Put(p)
		f.chain[i] = nil
	}
	if at != len(b) {
		return nil, fmt.Errorf("spliced batch body has %d of %d bytes", at, sb.total)
	}
	return b, nil
}

// batchesOf cuts a partition's record set (a slice of f.buf) into batches
// like splitRecordSet, appending to out; a spliced batch is its head in
// memory, and sp (parallel to the batches, appended to) points to its
// splice, nil for a batch wholly in memory.
func (f *fetchFrame) batchesOf(out [][]byte, sp []*splicedBatch, set []byte) ([][]byte, []*splicedBatch) {
	spl := f.splicesIn(set)
	if len(spl) == 0 {
		out = splitRecordSet(out, set)
		for len(sp) < len(out) {
			sp = append(sp, nil)
		}
		return out, sp
	}
	start := int(uintptr(unsafe.Pointer(unsafe.SliceData(set))) - uintptr(unsafe.Pointer(unsafe.SliceData(f.buf))))
	pos, k := 0, 0
	for len(set)-pos > offMagic {
		if k < len(spl) && spl[k].at == start+pos {
			sb := &spl[k]
			k++
			out = append(out, set[pos:pos+sb.mem:pos+sb.mem])
			sp = append(sp, sb)
			pos += sb.mem
			continue
		}
		n := int(int32(binary.BigEndian.Uint32(set[pos+offLength:]))) + 12
		if n < batchHeaderLen || len(set)-pos < n {
			break
		}
		out = append(out, set[pos:pos+n:pos+n])
		sp = append(sp, nil)
		pos += n
	}
	return out, sp
}
