package proxy

// ApiVersions (key 18), accepted v0-4.
// Route: answered by kproxy itself, never forwarded.
// Answer: per key, the intersection of every configured cluster's range and
// what kproxy lists (apis.go), so a client never picks a version one
// cluster lacks. A too-new request gets a v0 body with UNSUPPORTED_VERSION
// and our range (KIP-511), and the client retries lower.
// Not done: finalized features are not presented yet (no client needs them
// for the APIs advertised here).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleApiVersions(rc *reqCtx, req *kmsg.ApiVersionsRequest) func() kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	if req.Version >= 3 && !validSoftwareName(req.ClientSoftwareName, req.ClientSoftwareVersion) {
		resp.ErrorCode = kerr.InvalidRequest.Code
	}
	if req.Version >= 3 && resp.ErrorCode == 0 {
		sw := req.ClientSoftwareName + "/" + req.ClientSoftwareVersion
		rc.cc.software.Store(&sw) // part of the client instance's key (group_membership.go)
	}
	fillApiKeys(resp, rc.srv().advertised())
	return func() kmsg.Response { return resp }
}

func fillApiKeys(resp *kmsg.ApiVersionsResponse, adv map[int16]versionRange) {
	for _, k := range sortedKeys(adv) {
		r := adv[k]
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, r.min, r.max
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
}

// apiVersionsUnsupported is the v0 answer to an ApiVersions version we don't
// know.
func apiVersionsUnsupported(adv map[int16]versionRange) kmsg.Response {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	fillApiKeys(resp, adv)
	return resp
}

// validSoftwareName applies the broker's regex for KIP-511 names:
// [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])? (ApiVersionsRequest.isValid).
func validSoftwareName(name, version string) bool {
	ok := func(s string) bool {
		if s == "" {
			return false
		}
		alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
		if !alnum(s[0]) || !alnum(s[len(s)-1]) {
			return false
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; !alnum(c) && c != '-' && c != '.' {
				return false
			}
		}
		return true
	}
	return ok(name) && ok(version)
}
