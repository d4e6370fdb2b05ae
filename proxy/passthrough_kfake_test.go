package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

const (
	aliceUpstreamPW = "alice-upstream-pw-91c2"
	kproxyServicePW = "kproxy-service-pw-2b7d"
	mappedCarolPW   = "carol-mapped-pw-5e0a"
)

// passthroughRig: kfake with SASL and ACLs (kproxy a superuser, alice
// allowed on topic "allowed" only), kproxy's SASL listener in front.
type passthroughRig struct {
	srv  *Server
	logs *syncBuffer
}

func newPassthroughRig(t *testing.T, identity string) *passthroughRig {
	t.Helper()
	allow := func(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "allowed", "denied"),
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("SCRAM-SHA-512", "kproxy", kproxyServicePW),
		kfake.User("PLAIN", "alice", aliceUpstreamPW,
			allow(kmsg.ACLResourceTypeTopic, "allowed", kmsg.ACLOperationWrite),
			allow(kmsg.ACLResourceTypeTopic, "allowed", kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeTopic, "allowed", kmsg.ACLOperationDescribe),
			allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite)))
	dir := t.TempDir()
	// alice's password at kproxy is the one the broker knows: passthrough
	// replays what the client sent. bob and carol use SCRAM.
	store, err := secure.OpenUserStore(writeUsersFile(t, dir, map[string]string{"alice": aliceUpstreamPW, "bob": "bob-pw", "carol": "carol-pw"}), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	up := secure.Upstream{SASL: scram.Auth{User: "kproxy", Pass: kproxyServicePW}.AsSha512Mechanism()}
	if identity == config.IdentityPassthrough {
		pwFile := filepath.Join(dir, "carol-upstream.pw")
		if err := os.WriteFile(pwFile, []byte(aliceUpstreamPW+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// carol (SCRAM at kproxy) is mapped to the broker user alice.
		if up.Passthrough, err = secure.NewPassthrough(Source, map[string]config.ClientSASL{
			"carol": {Mechanism: "PLAIN", Username: "alice", PasswordFile: pwFile},
		}); err != nil {
			t.Fatal(err)
		}
	}
	r := &passthroughRig{logs: &syncBuffer{}}
	r.srv = startProxy(t, Options{
		Listeners: []Listener{{Name: "sasl", Listen: "127.0.0.1:0",
			SASL: secure.NewAuthenticator([]string{"PLAIN", "SCRAM-SHA-512"}, store)}},
		Upstream: map[string]secure.Upstream{Source: up},
		Router:   StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()},
		Logger: hclog.New(&hclog.LoggerOptions{Output: r.logs, Level: hclog.Trace}),
	})
	return r
}

func (r *passthroughRig) client(t *testing.T, mech sasl.Mechanism) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.srv.Addr().String()), kgo.SASL(mech),
		kgo.RequestRetries(0), kgo.RetryTimeout(3*time.Second), kgo.ProducerBatchMaxBytes(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// With identity: passthrough the broker sees the client (alice): she
// produces to the topic her ACLs allow and gets the broker's
// TOPIC_AUTHORIZATION_FAILED for the other one; Metadata shows her only
// what she may describe. With identity: service (kproxy a superuser
// upstream) both produces succeed: the ACL is the broker's, not kproxy's.
func TestPassthroughBrokerACLsSeeTheClient(t *testing.T) {
	for _, identity := range []string{config.IdentityPassthrough, config.IdentityService} {
		t.Run(identity, func(t *testing.T) {
			r := newPassthroughRig(t, identity)
			alice := r.client(t, plain.Auth{User: "alice", Pass: aliceUpstreamPW}.AsMechanism())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := alice.ProduceSync(ctx, &kgo.Record{Topic: "allowed", Value: []byte("a")}).FirstErr(); err != nil {
				t.Fatalf("produce to the allowed topic: %v", err)
			}
			err := alice.ProduceSync(ctx, &kgo.Record{Topic: "denied", Value: []byte("b")}).FirstErr()
			if identity == config.IdentityService {
				if err != nil {
					t.Fatalf("service identity: produce to denied: %v", err)
				}
				return
			}
			if !errors.Is(err, kerr.TopicAuthorizationFailed) {
				t.Fatalf("produce to the denied topic: %v, want TOPIC_AUTHORIZATION_FAILED from the broker", err)
			}
			req := kmsg.NewPtrMetadataRequest()
			resp, err := req.RequestWith(ctx, alice)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tp := range resp.Topics {
				names = append(names, *tp.Topic)
			}
			if strings.Join(names, ",") != "allowed" {
				t.Errorf("alice's Metadata lists %v, want only allowed (the broker filters by her identity)", names)
			}
			// kproxy's own coordinator lookup uses its service identity;
			// the broker's refusal of alice reaches her all the same.
			fc := kmsg.NewPtrFindCoordinatorRequest()
			fc.CoordinatorKey, fc.CoordinatorKeys = "alices-group", []string{"alices-group"}
			fr, err := fc.RequestWith(ctx, alice)
			if err != nil {
				t.Fatal(err)
			}
			code := fr.ErrorCode
			if len(fr.Coordinators) > 0 {
				code = fr.Coordinators[0].ErrorCode
			}
			if code != kerr.GroupAuthorizationFailed.Code {
				t.Errorf("FindCoordinator for a group alice may not describe: code %d, want GROUP_AUTHORIZATION_FAILED", code)
			}
			if strings.Contains(r.logs.String(), aliceUpstreamPW) {
				t.Error("alice's password is in kproxy's log")
			}
		})
	}
}

// SCRAM cannot be replayed: bob (SCRAM, no mapped credential) is refused
// at authentication with a message naming the reason; carol (SCRAM, mapped to the broker user alice) works
// with alice's rights.
func TestPassthroughSCRAMNeedsAMappedCredential(t *testing.T) {
	r := newPassthroughRig(t, config.IdentityPassthrough)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bob := r.client(t, scram.Auth{User: "bob", Pass: "bob-pw"}.AsSha512Mechanism())
	_, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, bob)
	if err == nil || !strings.Contains(err.Error(), "SCRAM exchange never reveals the password") {
		t.Fatalf("bob: %v, want a SASL failure explaining that SCRAM cannot be passed through", err)
	}
	if !strings.Contains(r.logs.String(), "identity cannot be passed through") {
		t.Error("no log line for bob's refusal")
	}
	carol := r.client(t, scram.Auth{User: "carol", Pass: "carol-pw"}.AsSha512Mechanism())
	if err := carol.ProduceSync(ctx, &kgo.Record{Topic: "allowed", Value: []byte("c")}).FirstErr(); err != nil {
		t.Fatalf("carol (mapped to alice): %v", err)
	}
	if err := carol.ProduceSync(ctx, &kgo.Record{Topic: "denied", Value: []byte("c")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("carol to denied: %v, want alice's TOPIC_AUTHORIZATION_FAILED", err)
	}
}

// saslFront records the OAUTHBEARER tokens kproxy presents to a kfake
// broker (kfake has no OAUTHBEARER): connections that open with a
// SaslHandshake get the SASL exchange answered here, every other byte goes
// to kfake unchanged.
type saslFront struct {
	mu     sync.Mutex
	tokens []string
}

func (f *saslFront) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tokens)
}

