package control

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A fully secured instance (TLS+SASL listener, SASL upstream with the
// password in the environment, token-protected admin without pprof) serves
// an authenticated client, refuses a wrong password, and never shows a
// secret in its logs (at trace level), /status or /metrics.
func TestSecuredInstanceKeepsSecretsOutOfOutput(t *testing.T) {
	const (
		clientPass   = "client-secret-pw-4f8e1a"
		wrongPass    = "wrong-secret-pw-77c3d0"
		upstreamPass = "upstream-secret-pw-b2a9e6"
		adminToken   = "admin-token-secret-0d5c3f"
	)
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "kproxy-svc", upstreamPass))
	dir := t.TempDir()
	ca := securetest.NewCA(t, "ca")
	certFile, keyFile, _ := ca.WriteFiles(t, dir, "kproxy", pkix.Name{CommonName: "localhost"})
	users, err := secure.MarshalUsers(map[string]string{"app1": clientPass}, secure.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	usersFile, tokenFile := filepath.Join(dir, "users.yaml"), filepath.Join(dir, "admin.token")
	if err := os.WriteFile(usersFile, users, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KPROXY_TEST_SRC_PASSWORD", upstreamPass)
	listen, _ := freeAddr()
	admin, _ := freeAddr()
	yaml := fmt.Sprintf(`
listeners:
  - name: sasl_ssl
    listen: %s
    tls: { cert_file: %s, key_file: %s }
    sasl: { users_file: %s, max_reauth: 1h }
admin: { address: %s, token_file: %s, tls: { cert_file: %s, key_file: %s } }
state_dir: %s
clusters:
  source:
    bootstrap: [%s]
    sasl: { mechanism: SCRAM-SHA-512, username: kproxy-svc, password_env: KPROXY_TEST_SRC_PASSWORD }
routes:
  default: source
`, listen, certFile, keyFile, usersFile, admin, tokenFile, certFile, keyFile, dir, src.ListenAddrs()[0])
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, err := Start(ctx, cfg, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()

	client := func(pass string, opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(listen), kgo.DialTLSConfig(ca.ClientTLS(t, nil, nil)),
			kgo.SASL(scram.Auth{User: "app1", Pass: pass}.AsSha512Mechanism())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	cl := client(clientPass, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if fs := cl.PollFetches(ctx); fs.NumRecords() == 0 {
		t.Fatalf("nothing consumed: %v", fs.Errors())
	}
	bad := client(wrongPass, kgo.RequestRetries(0))
	if err := bad.Ping(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("wrong password: %v", err)
	}
	bad.Close()

	if resp, err := http.Get("http://" + admin + "/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS admin server: %d, want 400", resp.StatusCode)
		}
	}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS(t, nil, nil)}}
	get := func(path string) (int, string) {
		resp, err := https.Get("https://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, status := get("/status")
	if code != 200 || !strings.Contains(status, `"security": "SASL_SSL"`) {
		t.Errorf("/status %d:\n%s", code, status)
	}
	_, metrics := get("/metrics")
	if !strings.Contains(metrics, `kproxy_sasl_authentication_failures_total{mechanism="SCRAM-SHA-512"} 1`) {
		t.Errorf("the failed authentication is not counted")
	}
	if code, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ answered %d with admin.pprof off", code)
	}
	out := map[string]string{"logs": logs.String(), "/status": status, "/metrics": metrics}
	for name, text := range out {
		for _, secret := range []string{clientPass, wrongPass, upstreamPass, adminToken} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains a secret (%s...)", name, secret[:8])
			}
		}
	}
	if !strings.Contains(out["logs"], "SASL authentication failed") {
		t.Errorf("the failure is not logged")
	}
}

// Off loopback the admin server wants the bearer token, except for the
// health probes; loopback peers pass.
func TestAdminBearerToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := secure.NewBearerToken(path)
	if err != nil {
		t.Fatal(err)
	}
	h := tok.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }), "/healthz")
	for _, tc := range []struct {
		remote, path, auth string
		want               int
	}{
		{"10.1.2.3:5000", "/status", "", 401},
		{"10.1.2.3:5000", "/status", "Bearer tok-2", 401},
		{"10.1.2.3:5000", "/status", "Bearer tok-1", 200},
		{"10.1.2.3:5000", "/healthz", "", 200},
		{"127.0.0.1:5000", "/status", "", 200},
	} {
		r := httptest.NewRequest("GET", tc.path, nil)
		r.RemoteAddr = tc.remote
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s %s %q: %d, want %d", tc.remote, tc.path, tc.auth, w.Code, tc.want)
		}
	}
	// A rotated token is picked up without a restart.
	if err := os.WriteFile(path, []byte("tok-2-longer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/status", nil)
	r.RemoteAddr = "10.1.2.3:5000"
	r.Header.Set("Authorization", "Bearer tok-2-longer")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("rotated token refused: %d", w.Code)
	}
}

// admin.metrics_address serves /metrics, and nothing else, without the
// admin token, next to a token-protected admin address.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1))
	tgt := newKfake(t, kfake.NumBrokers(1))
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("admin-tok-3f1c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst := startYAML(t, ctx, fmt.Appendf(nil, "listen: %s\nadmin: { address: %s, token_file: %s, metrics_address: %s }\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n",
		listen, admin, tokFile, metrics, src.ListenAddrs()[0], tgt.ListenAddrs()[0]))
	defer inst.Close()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + metrics + "/metrics"); code != 200 || !strings.Contains(body, "kproxy_client_connections") {
		t.Errorf("/metrics on the metrics address: %d, kproxy metrics in it: %v", code, strings.Contains(body, "kproxy_client_connections"))
	}
	for _, path := range []string{"/status", "/clients", "/debug/pprof/"} {
		if code, _ := get("http://" + metrics + path); code != 404 {
			t.Errorf("%s on the metrics address: %d, want 404 (only /metrics is served there)", path, code)
		}
	}
	if code, _ := get("http://" + admin + "/status"); code != 200 {
		t.Errorf("/status on the admin address: %d", code)
	}
	if got := inst.MetricsAddr(); got == nil || got.String() != metrics {
		t.Errorf("MetricsAddr %v, want %s", got, metrics)
	}
}
