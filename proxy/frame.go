package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// errFrameTooLarge is returned when a frame's declared size exceeds the
// configured maximum. The connection is closed: we cannot skip the body
// without reading it, and a peer that sends such a size is usually not
// speaking Kafka at all.
var errFrameTooLarge = errors.New("frame exceeds the configured maximum size")

// frameBufPool holds frame buffers. Lifetime rule: kmsg byte fields alias the
// buffer they were decoded from, so a buffer returns to the pool only after
// every request or response decoded from it has been re-encoded or dropped.
var frameBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func getBuf() *[]byte { return frameBufPool.Get().(*[]byte) }

// fetchFramePool holds upstream fetch response buffers apart from the small
// response-encoding buffers, so a multi-megabyte fetch frame finds a
// buffer of its own size again (same lifetime rule as frameBufPool).
var fetchFramePool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

func putFetchFrame(b *[]byte) { putFrame(&fetchFramePool, b) }

// answerFramePool holds upstream Produce answer buffers (small; same
// lifetime rule as frameBufPool).
var answerFramePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// putFrame gives an upstream answer buffer back to the pool it came from.
func putFrame(pool *sync.Pool, b *[]byte) {
	if pool == nil || cap(*b) > 64<<20 || pool == &answerFramePool && cap(*b) > 1<<20 {
		return
	}
	*b = (*b)[:0]
	pool.Put(b)
}

func putBuf(b *[]byte) {
	if cap(*b) > 8<<20 { // do not pin huge fetch buffers forever
		return
	}
	*b = (*b)[:0]
	frameBufPool.Put(b)
}

// readFrame reads one size-prefixed Kafka frame into a fresh buffer.
// The size is checked against max before any allocation.
func readFrame(r io.Reader, max int32) ([]byte, error) { return readFrameInto(r, max, nil) }

// readFrameInto reads a frame into reuse when it is large enough, else into a
// buffer that grows as the body arrives.
func readFrameInto(r io.Reader, max int32, reuse []byte) ([]byte, error) {
	n, err := readFrameSize(r, max)
	if err != nil {
		return nil, err
	}
	return readFrameBody(r, n, reuse, nil)
}

// readFrameSize reads and checks a frame's 4-byte size prefix.
func readFrameSize(r io.Reader, max int32) (int, error) { return readSizeAtLeast(r, max, 8) }

// readSizeAtLeast reads a size prefix that must be from least to max: 8
// for a request (its header), 0 for a bare SASL token after a v0
// SaslHandshake.
func readSizeAtLeast(r io.Reader, max, least int32) (int, error) {
	var size [4]byte
	if br, ok := r.(*bufio.Reader); ok {
		// Peek and Discard: size does not escape through io.ReadFull's
		// interface (an allocation per frame).
		b, err := br.Peek(4)
		if err != nil {
			if len(b) > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		copy(size[:], b)
		_, _ = br.Discard(4)
	} else {
		var b [4]byte // escapes (io.Reader): allocated on this path only
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, err
		}
		size = b
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 0 || n > max {
		return 0, fmt.Errorf("%w: declared %d bytes, max %d%s", errFrameTooLarge, n, max, sizeHint(size))
	}
	if n < least {
		return 0, fmt.Errorf("frame of %d bytes is shorter than a request header", n)
	}
	return int(n), nil
}

// frameChunk is how much of a frame body is read (and, for client frames,
// charged to the buffer budget) at a time.
const frameChunk = 64 << 10

// readFrameBody reads an n-byte frame body. The declared size is only a
// claim: the buffer grows with the bytes that actually arrive (at most twice
// what was received, plus one chunk), so a peer that declares 100 MiB and
// stalls costs one chunk, not 100 MiB. acquire, when set, is called before
// each chunk is read with the chunk's size and may block (the buffer
// budget); an error from it ends the read. The caller owns what acquire
// took, also on error.
func readFrameBody(r io.Reader, n int, reuse []byte, acquire func(int) error) ([]byte, error) {
	return readBodyChunks(n, reuse, acquire, func(b []byte) (int, error) { return io.ReadFull(r, b) }, frameChunk)
}

// readBodyChunks is readFrameBody reading through fill, which fills a
// slice whole or fails. most is the largest chunk taken at once where the
// buffer already has room for it (a reused buffer); a chunk that grows the
// buffer is never more than frameChunk, so memory still follows the bytes
// received.
func readBodyChunks(n int, reuse []byte, acquire func(int) error, fill func([]byte) (int, error), most int) ([]byte, error) {
	buf := reuse[:0]
	for len(buf) < n {
		k := min(n-len(buf), frameChunk)
		if room := cap(buf) - len(buf); room > k {
			k = min(n-len(buf), room, max(most, frameChunk))
		}
		if acquire != nil {
			if err := acquire(k); err != nil {
				return nil, err
			}
		}
		if cap(buf)-len(buf) < k {
			grown := make([]byte, len(buf), min(max(2*cap(buf), len(buf)+k), n))
			copy(grown, buf)
			buf = grown
		}
		m, err := fill(buf[len(buf) : len(buf)+k])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, fmt.Errorf("reading %d-byte frame body (%d received): %w", n, len(buf), err)
		}
	}
	return buf, nil
}

