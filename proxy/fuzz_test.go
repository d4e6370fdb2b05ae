package proxy

import (
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
	f.Fuzz(func(t *testing.T, body []byte) {
		// kmsg's own tag loops count down a declared tag count even after
		// the input ran out (docs/decisions/002-kmsg-tag-loop.md): such an
		// input takes seconds, not a crash. Leave those to the decision
		// record and fuzz everything else.
		if hasHugeUvarint(body) {
			t.Skip("input declares a multi-million-entry tag section")
		}
		h, req, _, err := parseRequest(body, adv)
		if err != nil {
			return
		}
		if req.Key() != h.key || req.GetVersion() != h.version {
			t.Fatalf("decoded %d v%d from header %d v%d", req.Key(), req.GetVersion(), h.key, h.version)
		}
		_ = req.AppendTo(nil)
	})
}

// hasHugeUvarint reports a run of four continuation bytes, the shape of a
// uvarint of 2^28 or more.
func hasHugeUvarint(b []byte) bool {
	run := 0
	for _, c := range b {
		if c&0x80 != 0 {
			run++
			if run >= 3 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}
