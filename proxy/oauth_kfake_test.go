package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

// A client authenticates with an OAUTHBEARER JWT; the session lifetime is
// the token's; a token from another issuer or an expired one is refused
// and never logged.
func TestOAuthBearerClients(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	dir := t.TempDir()
	ca := securetest.NewCA(t, "ca")
	tc, _, _ := listenerTLS(t, ca, dir, "localhost")
	iss := securetest.NewIssuer(t, "kid-1")
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, iss.JWKS(t), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := secure.NewOAuthValidator(jwks, "https://idp.test", "kproxy", 5*time.Second, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv := startProxy(t, Options{
		Listeners: []Listener{{Name: "oauth", Listen: "127.0.0.1:0", TLS: tc, MaxReauth: time.Hour,
			SASL: secure.NewAuthenticator([]string{"OAUTHBEARER"}, nil).WithOAuth(v)}},
		Router: StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()},
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
	})
	client := func(token string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.DialTLSConfig(ca.ClientTLS(t, nil, nil)),
			kgo.SASL(oauth.Auth{Token: token}.AsMechanism()), kgo.RequestRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	good := iss.Token(t, "svc-orders", "https://idp.test", "kproxy", 10*time.Minute)
	if err := client(good).ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce with a good token: %v", err)
	}
	if !strings.Contains(logs.String(), "principal=svc-orders") {
		t.Errorf("principal not from the sub claim:\n%s", logs.String())
	}

	// The session lifetime is the token's remaining life, under max_reauth.
	nc := dialTLS(t, srv.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
	defer nc.Close()
	saslHandshake(t, nc, 1, 1, "OAUTHBEARER")
	resp := saslAuthenticateV1(t, nc, 2, []byte("n,,\x01auth=Bearer "+good+"\x01\x01"))
	if l := time.Duration(resp.SessionLifetimeMillis) * time.Millisecond; resp.ErrorCode != 0 || l <= 0 || l > 10*time.Minute {
		t.Errorf("code %d lifetime %s: want the token's remaining life (at most 10m)", resp.ErrorCode, l)
	}

	other := securetest.NewIssuer(t, "kid-1")
	for name, tok := range map[string]string{
		"expired":      iss.Token(t, "svc-orders", "https://idp.test", "kproxy", -time.Hour),
		"other issuer": other.Token(t, "svc-orders", "https://idp.test", "kproxy", time.Hour),
		"wrong aud":    iss.Token(t, "svc-orders", "https://idp.test", "elsewhere", time.Hour),
	} {
		if err := client(tok).Ping(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Errorf("%s: %v, want SASL_AUTHENTICATION_FAILED", name, err)
		}
		if strings.Contains(logs.String(), tok) {
			t.Errorf("%s: the token is in the log", name)
		}
	}
	if strings.Contains(logs.String(), good) {
		t.Error("the good token is in the log")
	}
}

// kproxy authenticates upstream with an OAUTHBEARER token from a file.
func TestUpstreamOAuthBearerToken(t *testing.T) {
	// kfake has no OAUTHBEARER: check the mechanism kproxy builds, which
	// reads the file at each authentication.
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := secure.UpstreamFor(&config.ClusterConfig{SASL: &config.ClientSASL{Mechanism: "OAUTHBEARER", TokenFile: path}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tok-1", "tok-2"} {
		if err := os.WriteFile(path, []byte(want+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, first, err := u.SASL.Authenticate(context.Background(), "broker")
		if err != nil || !strings.Contains(string(first), "auth=Bearer "+want+"\x01") {
			t.Errorf("first message %q, %v; want the token %s", first, err, want)
		}
	}
}