// sizeHint recognises common non-Kafka openings, as kgo's parseReadSize does,
// so the log line says what the peer probably is.
func sizeHint(b [4]byte) string {
	switch {
	case string(b[:]) == "GET " || string(b[:]) == "POST" || string(b[:]) == "HTTP":
		return " (the peer is speaking HTTP, not Kafka)"
	case b[0] == 0x16 && b[1] == 0x03:
		return " (the peer is starting TLS; kproxy's listener is plaintext)"
	}
	return ""
}

// requestHeader is the parsed Kafka request header (v1 or v2).
type requestHeader struct {
	key      int16
	version  int16
	corr     int32
	clientID *string
}

// parseRequestHeader reads the header fields that are common to every
// version; the flexible tag section is skipped by the caller once it knows
// whether the API version is flexible. prev (may be nil) is the client id
// of the connection's previous request: a client sends the same one every
// time, and the same one is given back instead of a new string per request.
func parseRequestHeader(body []byte, prev *string) (requestHeader, kbin.Reader, error) {
	r := kbin.Reader{Src: body}
	h := requestHeader{key: r.Int16(), version: r.Int16(), corr: r.Int32()}
	if n := r.Int16(); n >= 0 {
		b := r.Span(int(n))
		if prev != nil && string(b) == *prev {
			h.clientID = prev
		} else if r.Ok() {
			id := string(b)
			h.clientID = &id
		}
	}
	if err := r.Complete(); err != nil {
		return h, r, fmt.Errorf("truncated request header: %w", err)
	}
	return h, r, nil
}

// decodeRequest decodes the body after the header into req (whose version has
// been set). Trailing garbage is tolerated like the broker does for unknown
// tagged fields, but a short body is an error.
// It returns the request body (after the header) it decoded from. unsafe
// decodes strings without copying them: they alias the frame.
func decodeRequest(r *kbin.Reader, req kmsg.Request, unsafe bool) ([]byte, error) {
	if req.IsFlexible() {
		skipTagsBounded(r)
		if err := r.Complete(); err != nil {
			return nil, fmt.Errorf("truncated request header tags: %w", err)
		}
	}
	if fr, ok := req.(*kmsg.FetchRequest); ok {
		if decodeFetchPlain(r.Src, fr) {
			return r.Src, nil
		}
		*fr = kmsg.FetchRequest{Version: fr.Version, Topics: fr.Topics[:0]}
	}
	read := req.ReadFrom
	if unsafe {
		read = req.(kmsg.UnsafeReadFrom).UnsafeReadFrom
	}
	if err := read(r.Src); err != nil {
		return nil, fmt.Errorf("decoding %s v%d: %w", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return r.Src, nil
}

// appendResponseHeader starts a response frame: a size placeholder (see
// setFrameSize), the correlation id and, for flexible versions other than
// ApiVersions, the empty header tag section.
func appendResponseHeader(dst []byte, corr int32, resp kmsg.Response) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = kbin.AppendInt32(dst, corr)
	if resp.IsFlexible() && resp.Key() != kmsg.ApiVersions.Int16() {
		dst = append(dst, 0)
	}
	return dst
}

// setFrameSize fills the size of a frame that starts at frame[0] and is
// followed by extra more bytes written separately.
func setFrameSize(frame []byte, extra int) {
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4+extra))
}

// passthrough is a response whose upstream body bytes are exactly what the
// client must receive (same API version, nothing to rewrite): the write loop
// sends them as they are instead of re-encoding the decoded form. Fetch uses
// it, so record batches are never copied into a new frame.
type passthrough struct {
	kmsg.Response // the decoded form: key, version, flexibility
	body          []byte
	frames        heldFrames
}

// heldResponse is a response whose byte fields alias pooled upstream
// buffers; the write loop releases them once the response is written.
type heldResponse struct {
	kmsg.Response
	frames heldFrames
}

// heldFrames are pooled upstream buffers a response still aliases.
type heldFrames []*upstreamCall

func (h *heldFrames) release() {
	for _, c := range *h {
		c.releaseFrame()
	}
	*h = nil
}

// appendRequestHeader writes a request frame's size placeholder and header
// for a body that follows separately (see setFrameSize).
func appendRequestHeader(dst []byte, key, version int16, flexible bool, corr int32, clientID *string) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = kbin.AppendInt16(dst, key)
	dst = kbin.AppendInt16(dst, version)
	dst = kbin.AppendInt32(dst, corr)
	dst = kbin.AppendNullableString(dst, clientID)
	if flexible {
		dst = append(dst, 0)
	}
	return dst
}

// appendRequest frames req for an upstream broker, carrying the downstream
// client's client.id so broker-side quotas and metrics see the real client.
func appendRequest(dst []byte, corr int32, clientID *string, req kmsg.Request) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = kbin.AppendInt16(dst, req.Key())
	dst = kbin.AppendInt16(dst, req.GetVersion())
	dst = kbin.AppendInt32(dst, corr)
	dst = kbin.AppendNullableString(dst, clientID)
	if req.IsFlexible() {
		dst = append(dst, 0)
	}
	dst = req.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// skipTagsBounded skips a tagged-field section, stopping as soon as the
// reader runs dry. kmsg.SkipTags before v1.15.1 kept counting down a huge
// declared tag count after the input was exhausted (about 20 s of CPU for a
// 20-byte frame); see docs/decisions/002-kmsg-tag-loop.md.
func skipTagsBounded(r *kbin.Reader) {
	for num := r.Uvarint(); num > 0 && r.Ok(); num-- {
		_, size := r.Uvarint(), r.Uvarint()
		r.Span(int(size))
	}
}
