package replicator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/batchcrc"
	"github.com/kproxy/kproxy/internal/pipes"
)

// Record batch v2 header layout (kafka-protocol-notes 3.1). Everything from
// byte 21 on is covered by the CRC-32C at bytes 17-20.
const (
	offFirstOffset     = 0
	offLength          = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offFirstTimestamp  = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offFirstSequence   = 53
	offNumRecords      = 57
	batchHeaderLen     = 61

	attrCodecMask     = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

// batchHeader is the decoded fixed header of a v2 record batch.
type batchHeader struct {
	firstOffset     int64
	length          int32
	attributes      int16
	lastOffsetDelta int32
	firstTimestamp  int64
	maxTimestamp    int64
	producerID      int64
	numRecords      int32
}

func (h batchHeader) lastOffset() int64 { return h.firstOffset + int64(h.lastOffsetDelta) }

// ErrLegacyBatch means the source returned a magic 0/1 message set. Kafka 4
// no longer writes them (KIP-724) but old logs may hold them; the replicator
// does not convert them yet and stops the partition rather than skip data.
var ErrLegacyBatch = errors.New("the source partition holds a legacy (magic 0/1) message set, which the replicator cannot copy yet")

func parseHeader(b []byte) (batchHeader, error) {
	if len(b) < batchHeaderLen {
		return batchHeader{}, fmt.Errorf("record batch of %d bytes is shorter than its %d-byte header", len(b), batchHeaderLen)
	}
	if b[offMagic] != 2 {
		return batchHeader{}, fmt.Errorf("batch at offset %d has magic %d: %w", int64(binary.BigEndian.Uint64(b)), b[offMagic], ErrLegacyBatch)
	}
	be := binary.BigEndian
	return batchHeader{
		firstOffset:     int64(be.Uint64(b[offFirstOffset:])),
		length:          int32(be.Uint32(b[offLength:])),
		attributes:      int16(be.Uint16(b[offAttributes:])),
		lastOffsetDelta: int32(be.Uint32(b[offLastOffsetDelta:])),
		firstTimestamp:  int64(be.Uint64(b[offFirstTimestamp:])),
		maxTimestamp:    int64(be.Uint64(b[offMaxTimestamp:])),
		producerID:      int64(be.Uint64(b[offProducerID:])),
		numRecords:      int32(be.Uint32(b[offNumRecords:])),
	}, nil
}

// splitRecordSet cuts a fetch response's record set into whole batches. A
// truncated final batch (KIP-74 size limits) is normal and dropped; the next
// fetch starts at it. The returned slices alias set; they are appended to
// out (a reused slice: no allocation per fetch in steady state).
func splitRecordSet(out [][]byte, set []byte) [][]byte {
	for len(set) > offMagic {
		n := int(int32(binary.BigEndian.Uint32(set[offLength:]))) + 12
		if n < batchHeaderLen || len(set) < n { // a shorter "batch" is garbage or a cut tail
			break
		}
		out = append(out, set[:n:n])
		set = set[n:]
	}
	return out
}

// abortFilter applies read_committed rules to a partition's batches in
// offset order, like the Java consumer (CompletedFetch) and kgo's aborter: a
// producer joins the aborted set once one of its aborted transactions'
// FirstOffset is at or below a batch's last offset, its transactional batches
// are skipped while it is in the set, and its ABORT marker removes it.
type abortFilter struct {
	aborted []kmsg.FetchResponseTopicPartitionAbortedTransaction // by FirstOffset
	active  map[int64]bool
}

func newAbortFilter(aborted []kmsg.FetchResponseTopicPartitionAbortedTransaction) *abortFilter {
	a := append([]kmsg.FetchResponseTopicPartitionAbortedTransaction(nil), aborted...)
	// Redpanda returns them unsorted (kgo source.go buildAborter).
	sort.SliceStable(a, func(i, j int) bool { return a[i].FirstOffset < a[j].FirstOffset })
	return &abortFilter{aborted: a, active: map[int64]bool{}}
}

// keep reports whether a batch carries data a read_committed consumer sees.
// It must see every batch of the fetch in order, kept or not.
func (f *abortFilter) keep(h batchHeader, b []byte) bool {
	for len(f.aborted) > 0 && f.aborted[0].FirstOffset <= h.lastOffset() {
		f.active[f.aborted[0].ProducerID] = true
		f.aborted = f.aborted[1:]
	}
	if h.attributes&attrControl != 0 {
		if isAbortMarker(b) {
			delete(f.active, h.producerID)
		}
		return false
	}
	if h.attributes&attrTransactional != 0 && f.active[h.producerID] {
		return false
	}
	return h.numRecords > 0 // compaction may leave empty batches behind
}

// isAbortMarker reads a control batch's single (never compressed) record
// key: version int16, type int16 with ABORT = 0.
func isAbortMarker(b []byte) bool {
	recs := b[batchHeaderLen:]
	l, n := binary.Varint(recs)
	if n <= 0 || l < 0 || int64(len(recs)-n) < l {
		return false
	}
	var r kmsg.Record
	if err := r.ReadFrom(recs[:n+int(l)]); err != nil || len(r.Key) < 4 {
		return false
	}
	return binary.BigEndian.Uint16(r.Key[2:]) == 0
}

// producerSession is the replicator's idempotent identity on one target
// partition: every batch it writes carries this PID and epoch and the next
// sequence number.
type producerSession struct {
	pid   int64
	epoch int16
	seq   int32
	// txn marks the batches transactional: the copy's fenced mode
	// (txncopy.go), where the session is a transactional producer's.
	txn bool
}

// attrs are a source batch's attributes as the copy writes them: the
// source's transactional bit never (its markers are not copied), the
// copy's own when the session is transactional.
func (s producerSession) attrs(source int16) int16 {
	a := source &^ attrTransactional
	if s.txn {
		a |= attrTransactional
	}
	return a
}

// preparedBatch is a source batch rewritten for producing to the target.
type preparedBatch struct {
	raw []byte // the batch to produce, FirstOffset 0
	// srcOffsets holds the source offset of each record when they are not
	// consecutive (a rebuilt batch); nil means srcFirst, srcFirst+1, ...
	srcOffsets []int64
	srcFirst   int64
	numRecords int32
	srcLast    int64 // the source batch's last offset; SourceEnd moves past it
	rebuilt    bool
	// A spliced batch (fetchsplice.go): raw is its head, patched, and
	// body the pipes holding the rest, total bytes in all. The pipeline
	// gives the pipes back once the batch is written.
	body    []*pipes.Pipe
	total   int
	spliced bool
}

// size is the batch's length in bytes.
func (pb *preparedBatch) size() int {
	if pb.spliced {
		return pb.total
	}
	return len(pb.raw)
}

// prepareBatch rewrites one kept source batch for producing to the target as
// sequence seq of session s. from is the first source offset still to copy:
// records below it are already on the target.
//
// The common case touches only the header, in place (b is modified):
// FirstOffset 0, PartitionLeaderEpoch -1, the session's PID, epoch and
// sequence, the transactional bit cleared, and the CRC recomputed over [21:].
// Record bytes, compressed or not, are not touched.
//
// A batch is decompressed and rebuilt only when copying it verbatim would
// not preserve its records (rebuildReason): offset-delta gaps from
// compaction (the broker would reject or misnumber it, notes 3.4 rules 3, 6,
// 7), records below from, or the LogAppendTime bit (a client may not set it,
// so the broker-assigned timestamp is written into the records instead).
func prepareBatch(b []byte, from int64, s producerSession) (preparedBatch, error) {
	h, err := parseHeader(b)
	if err != nil {
		return preparedBatch{}, err
	}
	if int(h.length)+12 != len(b) {
		return preparedBatch{}, fmt.Errorf("batch at offset %d: length field %d does not match %d bytes", h.firstOffset, h.length, len(b))
	}
	crc := binary.BigEndian.Uint32(b[offCRC:])
	p := preparedBatch{srcFirst: h.firstOffset, numRecords: h.numRecords, srcLast: h.lastOffset()}
	rebuild := rebuildReason(h, from) != ""
	// A batch whose CRC is computed anew (rebuilt, or small) is checked
	// first: a new CRC would hide corruption. A large one is not read
	// here at all (the check was a tenth of the copy's CPU): its patched
	// CRC is derived from the stored one, so a batch that did not match
	// its CRC still does not after the patch, and the target refuses it
	// (every broker checks a produced batch's CRC: CORRUPT_MESSAGE), at
	// which point the pipeline checks it to say why (corruptSourceBatch).
	if rebuild || len(b) < batchcrc.MinBytes {
		if want := crc32.Checksum(b[offAttributes:], castagnoli); crc != want {
			return preparedBatch{}, fmt.Errorf("batch at offset %d: CRC %08x, computed %08x: the source sent a corrupt batch", h.firstOffset, crc, want)
		}
	}
	if rebuild {
		return rebuildBatch(b, h, from, s)
	}
	if len(b) < batchcrc.MinBytes {
		writeHeader(b, s.attrs(h.attributes), s)
		p.raw = b
		return p, nil
	}
	patchDerived(b, h, crc, len(b), s)
	p.raw = b
	return p, nil
}

// patchDerived patches the producer fields of a large batch's header b
// (total bytes long, stored CRC crc) and derives its CRC from the stored
// one (internal/batchcrc) rather than read the batch.
func patchDerived(b []byte, h batchHeader, crc uint32, total int, s producerSession) {
	var before [batchHeaderLen - offAttributes]byte
	copy(before[:], b[offAttributes:batchHeaderLen])
	patchHeader(b, s.attrs(h.attributes), s)
	binary.BigEndian.PutUint32(b[offCRC:], batchcrc.Patched(crc, before[:], b[offAttributes:batchHeaderLen], total-offAttributes))
}

// prepareSplicedBatch is prepareBatch for a batch whose body is in pipes
// (fetchsplice.go): head is its header and whatever of its body is in
// memory, total its length. The answer stream spliced only batches the
// copy sends as they are, and the caller checked rebuildReason.
func prepareSplicedBatch(head []byte, total int, s producerSession) (preparedBatch, error) {
	h, err := parseHeader(head)
	if err != nil {
		return preparedBatch{}, err
	}
	if int(h.length)+12 != total || total < batchcrc.MinBytes {
		return preparedBatch{}, fmt.Errorf("spliced batch at offset %d: length field %d for %d bytes", h.firstOffset, h.length, total)
	}
	patchDerived(head, h, binary.BigEndian.Uint32(head[offCRC:]), total, s)
	return preparedBatch{raw: head, srcFirst: h.firstOffset, numRecords: h.numRecords, srcLast: h.lastOffset(), total: total, spliced: true}, nil
}

// rebuildReason says why a batch cannot be copied header-only, or "".
func rebuildReason(h batchHeader, from int64) string {
	switch {
	case int64(h.lastOffsetDelta)+1 != int64(h.numRecords):
		return "offset gaps (compaction)"
	case h.firstOffset < from:
		return "starts before the resume offset"
	case h.attributes&attrLogAppendTime != 0:
		return "LogAppendTime"
	}
	return ""
}

// batchCRCValid reports whether a batch's bytes match its CRC.
func batchCRCValid(b []byte) bool {
	return len(b) >= batchHeaderLen && binary.BigEndian.Uint32(b[offCRC:]) == crc32.Checksum(b[offAttributes:], castagnoli)
}

// corruptSourceBatch says whether a produce error means the source sent a
// corrupt batch: the target refused pb as corrupt, and its bytes do not
// match the CRC derived from the source's. Then copying again cannot help.
func corruptSourceBatch(err error, pb *preparedBatch) bool {
	return errors.Is(err, kerr.CorruptMessage) && !batchCRCValid(pb.raw)
}

// writeHeader patches the producer fields of a batch and recomputes its CRC.
func writeHeader(b []byte, attrs int16, s producerSession) {
	patchHeader(b, attrs, s)
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
}

// patchHeader patches the producer fields of a batch, leaving its CRC.
func patchHeader(b []byte, attrs int16, s producerSession) {
	be := binary.BigEndian
	be.PutUint64(b[offFirstOffset:], 0)
	be.PutUint32(b[offLeaderEpoch:], 0xffffffff) // -1
	be.PutUint16(b[offAttributes:], uint16(attrs))
	be.PutUint64(b[offProducerID:], uint64(s.pid))
	be.PutUint16(b[offProducerEpoch:], uint16(s.epoch))
	be.PutUint32(b[offFirstSequence:], uint32(s.seq))
}

var (
	decompressor = kgo.DefaultDecompressor()

	compressorsMu sync.Mutex // guards compressors
	compressors   = map[int16]kgo.Compressor{}

	bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

func compressorFor(codec int16) (kgo.Compressor, error) {
	compressorsMu.Lock()
	defer compressorsMu.Unlock()
	if c, ok := compressors[codec]; ok {
		return c, nil
	}
	var cc kgo.CompressionCodec
	switch codec {
	case 1:
		cc = kgo.GzipCompression()
	case 2:
		cc = kgo.SnappyCompression()
	case 3:
		cc = kgo.Lz4Compression()
	case 4:
		cc = kgo.ZstdCompression()
	default:
		return nil, fmt.Errorf("unknown compression codec %d", codec)
	}
	c, err := kgo.DefaultCompressor(cc)
	if err != nil {
		return nil, err
	}
	compressors[codec] = c
	return c, nil
}

// rebuildBatch decompresses a batch, keeps its records at or above from,
// renumbers their offset deltas 0..n-1, moves LogAppendTime into the record
// timestamps, and recompresses with the same codec. Keys, values and headers
// are copied as bytes, never decoded.
func rebuildBatch(b []byte, h batchHeader, from int64, s producerSession) (preparedBatch, error) {
	p := preparedBatch{srcFirst: h.firstOffset, srcLast: h.lastOffset(), rebuilt: true}
	codec := h.attributes & attrCodecMask
	recs, err := decompressor.Decompress(b[batchHeaderLen:], kgo.CompressionCodecType(codec))
	if err != nil {
		return p, fmt.Errorf("batch at offset %d: decompressing codec %d: %w", h.firstOffset, codec, err)
	}
	logAppend := h.attributes&attrLogAppendTime != 0
	firstTs := h.firstTimestamp
	if logAppend {
		firstTs = h.maxTimestamp // every record's timestamp is the append time
	}
	var out []byte
	var maxTs int64 = -1
	for i := int32(0); i < h.numRecords; i++ {
		l, n := binary.Varint(recs)
		if n <= 0 || l < 0 || int64(len(recs)-n) < l {
			return p, fmt.Errorf("batch at offset %d: record %d is truncated", h.firstOffset, i)
		}
		body := recs[n : n+int(l)]
		recs = recs[n+int(l):]
		// body: attributes int8, timestampDelta varlong, offsetDelta varint, rest.
		if len(body) < 1 {
			return p, fmt.Errorf("batch at offset %d: record %d is empty", h.firstOffset, i)
		}
		tsd, n1 := binary.Varint(body[1:])
		od, n2 := binary.Varint(body[1+max(n1, 0):])
		if n1 <= 0 || n2 <= 0 {
			return p, fmt.Errorf("batch at offset %d: record %d has a bad header", h.firstOffset, i)
		}
		rest := body[1+n1+n2:]
		off := h.firstOffset + od
		if off < from {
			continue
		}
		ts := h.firstTimestamp + tsd
		if logAppend {
			ts = h.maxTimestamp
		}
		maxTs = max(maxTs, ts)
		var hdr [1 + 2*binary.MaxVarintLen64]byte
		hdr[0] = body[0]
		k := 1 + binary.PutVarint(hdr[1:], ts-firstTs)
		k += binary.PutVarint(hdr[k:], int64(len(p.srcOffsets)))
		out = binary.AppendVarint(out, int64(k+len(rest)))
		out = append(out, hdr[:k]...)
		out = append(out, rest...)
		p.srcOffsets = append(p.srcOffsets, off)
	}
	p.numRecords = int32(len(p.srcOffsets))
	if p.numRecords == 0 {
		return p, nil
	}
	if codec != 0 {
		c, err := compressorFor(codec)
		if err != nil {
			return p, fmt.Errorf("batch at offset %d: %w", h.firstOffset, err)
		}
		buf := bufPool.Get().(*bytes.Buffer)
		buf.Reset()
		z, used := c.Compress(buf, out)
		if int16(used) != codec {
			bufPool.Put(buf)
			return p, fmt.Errorf("batch at offset %d: recompressing with codec %d failed", h.firstOffset, codec)
		}
		out = append([]byte(nil), z...)
		bufPool.Put(buf) // z aliased buf; copied above
	}
	nb := make([]byte, batchHeaderLen, batchHeaderLen+len(out))
	copy(nb, b[:batchHeaderLen])
	nb = append(nb, out...)
	be := binary.BigEndian
	be.PutUint32(nb[offLength:], uint32(len(nb)-12))
	be.PutUint32(nb[offLastOffsetDelta:], uint32(p.numRecords-1))
	be.PutUint64(nb[offFirstTimestamp:], uint64(firstTs))
	be.PutUint64(nb[offMaxTimestamp:], uint64(maxTs))
	be.PutUint32(nb[offNumRecords:], uint32(p.numRecords))
	writeHeader(nb, s.attrs(h.attributes&^attrLogAppendTime), s)
	p.raw = nb
	return p, nil
}