func (f *saslFront) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	return &frontListener{Listener: ln, f: f}, err
}

type frontListener struct {
	net.Listener
	f *saslFront
}

func (l *frontListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frontConn{Conn: c, f: l.f}, nil
}

type frontConn struct {
	net.Conn
	f    *saslFront
	once sync.Once
	r    io.Reader
}

func (c *frontConn) Read(p []byte) (int, error) {
	c.once.Do(c.intercept)
	return c.r.Read(p)
}

func (c *frontConn) intercept() {
	c.r = c.Conn
	readFrame := func() []byte {
		var size [4]byte
		if _, err := io.ReadFull(c.Conn, size[:]); err != nil {
			return nil
		}
		body := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(c.Conn, body); err != nil {
			return nil
		}
		return body
	}
	answer := func(corr []byte, resp kmsg.Response) {
		b := append(append([]byte{0, 0, 0, 0}, corr...), resp.AppendTo(nil)...)
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		_, _ = c.Conn.Write(b)
	}
	first := readFrame()
	if len(first) < 8 {
		return
	}
	if int16(binary.BigEndian.Uint16(first)) != kmsg.SASLHandshake.Int16() {
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(first)))
		c.r = io.MultiReader(bytes.NewReader(append(frame, first...)), c.Conn)
		return
	}
	hs := kmsg.NewPtrSASLHandshakeResponse()
	hs.Version = 1
	answer(first[4:8], hs)
	auth := readFrame()
	if len(auth) < 10 {
		return
	}
	idLen := int(int16(binary.BigEndian.Uint16(auth[8:])))
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version = 1
	if err := req.ReadFrom(auth[10+max(idLen, 0):]); err != nil {
		return
	}
	for _, kv := range bytes.Split(req.SASLAuthBytes, []byte{1}) {
		if tok, ok := bytes.CutPrefix(kv, []byte("auth=Bearer ")); ok {
			c.f.mu.Lock()
			c.f.tokens = append(c.f.tokens, string(tok))
			c.f.mu.Unlock()
		}
	}
	ar := kmsg.NewPtrSASLAuthenticateResponse()
	ar.Version = 1
	answer(auth[4:8], ar)
}

