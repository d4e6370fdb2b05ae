package proxy

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzParseRequest feeds arbitrary frame bodies to the request decoding path.
// Invariants: it never panics, and when it accepts a request, the request
// re-encodes (so a handler can forward it). The data path's way of decoding
// (dispatch: Produce and Fetch into reused requests, last decoded from
// another frame, Produce without copying strings; the connection's last
// client id offered for reuse) accepts exactly the same frames and decodes
// them to the same request.
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
	// What the reused requests hold before each decode: a request of every
	// field at the highest version.
	dirty := func(k kmsg.Key) []byte {
		req := kmsg.RequestForKey(k.Int16())
		req.SetVersion(adv[k.Int16()].max)
		switch r := req.(type) {
		case *kmsg.ProduceRequest:
			r.TransactionID = kmsg.StringPtr("txn")
			r.Topics = []kmsg.ProduceRequestTopic{{Topic: "old", TopicID: [16]byte{9}, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 3, Records: []byte{1, 2}}}}}
			r.UnknownTags.Set(99, []byte{1})
		case *kmsg.FetchRequest:
			r.Rack, r.SessionID = "rack", 7
			r.Topics = []kmsg.FetchRequestTopic{{Topic: "old", TopicID: [16]byte{9}, Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 3, FetchOffset: 5}}}}
			r.ForgottenTopics = []kmsg.FetchRequestForgottenTopic{{Topic: "gone", Partitions: []int32{1}}}
			r.UnknownTags.Set(99, []byte{1}) // kmsg's decode adds to, not replaces, unknown tags
		}
		return appendRequest(nil, 1, kmsg.StringPtr("old"), req)[4:]
	}
	dirtyProduce, dirtyFetch := dirty(kmsg.Produce), dirty(kmsg.Fetch)
	f.Fuzz(func(t *testing.T, body []byte) {
		h, req, _, err := parseRequest(body, adv, nil, nil, false)

		ps, fs := newProduceScratch(), &fetchScratch{}
		prev := kmsg.StringPtr("fuzz")
		if _, _, _, err := parseRequest(dirtyProduce, adv, nil, ps.decodeInto(), true); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := parseRequest(dirtyFetch, adv, nil, fs.decodeInto(), false); err != nil {
			t.Fatal(err)
		}
		var into kmsg.Request
		unsafe := false
		if len(body) >= 2 {
			switch kmsg.Key(int16(body[0])<<8 | int16(body[1])) {
			case kmsg.Produce:
				into, unsafe = ps.decodeInto(), true
			case kmsg.Fetch:
				into = fs.decodeInto()
			}
		}
		h2, req2, _, err2 := parseRequest(body, adv, prev, into, unsafe)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("fresh decode error %v, reused decode error %v", err, err2)
		}
		if err != nil {
			return
		}
		if req.Key() != h.key || req.GetVersion() != h.version {
			t.Fatalf("decoded %d v%d from header %d v%d", req.Key(), req.GetVersion(), h.key, h.version)
		}
		if (h.clientID == nil) != (h2.clientID == nil) || h.clientID != nil && *h.clientID != *h2.clientID {
			t.Fatalf("client id %v, reused decode %v", h.clientID, h2.clientID)
		}
		if p, ok := req2.(*kmsg.ProduceRequest); ok {
			ownProduceStrings(p)
		}
		if a, b := req.AppendTo(nil), req2.AppendTo(nil); !bytes.Equal(a, b) {
			t.Fatalf("a reused request decodes to other bytes: %x, fresh %x", b, a)
		}
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
