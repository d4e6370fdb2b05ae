package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// `kproxy probe ready` follows /readyz: exit 0 on 200, 1 on 503 or when
// nothing listens (the kubelet's exec probe reads only the exit code).
func TestProbeFollowsReadyz(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok\n"))
		case "/readyz":
			if !ready.Load() {
				http.Error(w, "not ready: cluster source unreachable", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ready\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	admin := strings.TrimPrefix(srv.URL, "http://")

	probe := func(what string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run([]string{"probe", "-admin", admin, what}, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := probe("live"); code != 0 {
		t.Errorf("live: exit %d (%s), want 0", code, out)
	}
	if code, out := probe("ready"); code != 1 || !strings.Contains(out, "cluster source unreachable") {
		t.Errorf("ready while not ready: exit %d (%s), want 1 with the reason", code, out)
	}
	ready.Store(true)
	if code, out := probe("ready"); code != 0 {
		t.Errorf("ready: exit %d (%s), want 0", code, out)
	}
	if code, _ := probe("bogus"); code != 1 {
		t.Errorf("bogus: exit %d, want 1", code)
	}
	srv.Close()
	if code, _ := probe("live"); code != 1 {
		t.Errorf("live with nothing listening: exit %d, want 1", code)
	}
}
