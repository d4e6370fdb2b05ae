package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

const (
	saslUser     = "app1"
	saslPassword = "correct-horse-battery-staple-7f3a"
)

// secureRig is a proxy over one kfake cluster with a TLS+SASL listener,
// counting the proxy's data-path dials upstream, and logging into logs.
type secureRig struct {
	srv   *Server
	ca    *securetest.CA
	dials atomic.Int64
	logs  *syncBuffer
}

func newSecureRig(t *testing.T, maxReauth time.Duration) *secureRig {
	t.Helper()
	// One broker: kfake answers admin requests on its controller only,
	// and kproxy sends them to any broker (real KRaft brokers forward).
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders", "payroll"))
	dir := t.TempDir()
	r := &secureRig{ca: securetest.NewCA(t, "test-ca"), logs: &syncBuffer{}}
	tc, _, _ := listenerTLS(t, r.ca, dir, "localhost")
	store, err := secure.OpenUserStore(writeUsersFile(t, dir, map[string]string{saslUser: saslPassword, "other": "other-pw"}), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Output: r.logs, Level: hclog.Debug})
	srv, err := New(Options{
		Listeners: []Listener{{Name: "sasl_ssl", Listen: "127.0.0.1:0", TLS: tc, MaxReauth: maxReauth,
			SASL: secure.NewAuthenticator([]string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}, store)}},
		Router: StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	dial := srv.dialer.netDial
	srv.dialer.netDial = func(addr string, timeout time.Duration) (net.Conn, error) {
		r.dials.Add(1)
		return dial(addr, timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r.srv = srv
	return r
}

func (r *secureRig) client(t *testing.T, mech sasl.Mechanism, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(r.srv.Addr().String()),
		kgo.DialTLSConfig(r.ca.ClientTLS(t, nil, nil)), kgo.SASL(mech), kgo.RequestRetries(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Each mechanism authenticates over TLS against the users file, and the
// client produces and consumes through kproxy.
func TestSASLOverTLSProducesAndConsumes(t *testing.T) {
	r := newSecureRig(t, 0)
	for _, mech := range []sasl.Mechanism{
		plain.Auth{User: saslUser, Pass: saslPassword}.AsMechanism(),
		scram.Auth{User: saslUser, Pass: saslPassword}.AsSha256Mechanism(),
		scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism(),
	} {
		t.Run(mech.Name(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cl := r.client(t, mech, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			value := []byte("paid by " + mech.Name())
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: value}).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			for found := false; !found; {
				fs := cl.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("record %q not consumed: %v", value, err)
				}
				fs.EachRecord(func(rec *kgo.Record) { found = found || bytes.Equal(rec.Value, value) })
			}
		})
	}
	if !strings.Contains(r.logs.String(), "SASL authenticated") || !strings.Contains(r.logs.String(), "principal="+saslUser) {
		t.Errorf("no authentication logged with the principal:\n%s", r.logs.String())
	}
	if strings.Contains(r.logs.String(), saslPassword) {
		t.Errorf("the password appears in the logs")
	}
}

// A wrong password gets SASL_AUTHENTICATION_FAILED with the broker's
// message, is logged once with the user and never the password, and
// opens no upstream connection.
func TestSASLWrongPasswordIsRefused(t *testing.T) {
	r := newSecureRig(t, 0)
	const wrong = "wrong-password-5d1c9e"
	for _, mech := range []sasl.Mechanism{
		plain.Auth{User: saslUser, Pass: wrong}.AsMechanism(),
		scram.Auth{User: saslUser, Pass: wrong}.AsSha512Mechanism(),
		scram.Auth{User: "nobody", Pass: wrong}.AsSha256Mechanism(),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl := r.client(t, mech)
		err := cl.Ping(ctx)
		cancel()
		if !errors.Is(err, kerr.SaslAuthenticationFailed) || !strings.Contains(err.Error(), "invalid credentials with SASL mechanism "+mech.Name()) {
			t.Errorf("%s: got %v, want SASL_AUTHENTICATION_FAILED with the broker's message", mech.Name(), err)
		}
		cl.Close()
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "SASL authentication failed"); n != 3 {
		t.Errorf("%d failures logged, want 3 (one per attempt):\n%s", n, logs)
	}
	if !strings.Contains(logs, "principal="+saslUser) || !strings.Contains(logs, "principal=nobody") {
		t.Errorf("failures not logged with the principal:\n%s", logs)
	}
	if strings.Contains(logs, wrong) {
		t.Errorf("the password appears in the logs:\n%s", logs)
	}
	if n := r.dials.Load(); n != 0 {
		t.Errorf("%d upstream dials for clients that never authenticated", n)
	}
}

// Before authentication a SASL listener answers ApiVersions and closes the
// connection on anything else, without dialing upstream; a plaintext
// client on the TLS port is closed at the handshake.
func TestSASLListenerRefusesRequestsBeforeAuthentication(t *testing.T) {
	r := newSecureRig(t, 0)
	addr := r.srv.Addr().String()

	nc := dialTLS(t, addr, r.ca.ClientTLS(t, nil, nil))
	defer nc.Close()
	av := kmsg.NewPtrApiVersionsRequest()
	av.Version = 3
	av.ClientSoftwareName, av.ClientSoftwareVersion = "test", "1"
	if _, err := sendRequest(t, nc, 1, av); err != nil {
		t.Fatalf("ApiVersions before authentication not answered: %v", err)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	if f, err := sendRequest(t, nc, 2, md); err == nil {
		t.Fatalf("Metadata before authentication answered (%d bytes); want the connection closed", len(f))
	}

	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if f, err := sendRequest(t, raw, 1, av); err == nil {
		t.Fatalf("a plaintext client on the TLS port got a %d-byte frame", len(f))
	}
	if n := r.dials.Load(); n != 0 {
		t.Errorf("%d upstream dials for unauthenticated connections", n)
	}
}

// An unsupported mechanism gets UNSUPPORTED_SASL_MECHANISM with the list
// of offered ones.
func TestSASLUnsupportedMechanism(t *testing.T) {
	r := newSecureRig(t, 0)
	nc := dialTLS(t, r.srv.Addr().String(), r.ca.ClientTLS(t, nil, nil))
	defer nc.Close()
	resp := saslHandshake(t, nc, 1, 1, "GSSAPI")
	if resp.ErrorCode != kerr.UnsupportedSaslMechanism.Code || len(resp.SupportedMechanisms) != 3 {
		t.Errorf("got code %d mechanisms %v, want UNSUPPORTED_SASL_MECHANISM and the three offered", resp.ErrorCode, resp.SupportedMechanisms)
	}
}

// SaslAuthenticate v1+ reports the session lifetime (KIP-368).
func TestSASLReportsSessionLifetime(t *testing.T) {
	r := newSecureRig(t, 90*time.Second)
	nc := dialTLS(t, r.srv.Addr().String(), r.ca.ClientTLS(t, nil, nil))
	defer nc.Close()
	saslHandshake(t, nc, 1, 1, "PLAIN")
	resp := saslAuthenticateV1(t, nc, 2, []byte("\x00"+saslUser+"\x00"+saslPassword))
	if resp.ErrorCode != 0 || resp.SessionLifetimeMillis != 90000 {
		t.Errorf("got code %d lifetime %d ms, want 0 and 90000", resp.ErrorCode, resp.SessionLifetimeMillis)
	}
}

func writeUsersFile(t *testing.T, dir string, users map[string]string) string {
	t.Helper()
	b, err := secure.MarshalUsers(users, secure.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// After a v0 SaslHandshake the exchange is bare tokens (pre-KIP-152
// clients): a right password authenticates the connection, a wrong one
// closes it.
func TestSASLHandshakeV0BareTokens(t *testing.T) {
	r := newSecureRig(t, 0)
	run := func(pass string) (metadataAnswered bool) {
		nc := dialTLS(t, r.srv.Addr().String(), r.ca.ClientTLS(t, nil, nil))
		defer nc.Close()
		saslHandshake(t, nc, 1, 0, "PLAIN")
		token := []byte("\x00" + saslUser + "\x00" + pass)
		frame := append([]byte{0, 0, 0, byte(len(token))}, token...)
		if _, err := nc.Write(frame); err != nil {
			t.Fatal(err)
		}
		var size [4]byte
		if _, err := io.ReadFull(nc, size[:]); err != nil || size != [4]byte{} {
			return false // closed: no answer to a failed v0 exchange
		}
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 9
		_, err := sendRequest(t, nc, 2, md)
		return err == nil
	}
	if !run(saslPassword) {
		t.Error("v0 exchange with the right password: Metadata not answered")
	}
	if run("nope") {
		t.Error("v0 exchange with a wrong password authenticated")
	}
}

// saslExchange runs a PLAIN handshake and authentication on nc and returns
// the SaslAuthenticate answer (nil when the connection closed).
func saslExchange(t *testing.T, nc net.Conn, corr int32, user, pass string) *kmsg.SASLAuthenticateResponse {
	t.Helper()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version = 1
	hs.Mechanism = "PLAIN"
	if _, err := nc.Write(appendRequest(nil, corr, kmsg.StringPtr("t"), hs)); err != nil {
		return nil
	}
	if _, err := readFrame(nc, 1<<20); err != nil {
		return nil
	}
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.Version = 2
	au.SASLAuthBytes = []byte("\x00" + user + "\x00" + pass)
	if _, err := nc.Write(appendRequest(nil, corr+1, kmsg.StringPtr("t"), au)); err != nil {
		return nil
	}
	f, err := readFrame(nc, 1<<20)
	if err != nil {
		return nil
	}
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.Version = 2
	if err := resp.ReadFrom(f[5:]); err != nil { // correlation id and the flexible header's tags
		t.Fatal(err)
	}
	return resp
}

// KIP-368: a re-authentication as the same principal renews the session;
// as another principal it is refused and the connection closed.
func TestSASLReauthentication(t *testing.T) {
	r := newSecureRig(t, time.Hour)
	dial := func() net.Conn {
		nc := dialTLS(t, r.srv.Addr().String(), r.ca.ClientTLS(t, nil, nil))
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	nc := dial()
	if resp := saslExchange(t, nc, 1, saslUser, saslPassword); resp == nil || resp.ErrorCode != 0 {
		t.Fatalf("first authentication: %+v", resp)
	}
	if resp := saslExchange(t, nc, 3, saslUser, saslPassword); resp == nil || resp.ErrorCode != 0 || resp.SessionLifetimeMillis != time.Hour.Milliseconds() {
		t.Fatalf("re-authentication as the same user: %+v", resp)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	if _, err := sendRequest(t, nc, 5, md); err != nil {
		t.Fatalf("Metadata after re-authentication: %v", err)
	}

	nc2 := dial()
	if resp := saslExchange(t, nc2, 1, saslUser, saslPassword); resp == nil || resp.ErrorCode != 0 {
		t.Fatalf("authentication: %+v", resp)
	}
	// "other" has good credentials, but a session keeps its principal.
	if resp := saslExchange(t, nc2, 3, "other", "other-pw"); resp == nil || resp.ErrorCode != kerr.SaslAuthenticationFailed.Code ||
		resp.ErrorMessage == nil || !strings.Contains(*resp.ErrorMessage, "Cannot change principals") {
		t.Fatalf("re-authentication as another user: %+v", resp)
	}
	if _, err := readFrame(nc2, 1<<20); err == nil {
		t.Error("connection still open after a refused re-authentication")
	}
}

// A session that ends without re-authentication is closed at its next
// request (the client did not re-authenticate in time).
func TestSASLExpiredSessionIsClosed(t *testing.T) {
	r := newSecureRig(t, time.Nanosecond) // expired by the next request
	nc := dialTLS(t, r.srv.Addr().String(), r.ca.ClientTLS(t, nil, nil))
	defer nc.Close()
	if resp := saslExchange(t, nc, 1, saslUser, saslPassword); resp == nil || resp.ErrorCode != 0 {
		t.Fatalf("authentication: %+v", resp)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	if _, err := sendRequest(t, nc, 3, md); err == nil {
		t.Error("Metadata answered on an expired session")
	}
	if !strings.Contains(r.logs.String(), "expired without re-authentication") {
		t.Errorf("expiry not logged:\n%s", r.logs.String())
	}
}

// A certificate rotated on disk is served to new connections while an
// established connection keeps working on its own.
func TestCertificateRotationKeepsConnections(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	dir := t.TempDir()
	ca := securetest.NewCA(t, "ca")
	tc, certFile, keyFile := listenerTLS(t, ca, dir, "first")
	srv := startProxy(t, Options{Listeners: []Listener{{Name: "ssl", Listen: "127.0.0.1:0", TLS: tc}},
		Router: StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()}})
	dial := func() (*tls.Conn, string) {
		nc, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		return nc, nc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	metadata := func(nc net.Conn, corr int32) error {
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 9
		if _, err := nc.Write(appendRequest(nil, corr, kmsg.StringPtr("t"), md)); err != nil {
			return err
		}
		_, err := readFrame(nc, 1<<20)
		return err
	}
	old, cn := dial()
	defer old.Close()
	if cn != "first" {
		t.Fatalf("serving %q", cn)
	}
	if err := metadata(old, 1); err != nil {
		t.Fatal(err)
	}
	c, k := ca.Issue(t, pkix.Name{CommonName: "second"})
	// The key first, then the certificate, each replaced in one rename.
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, k}, {certFile, c}} {
		if err := os.WriteFile(f.path+".tmp", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			t.Fatal(err)
		}
	}
	rotated := false
	for deadline := time.Now().Add(15 * time.Second); !rotated && time.Now().Before(deadline); {
		nc, cn := dial()
		nc.Close()
		rotated = cn == "second"
		if !rotated {
			time.Sleep(100 * time.Millisecond) // the files are checked once a second
		}
	}
	if !rotated {
		t.Fatal("new connections never got the rotated certificate")
	}
	if err := metadata(old, 2); err != nil {
		t.Fatalf("the connection from before the rotation broke: %v", err)
	}
}
