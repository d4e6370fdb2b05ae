package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

// kproxy reaches a cluster that requires TLS and SASL: its metadata client
// and its per-client broker connections both use the cluster's settings,
// so a plaintext client produces and consumes through it.
func TestUpstreamTLSAndSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			dir := t.TempDir()
			ca := securetest.NewCA(t, "broker-ca")
			certPEM, keyPEM := ca.Issue(t, pkix.Name{CommonName: "broker"})
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			src := newKfake(t, kfake.SeedTopics(1, "orders"), kfake.EnableSASL(), kfake.Superuser(mech, "kproxy-svc", "svc-pw-91b2"),
				kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}))
			caFile := filepath.Join(dir, "ca.crt")
			pwFile := filepath.Join(dir, "pw")
			if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(pwFile, []byte("svc-pw-91b2\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			up, err := secure.UpstreamFor(&config.ClusterConfig{
				TLS:  &config.ClientTLS{CAFile: caFile},
				SASL: &config.ClientSASL{Mechanism: mech, Username: "kproxy-svc", PasswordFile: pwFile},
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := startProxy(t, Options{Router: StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()},
				Upstream: map[string]secure.Upstream{Source: up}, Logger: hclog.NewNullLogger()})
			cl, ctx := proxyClient(t, srv, 20*time.Second, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			value := []byte("through a secured upstream")
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: value}).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			for found := false; !found; {
				fs := cl.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("not consumed: %v", err)
				}
				fs.EachRecord(func(r *kgo.Record) { found = found || bytes.Equal(r.Value, value) })
			}
		})
	}
}

// Without the cluster's credentials the proxy's broker connections fail
// (the dial's SASL step is not skipped).
func TestUpstreamSASLWrongPasswordFailsTheDial(t *testing.T) {
	src := newKfake(t, kfake.SeedTopics(1, "orders"), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "kproxy-svc", "right-pw"))
	d := newDialer(Limits{}.withDefaults(), 1<<20, nil)
	t.Setenv("KP_TEST_WRONG_PW", "wrong-pw")
	up, err := secure.UpstreamFor(&config.ClusterConfig{SASL: &config.ClientSASL{Mechanism: "SCRAM-SHA-512", Username: "kproxy-svc", PasswordEnv: "KP_TEST_WRONG_PW"}})
	if err != nil {
		t.Fatal(err)
	}
	d.sec = map[string]secure.Upstream{Source: up}
	if u, err := d.dial(Source, 0, src.ListenAddrs()[0], nil, nil); err == nil {
		u.close()
		t.Fatal("dial with a wrong password succeeded")
	}
	t.Setenv("KP_TEST_WRONG_PW", "right-pw")
	if up, err = secure.UpstreamFor(&config.ClusterConfig{SASL: &config.ClientSASL{Mechanism: "SCRAM-SHA-512", Username: "kproxy-svc", PasswordEnv: "KP_TEST_WRONG_PW"}}); err != nil {
		t.Fatal(err)
	}
	d.sec[Source] = up
	d.state = map[string]*dialState{} // forget the backoff
	u, err := d.dial(Source, 0, src.ListenAddrs()[0], nil, nil)
	if err != nil {
		t.Fatalf("dial with the right password: %v", err)
	}
	u.close()
}

// An mTLS listener refuses a client without a certificate from its CA and
// takes the principal from an accepted one.
func TestMTLSListener(t *testing.T) {
	src := newKfake(t, kfake.SeedTopics(1, "orders"))
	dir := t.TempDir()
	ca := securetest.NewCA(t, "client-ca")
	certFile, keyFile, caFile := ca.WriteFiles(t, dir, "kproxy", pkix.Name{CommonName: "localhost"})
	tc, err := secure.ServerTLS(&config.ServerTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	pm, err := secure.NewPrincipalMapper([]config.PrincipalRule{{Pattern: "^CN=([^,]+)", Principal: "$1"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := startProxy(t, Options{Listeners: []Listener{{Name: "mtls", Listen: "127.0.0.1:0", TLS: tc, Principals: pm}},
		Router: StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()}})

	ping := func(cfg *tls.Config) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.DialTLSConfig(cfg), kgo.RequestRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	if err := ping(ca.ClientTLS(t, nil, nil)); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	other := securetest.NewCA(t, "other-ca")
	oc, ok := other.Issue(t, pkix.Name{CommonName: "intruder"})
	bad := ca.ClientTLS(t, oc, ok)
	if err := ping(bad); err == nil {
		t.Error("a client with a certificate from another CA was accepted")
	}
	c, k := ca.Issue(t, pkix.Name{CommonName: "app7", Organization: []string{"Example"}})
	if err := ping(ca.ClientTLS(t, c, k)); err != nil {
		t.Fatalf("a client with a good certificate: %v", err)
	}
	srv.mu.Lock()
	var principals []string
	for cc := range srv.conns {
		principals = append(principals, cc.Principal())
	}
	srv.mu.Unlock()
	for _, p := range principals {
		if p != "app7" {
			t.Errorf("principal %q, want app7 (from CN by the mapping rule)", p)
		}
	}
}
