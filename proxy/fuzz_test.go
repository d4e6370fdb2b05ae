package proxy

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzParseRequest feeds arbitrary frame bodies to the request decoding path.
// Invariants: it never panics, and when it accepts a request, the request
// re-encodes (so a handler can forward it).
func FuzzParseRequest(f *testing.F) {
	adv := map[int16]versionRange{}
	for k, s := range registry {
		adv[k] = versionRange{s.min, s.max}
	}
	for _, k := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.Metadata, kmsg.ApiVersions, kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.OffsetCommit} {
		req := kmsg.RequestForKey(k.Int16())
		for _, v := range []int16{adv[k.Int16()].min, adv[k.Int16()].max} {
			req.SetVersion(v)
			frame := appendRequest(nil, 1, kmsg.StringPtr("fuzz"), req)
			f.Add(frame[4:])
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	// The tag flood: Metadata v12 declaring 2^32-1 tagged fields
	// (kmsg >= 1.15.1 stops at the end of the input; decision 002).
	f.Add([]byte{0, 3, 0, 12, 0, 0, 0, 7, 0xff, 0xff, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, body []byte) {
		h, req, _, err := parseRequest(body, adv, nil, nil, false)
		if err != nil {
			return
		}
		if req.Key() != h.key || req.GetVersion() != h.version {
			t.Fatalf("decoded %d v%d from header %d v%d", req.Key(), req.GetVersion(), h.key, h.version)
		}
		_ = req.AppendTo(nil)
	})
}

// FuzzReadFrame feeds arbitrary bytes to the client frame reader.
// Invariants: it never panics, a frame it returns has its declared size,
// and what it allocated is proportional to the bytes that arrived (at most
// twice the input plus one chunk), whatever size the prefix declared.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0x06, 0x40, 0x00, 0x00})              // 100 MiB declared, nothing sent
	f.Add([]byte{0, 0, 0, 8, 0, 18, 0, 3, 0, 0, 0, 1}) // a whole ApiVersions header
	f.Add([]byte{0, 0, 0x10, 0, 1, 2, 3})              // 4 KiB declared, 3 bytes sent
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})              // negative size
	f.Add([]byte("GET / HTTP/1.1\r\n"))                // not Kafka
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		n, err := readFrameSize(r, 128<<20)
		if err != nil {
			return
		}
		var charged int
		body, err := readFrameBody(r, n, nil, func(k int) error { charged += k; return nil })
		if err == nil && len(body) != n {
			t.Fatalf("read %d bytes of a %d-byte frame", len(body), n)
		}
		if charged > len(data)-4+frameChunk {
			t.Fatalf("charged %d bytes for %d received", charged, len(data)-4)
		}
		if body != nil && cap(body) > 2*(len(data)-4)+frameChunk {
			t.Fatalf("allocated %d bytes for %d received", cap(body), len(data)-4)
		}
	})
}

// FuzzUpstreamResponse feeds arbitrary frames to the upstream response path
// (responseBody, then kmsg's decoding as pending.responseBody does it), as
// from a broken or hostile broker. Invariants: it never panics, and a
// response it accepts re-encodes.
func FuzzUpstreamResponse(f *testing.F) {
	for _, k := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.Metadata, kmsg.ApiVersions, kmsg.FindCoordinator, kmsg.InitProducerID, kmsg.ListOffsets} {
		resp := kmsg.ResponseForKey(k.Int16())
		for _, v := range []int16{0, resp.MaxVersion()} {
			resp.SetVersion(v)
			frame := appendResponseHeader(nil, 9, resp)
			frame = resp.AppendTo(frame)
			f.Add(uint8(k), v, frame[4:])
		}
	}
	f.Add(uint8(kmsg.Metadata), int16(12), []byte{0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, key uint8, ver int16, frame []byte) {
		resp := kmsg.ResponseForKey(int16(key))
		if resp == nil || ver < 0 || ver > resp.MaxVersion() {
			return
		}
		body, err := responseBody(frame, 9, int16(key), ver)
		if err != nil {
			return
		}
		resp.SetVersion(ver)
		if err := resp.ReadFrom(body); err != nil {
			return
		}
		_ = resp.AppendTo(nil)
	})
}
