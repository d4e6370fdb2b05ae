package secure

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

// BearerToken protects an HTTP handler with the token in a file, re-read
// when the file changes (so a rotated token needs no restart). Requests
// from loopback addresses pass without it: the admin server's default
// address is loopback-only and unauthenticated, and `kproxy status` on the
// same host keeps working.
type BearerToken struct {
	path string

	mu    sync.Mutex
	token []byte
	stamp string
}

// NewBearerToken reads the token file; a missing or empty file is an error.
func NewBearerToken(path string) (*BearerToken, error) {
	b := &BearerToken{path: path}
	if _, err := b.current(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *BearerToken) current() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	stamp, err := fileStamp(b.path)
	if err == nil && stamp == b.stamp {
		return b.token, nil
	}
	data, err := os.ReadFile(b.path)
	if err != nil {
		if b.token != nil {
			return b.token, nil // keep the last good token
		}
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	tok := []byte(strings.TrimSpace(string(data)))
	if len(tok) == 0 {
		if b.token != nil {
			return b.token, nil
		}
		return nil, fmt.Errorf("admin token file %s is empty", b.path)
	}
	b.token, b.stamp = tok, stamp
	return tok, nil
}

// Wrap requires the token on every request to next except from loopback
// peers and for the paths in open.
func (b *BearerToken) Wrap(next http.Handler, open ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range open {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
				next.ServeHTTP(w, r)
				return
			}
		}
		tok, err := b.current()
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if err != nil || !ok || subtle.ConstantTimeCompare([]byte(got), tok) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kproxy"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