// An OAUTHBEARER client's own token is presented upstream; when the client
// re-authenticates (KIP-368) with a new token, the next request goes on a
// new upstream connection that presents the new token.
func TestPassthroughOAuthTokenFollowsReauthentication(t *testing.T) {
	front := &saslFront{}
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"), kfake.ListenFn(front.listen))
	dir := t.TempDir()
	iss := securetest.NewIssuer(t, "kid-1")
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, iss.JWKS(t), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := secure.NewOAuthValidator(jwks, "https://idp.test", "kproxy", 5*time.Second, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	pass, err := secure.NewPassthrough(Source, nil)
	if err != nil {
		t.Fatal(err)
	}
	const lifetime = 1500 * time.Millisecond
	srv := startProxy(t, Options{
		Listeners: []Listener{{Name: "oauth", Listen: "127.0.0.1:0", MaxReauth: lifetime,
			SASL: secure.NewAuthenticator([]string{"OAUTHBEARER"}, nil).WithOAuth(v)}},
		Upstream: map[string]secure.Upstream{Source: {Passthrough: pass}},
		Router:   StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()},
	})
	tokens := []string{
		iss.Token(t, "svc-orders", "https://idp.test", "kproxy", 10*time.Minute),
		iss.Token(t, "svc-orders", "https://idp.test", "kproxy", 20*time.Minute),
	}
	var current atomic.Pointer[string]
	current.Store(&tokens[0])
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.RequestRetries(2),
		kgo.SASL(oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			return oauth.Auth{Token: *current.Load()}, nil
		})))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if got := front.seen(); len(got) == 0 || got[len(got)-1] != tokens[0] {
		t.Fatalf("upstream saw %d tokens, the last not the client's", len(got))
	}
	// The client's next token: kgo re-authenticates each connection once
	// the session lifetime kproxy reported has passed (on the same
	// connection: kgo opens no new one), and kproxy's upstream connection
	// for it must then present the new token. Without the replacement it
	// keeps presenting the first one and this waits until the deadline.
	current.Store(&tokens[1])
	waitFor(t, ctx, func() bool {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("2")}).FirstErr(); err != nil {
			t.Fatalf("produce across the re-authentication: %v", err)
		}
		got := front.seen()
		return got[len(got)-1] == tokens[1]
	})
}

// A client without SASL (here ANONYMOUS on a plaintext listener; an mTLS
// principal works the same) reaches a passthrough cluster only through a
// credential mapped to its principal, and then with that credential's
// rights; unmapped, its connection is closed before any request.
func TestPassthroughClientsWithoutSASLUseTheMap(t *testing.T) {
	allow := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "allowed", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}
	idem := kfake.ACL{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationIdempotentWrite, Allow: true}
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "allowed", "denied"),
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("SCRAM-SHA-512", "kproxy", kproxyServicePW),
		kfake.User("PLAIN", "alice", aliceUpstreamPW, allow, idem))
	pwFile := filepath.Join(t.TempDir(), "anon.pw")
	if err := os.WriteFile(pwFile, []byte(aliceUpstreamPW), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(m map[string]config.ClientSASL) (*Server, *syncBuffer) {
		pass, err := secure.NewPassthrough(Source, m)
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		srv := startProxy(t, Options{
			Upstream: map[string]secure.Upstream{Source: {SASL: scram.Auth{User: "kproxy", Pass: kproxyServicePW}.AsSha512Mechanism(), Passthrough: pass}},
			Router:   StaticRouter(Source), Clusters: map[string][]string{Source: src.ListenAddrs()},
			Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
		})
		return srv, logs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	srv, _ := start(map[string]config.ClientSASL{"ANONYMOUS": {Mechanism: "PLAIN", Username: "alice", PasswordFile: pwFile}})
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.RequestRetries(0), kgo.RetryTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "allowed", Value: []byte("a")}).FirstErr(); err != nil {
		t.Fatalf("mapped ANONYMOUS to allowed: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "denied", Value: []byte("b")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("mapped ANONYMOUS to denied: %v, want the broker's TOPIC_AUTHORIZATION_FAILED", err)
	}

	srv2, logs := start(nil)
	nc, err := net.DialTimeout("tcp", srv2.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("unmapped client without SASL: read %v, want the connection closed", err)
	}
	if !strings.Contains(logs.String(), "identity cannot be passed through") {
		t.Error("no log line for the refused connection")
	}
}
