package secure

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure/securetest"
)

// serverCA writes an httptest TLS server's certificate as a CA file.
func serverCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Keys from a JWKS URL: fetched at start; a token signed by a key the
// issuer rotated in is accepted after one more fetch; made-up key ids
// cause at most one fetch per 30 s; the held keys are refreshed once they
// are older than the refresh period, and a failed fetch keeps them.
func TestOAuthValidatorJWKSURL(t *testing.T) {
	old, rotated := securetest.NewIssuer(t, "kid-1"), securetest.NewIssuer(t, "kid-2")
	var mu sync.Mutex
	serving := old.JWKS(t)
	var hits atomic.Int32
	fail := atomic.Bool{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write(serving)
	}))
	defer srv.Close()
	v, err := NewOAuthValidatorURL(srv.URL+"/jwks", serverCA(t, srv), time.Hour, "https://idp.test", "kproxy", time.Second, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v.now = func() time.Time { return now }
	if p, _, err := v.Validate(old.Token(t, "svc-a", "https://idp.test", "kproxy", time.Hour)); err != nil || p != "svc-a" {
		t.Fatalf("token of the fetched key: %q %v", p, err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d fetches after start and one validation, want 1", n)
	}
	// The issuer rotates: both keys are served now.
	var both struct {
		Keys []json.RawMessage `json:"keys"`
	}
	for _, doc := range [][]byte{old.JWKS(t), rotated.JWKS(t)} {
		var d struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(doc, &d); err != nil {
			t.Fatal(err)
		}
		both.Keys = append(both.Keys, d.Keys...)
	}
	mu.Lock()
	serving, _ = json.Marshal(both)
	mu.Unlock()
	if p, _, err := v.Validate(rotated.Token(t, "svc-b", "https://idp.test", "kproxy", time.Hour)); err != nil || p != "svc-b" {
		t.Fatalf("token of the rotated-in key: %q %v", p, err)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (one for the unknown key id)", n)
	}
	// Made-up key ids: one fetch within 30 s, however many tokens.
	stranger := securetest.NewIssuer(t, "kid-made-up")
	now = now.Add(31 * time.Second)
	for range 5 {
		if _, _, err := v.Validate(stranger.Token(t, "x", "https://idp.test", "kproxy", time.Hour)); err == nil {
			t.Fatal("a token of an unknown key was accepted")
		}
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("%d fetches after 5 tokens with an unknown key id, want 3 (one more)", n)
	}
	// Past the refresh period the keys are fetched again; a failure
	// keeps the held ones.
	fail.Store(true)
	now = now.Add(2 * time.Hour)
	if _, _, err := v.Validate(rotated.Token(t, "svc-b", "https://idp.test", "kproxy", 3*time.Hour)); err != nil {
		t.Fatalf("held keys after a failed refresh: %v", err)
	}
	if n := hits.Load(); n != 4 {
		t.Fatalf("%d fetches, want 4 (the refresh)", n)
	}
	// The first fetch must work.
	if _, err := NewOAuthValidatorURL(srv.URL+"/jwks", serverCA(t, srv), 0, "", "", 0, "", hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("start with the endpoint down: %v", err)
	}
}

// OAUTHBEARER upstream from a client-credentials endpoint: the token is
// fetched with kproxy's client id and secret, cached while it has more
// than a minute left, and fetched again when it has less.
func TestTokenEndpointCachesAndRefreshes(t *testing.T) {
	const secret = "client-secret-5d2e"
	var hits atomic.Int32
	expiresIn := atomic.Int32{}
	expiresIn.Store(3600)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		id, pw, ok := r.BasicAuth()
		if !ok || id != "kproxy" || pw != secret || r.FormValue("grant_type") != "client_credentials" || r.FormValue("scope") != "kafka" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + string(rune('0'+n)), "token_type": "Bearer", "expires_in": expiresIn.Load()})
	}))
	defer srv.Close()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mech, err := ClientMechanism(&config.ClientSASL{Mechanism: "OAUTHBEARER", TokenEndpoint: &config.TokenEndpoint{
		URL: srv.URL + "/token", ClientID: "kproxy", ClientSecretFile: secretFile, Scopes: []string{"kafka"}, CAFile: serverCA(t, srv)}})
	if err != nil {
		t.Fatal(err)
	}
	token := func() string {
		_, msg, err := mech.Authenticate(context.Background(), "broker")
		if err != nil {
			t.Fatal(err)
		}
		return string(msg)
	}
	if m := token(); !strings.Contains(m, "auth=Bearer tok-1") {
		t.Fatalf("first token: %q", m)
	}
	if m := token(); !strings.Contains(m, "auth=Bearer tok-1") || hits.Load() != 1 {
		t.Fatalf("a valid token was not reused: %q after %d fetches", m, hits.Load())
	}
	// A token with less than a minute left is replaced before use.
	expiresIn.Store(30)
	mech2, err := ClientMechanism(&config.ClientSASL{Mechanism: "OAUTHBEARER", TokenEndpoint: &config.TokenEndpoint{
		URL: srv.URL + "/token", ClientID: "kproxy", ClientSecretFile: secretFile, Scopes: []string{"kafka"}, CAFile: serverCA(t, srv)}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, _, err := mech2.Authenticate(context.Background(), "broker"); err != nil {
			t.Fatal(err)
		}
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("%d fetches, want 3 (a short-lived token is fetched again for each use)", n)
	}
	// A wrong secret: the endpoint's refusal, never the secret.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("wrong-secret-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	m3, err := ClientMechanism(&config.ClientSASL{Mechanism: "OAUTHBEARER", TokenEndpoint: &config.TokenEndpoint{
		URL: srv.URL + "/token", ClientID: "kproxy", ClientSecretFile: bad, CAFile: serverCA(t, srv)}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = m3.Authenticate(context.Background(), "broker")
	if err == nil || strings.Contains(err.Error(), "wrong-secret-1") {
		t.Errorf("wrong secret: %v", err)
	}
}
