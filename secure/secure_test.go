package secure

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/xdg-go/scram"
	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure/securetest"
)

// fakeClock is a settable now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// A certificate renewed on disk is served from the next handshake after
// the once-a-second check; a broken pair keeps the previous one.
func TestServerCertificateReloadsWhenFilesChange(t *testing.T) {
	dir := t.TempDir()
	ca := securetest.NewCA(t, "ca")
	certFile, keyFile, _ := ca.WriteFiles(t, dir, "srv", pkix.Name{CommonName: "first"})
	clock := &fakeClock{time.Unix(1000, 0)}
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: hclog.NewNullLogger(), now: clock.now}
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	cn := func() string {
		t.Helper()
		c, err := r.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	if got := cn(); got != "first" {
		t.Fatalf("serving %q, want first", got)
	}
	certPEM, keyPEM := ca.Issue(t, pkix.Name{CommonName: "second"})
	// Write with a distinct mtime: the stamp is mtime and size.
	writeAt := func(f string, b []byte, at time.Time) {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
	later := time.Now().Add(time.Minute)
	writeAt(certFile, certPEM, later)
	writeAt(keyFile, keyPEM, later)
	if got := cn(); got != "first" {
		t.Fatalf("reloaded within the check interval: %q", got)
	}
	clock.t = clock.t.Add(time.Second)
	if got := cn(); got != "second" {
		t.Fatalf("serving %q after the files changed, want second", got)
	}
	writeAt(keyFile, []byte("not a key"), later.Add(time.Minute))
	clock.t = clock.t.Add(time.Second)
	if got := cn(); got != "second" {
		t.Fatalf("serving %q after a broken key, want the previous certificate", got)
	}
}

func TestServerTLSSettings(t *testing.T) {
	dir := t.TempDir()
	ca := securetest.NewCA(t, "ca")
	certFile, keyFile, caFile := ca.WriteFiles(t, dir, "srv", pkix.Name{CommonName: "localhost"})
	tc, err := ServerTLS(&config.ServerTLS{CertFile: certFile, KeyFile: keyFile, MinVersion: "1.3", ClientCAFile: caFile}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS13 || tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.ClientCAs == nil {
		t.Errorf("min version %x, client auth %v: want TLS 1.3 and required client certificates", tc.MinVersion, tc.ClientAuth)
	}
	if _, err := ServerTLS(&config.ServerTLS{CertFile: certFile, KeyFile: filepath.Join(dir, "missing")}, hclog.NewNullLogger()); err == nil {
		t.Error("a missing key file was accepted")
	}
}

func TestPrincipalMapping(t *testing.T) {
	m, err := NewPrincipalMapper([]config.PrincipalRule{
		{Pattern: `^CN=([^,]+),OU=payments`, Principal: "pay-$1", Case: "lower"},
		{Pattern: `^CN=([^,]+)`, Principal: "$1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for subject, want := range map[string]string{
		"CN=App1,OU=payments,O=Example": "pay-app1",
		"CN=Batch,OU=ops,O=Example":     "Batch",
		"O=Example":                     "O=Example", // no rule matches: the whole subject
	} {
		var name pkix.Name
		for _, part := range strings.Split(subject, ",") {
			k, v, _ := strings.Cut(part, "=")
			switch k {
			case "CN":
				name.CommonName = v
			case "OU":
				name.OrganizationalUnit = []string{v}
			case "O":
				name.Organization = []string{v}
			}
		}
		if got := m.Principal(&x509.Certificate{Subject: name}); got != want {
			t.Errorf("%s (%s): got %q, want %q", subject, name.String(), got, want)
		}
	}
}

func writeUsers(t *testing.T, path string, users map[string]string) {
	t.Helper()
	f := UsersFile{Users: map[string]map[string]ScramEntry{}}
	for u, p := range users {
		e, err := NewScramEntry(config.MechScramSHA512, p, MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		f.Users[u] = map[string]ScramEntry{config.MechScramSHA512: e}
	}
	b, _ := yaml.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The users file stores no password, PLAIN is checked against the SCRAM
// entry, and a changed file is picked up; a broken one keeps the users.
func TestUserStoreChecksAndReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	writeUsers(t, path, map[string]string{"alice": "pw-alice-123"})
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte("pw-alice-123")) {
		t.Fatal("the users file holds the password")
	}
	s, err := OpenUserStore(path, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{s.checkedAt}
	s.now = clock.now
	if !s.checkPlain("alice", "pw-alice-123") || s.checkPlain("alice", "pw-alice-124") || s.checkPlain("bob", "pw-alice-123") {
		t.Fatal("PLAIN check wrong")
	}
	if _, ok := s.lookup(config.MechScramSHA256, "alice"); ok {
		t.Error("a SCRAM-SHA-256 credential for a user with only a SHA-512 entry")
	}
	writeUsers(t, path, map[string]string{"bob": "pw-bob-456"})
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(path, future, future)
	clock.t = clock.t.Add(time.Second)
	if !s.checkPlain("bob", "pw-bob-456") || s.checkPlain("alice", "pw-alice-123") {
		t.Error("the changed users file was not picked up")
	}
	if err := os.WriteFile(path, []byte("users: [broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(path, future.Add(time.Minute), future.Add(time.Minute))
	clock.t = clock.t.Add(time.Second)
	if !s.checkPlain("bob", "pw-bob-456") {
		t.Error("a broken users file dropped the users")
	}
}

func TestUsersFileRejectsWeakOrUnknownEntries(t *testing.T) {
	for name, doc := range map[string]string{
		"few iterations": "users: {a: {SCRAM-SHA-256: {salt: c2FsdA==, iterations: 100, stored_key: a2V5, server_key: a2V5}}}",
		"unknown mech":   "users: {a: {SCRAM-SHA-1: {salt: c2FsdA==, iterations: 4096, stored_key: a2V5, server_key: a2V5}}}",
		"cleartext":      "users: {a: {password: hunter2}}",
	} {
		if _, err := parseUsers([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The server conversation interoperates with an independent SCRAM client
// (xdg-go's), and a wrong password fails with the broker's message.
func TestSCRAMConversation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	writeUsers(t, path, map[string]string{"alice": "pw-alice-123"})
	store, err := OpenUserStore(path, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthenticator([]string{config.MechScramSHA512}, store)
	run := func(pass string) error {
		client, _ := scram.SHA512.NewClient("alice", pass, "")
		cc := client.NewConversation()
		conv, err := a.Start(config.MechScramSHA512)
		if err != nil {
			return err
		}
		msg, _ := cc.Step("")
		for {
			out, done, err := conv.Step([]byte(msg))
			if err != nil {
				return err
			}
			if msg, err = cc.Step(string(out)); err != nil {
				return err
			}
			if done {
				if conv.Username() != "alice" {
					t.Errorf("principal %q", conv.Username())
				}
				return nil
			}
		}
	}
	if err := run("pw-alice-123"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	err = run("nope")
	var af *ErrAuthFailed
	if !errors.As(err, &af) || !strings.Contains(err.Error(), "invalid credentials with SASL mechanism SCRAM-SHA-512") {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := a.Start(config.MechPlain); err == nil {
		t.Error("PLAIN started though not offered")
	}
}

// Upstream credentials come from a file or the environment; errors name
// where, never what.
func TestUpstreamForReadsSecretsFromFilesAndEnv(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := UpstreamFor(&config.ClusterConfig{SASL: &config.ClientSASL{Mechanism: "SCRAM-SHA-256", Username: "kp", PasswordFile: pwFile}})
	if err != nil || u.SASL == nil || u.SASL.Name() != "SCRAM-SHA-256" || u.TLS != nil {
		t.Fatalf("file: %+v %v", u, err)
	}
	t.Setenv("KP_TEST_PW", "s3cret-env")
	if u, err = UpstreamFor(&config.ClusterConfig{SASL: &config.ClientSASL{Mechanism: "PLAIN", Username: "kp", PasswordEnv: "KP_TEST_PW"}}); err != nil || u.SASL.Name() != "PLAIN" {
		t.Fatalf("env: %+v %v", u, err)
	}
	_, err = UpstreamFor(&config.ClusterConfig{SASL: &config.ClientSASL{Mechanism: "PLAIN", Username: "kp", PasswordEnv: "KP_TEST_UNSET_VAR"}})
	if err == nil || !strings.Contains(err.Error(), "KP_TEST_UNSET_VAR") {
		t.Errorf("unset variable: %v", err)
	}
	ca := securetest.NewCA(t, "ca")
	_, _, caFile := ca.WriteFiles(t, dir, "x", pkix.Name{CommonName: "x"})
	u, err = UpstreamFor(&config.ClusterConfig{TLS: &config.ClientTLS{CAFile: caFile, ServerName: "broker.internal"}})
	if err != nil || u.TLS == nil || u.TLS.RootCAs == nil || u.TLS.ServerName != "broker.internal" {
		t.Fatalf("tls: %+v %v", u, err)
	}
	if n := len(u.KgoOpts()); n != 1 {
		t.Errorf("%d kgo options for TLS only, want 1", n)
	}
}

// SetUser adds a user next to the existing ones, and the result checks.
func TestSetUserKeepsOthers(t *testing.T) {
	data, err := SetUser(nil, "a", "pw-a-1", MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	if data, err = SetUser(data, "b", "pw-b-2", MinIterations); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("pw-a-1")) || bytes.Contains(data, []byte("pw-b-2")) {
		t.Fatal("a password is in the file")
	}
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenUserStore(path, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if !s.checkPlain("a", "pw-a-1") || !s.checkPlain("b", "pw-b-2") || s.checkPlain("a", "pw-b-2") {
		t.Error("entries do not check")
	}
	if _, err := SetUser([]byte("users: [broken"), "c", "pw", MinIterations); err == nil {
		t.Error("a broken file was rewritten")
	}
}

// OAUTHBEARER tokens are checked for signature, issuer, audience and
// expiry (with skew); the principal is the sub claim.
func TestOAuthValidator(t *testing.T) {
	iss := securetest.NewIssuer(t, "k1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, iss.JWKS(t), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := NewOAuthValidator(path, "https://idp", "kafka", 30*time.Second, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	p, exp, err := v.Validate(iss.Token(t, "svc-a", "https://idp", "kafka", time.Hour))
	if err != nil || p != "svc-a" || time.Until(exp) < 59*time.Minute {
		t.Fatalf("good token: %q %v %v", p, exp, err)
	}
	if _, _, err := v.Validate(iss.Token(t, "svc-a", "https://idp", "kafka", -10*time.Second)); err != nil {
		t.Errorf("a token 10s past expiry within 30s skew: %v", err)
	}
	other := securetest.NewIssuer(t, "k1")
	for name, tok := range map[string]string{
		"expired":      iss.Token(t, "svc-a", "https://idp", "kafka", -time.Hour),
		"wrong issuer": iss.Token(t, "svc-a", "https://evil", "kafka", time.Hour),
		"wrong aud":    iss.Token(t, "svc-a", "https://idp", "other", time.Hour),
		"wrong key":    other.Token(t, "svc-a", "https://idp", "kafka", time.Hour),
		"garbage":      "not.a.jwt",
	} {
		if _, _, err := v.Validate(tok); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	a := NewAuthenticator([]string{"OAUTHBEARER"}, nil).WithOAuth(v)
	conv, err := a.Start("OAUTHBEARER")
	if err != nil {
		t.Fatal(err)
	}
	msg := "n,,\x01auth=Bearer " + iss.Token(t, "svc-b", "https://idp", "kafka", time.Hour) + "\x01\x01"
	if _, done, err := conv.Step([]byte(msg)); err != nil || !done || conv.Username() != "svc-b" {
		t.Errorf("conversation: done %v user %q err %v", done, conv.Username(), err)
	}
}
