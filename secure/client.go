package secure

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/config"
)

// Upstream is how kproxy reaches one cluster: nil TLS means plaintext, nil
// SASL means no authentication. Built once from the config by
// UpstreamFor; the proxy's broker connections, its metadata client, the
// replicator's and the control plane's clients all use it.
type Upstream struct {
	TLS  *tls.Config
	SASL sasl.Mechanism
	// Passthrough, when set (identity: passthrough, by NewPassthrough;
	// UpstreamFor leaves it nil), is how the proxy's broker connections
	// for a client authenticate as that client; SASL stays kproxy's own
	// identity for everything else (metadata lookups, the replicator, the
	// control plane).
	Passthrough *Passthrough
}

// UpstreamFor reads the files and environment variables cc's tls and sasl
// sections name. A nil cc, or one without them, gives a plaintext,
// unauthenticated Upstream. Errors name the file or variable, never a
// secret.
func UpstreamFor(cc *config.ClusterConfig) (Upstream, error) {
	var u Upstream
	if cc == nil {
		return u, nil
	}
	if t := cc.TLS; t != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if t.CAFile != "" {
			pool, err := loadCAs(t.CAFile)
			if err != nil {
				return u, err
			}
			tc.RootCAs = pool
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return u, fmt.Errorf("client certificate %s: %w", t.CertFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		u.TLS = tc
	}
	if cc.SASL != nil {
		m, err := ClientMechanism(cc.SASL)
		if err != nil {
			return u, err
		}
		u.SASL = m
	}
	return u, nil
}

// ClientMechanism is the SASL mechanism of one credential section (a
// cluster's sasl, or a passthrough entry). The secret is read now, so a
// missing file or variable is an error at start, and again at every
// authentication, so a password or token file rewritten on disk (a
// rotation) is used by the next connection without a restart. Errors name
// the file or variable, never the secret.
func ClientMechanism(s *config.ClientSASL) (sasl.Mechanism, error) {
	if s.Mechanism == config.MechOAuthBearer && s.TokenEndpoint != nil {
		return tokenEndpointMechanism(s.TokenEndpoint)
	}
	if s.Mechanism == config.MechOAuthBearer {
		if _, err := config.ReadSecret(s.TokenFile, s.TokenEnv); err != nil {
			return nil, fmt.Errorf("sasl token: %w", err)
		}
		file, env := s.TokenFile, s.TokenEnv
		return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			tok, err := config.ReadSecret(file, env)
			return oauth.Auth{Token: tok}, err
		}), nil
	}
	user := s.Username
	if s.UsernameEnv != "" {
		var err error
		if user, err = config.ReadSecret("", s.UsernameEnv); err != nil {
			return nil, fmt.Errorf("sasl username: %w", err)
		}
	}
	if _, err := config.ReadSecret(s.PasswordFile, s.PasswordEnv); err != nil {
		return nil, fmt.Errorf("sasl password: %w", err)
	}
	file, env := s.PasswordFile, s.PasswordEnv
	password := func() (string, error) {
		p, err := config.ReadSecret(file, env)
		if err != nil {
			return "", fmt.Errorf("sasl password: %w", err)
		}
		return p, nil
	}
	switch s.Mechanism {
	case config.MechPlain:
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			p, err := password()
			return plain.Auth{User: user, Pass: p}, err
		}), nil
	case config.MechScramSHA256, config.MechScramSHA512:
		fn := func(context.Context) (scram.Auth, error) {
			p, err := password()
			return scram.Auth{User: user, Pass: p}, err
		}
		if s.Mechanism == config.MechScramSHA256 {
			return scram.Sha256(fn), nil
		}
		return scram.Sha512(fn), nil
	}
	return nil, fmt.Errorf("unknown SASL mechanism %q", s.Mechanism)
}

// KgoOpts are the kgo options that connect a client the way u says.
func (u Upstream) KgoOpts() []kgo.Opt {
	var opts []kgo.Opt
	if u.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(u.TLS.Clone()))
	}
	if u.SASL != nil {
		opts = append(opts, kgo.SASL(u.SASL))
	}
	return opts
}

// Client builds a kgo client for cluster name of cfg with opts added to
// the cluster's bootstrap and security settings: the one constructor the
// replicator and the control plane use.
func Client(cfg *config.Config, name config.Cluster, opts ...kgo.Opt) (*kgo.Client, error) {
	cc := cfg.Clusters.Get(name)
	if cc == nil {
		return nil, fmt.Errorf("no %s cluster in the config", name)
	}
	u, err := UpstreamFor(cc)
	if err != nil {
		return nil, fmt.Errorf("%s cluster: %w", name, err)
	}
	all := append([]kgo.Opt{kgo.SeedBrokers(cc.Bootstrap...)}, u.KgoOpts()...)
	return kgo.NewClient(append(all, opts...)...)
}

// Authenticate runs mech's client side over a function that sends one
// SaslAuthenticate message and returns the broker's answer: the shared
// loop of the proxy's own broker connections (the kgo clients do this
// themselves).
func Authenticate(ctx context.Context, mech sasl.Mechanism, host string, roundTrip func([]byte) ([]byte, error)) error {
	sess, msg, err := mech.Authenticate(ctx, host)
	if err != nil {
		return err
	}
	for {
		resp, err := roundTrip(msg)
		if err != nil {
			return err
		}
		done, next, err := sess.Challenge(resp)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		msg = next
	}
}

// SASLHandshake authenticates a freshly dialed broker connection with mech:
// SaslHandshake v1, then SaslAuthenticate v1 messages until the mechanism
// is done, and returns the session lifetime the broker reported (KIP-368; 0
// for none). roundTrip sends one request on the connection and decodes its
// answer into resp, so each caller keeps its own framing: the proxy's broker
// connections and the replicator's produce connections both use it. A
// refusal by the broker (an error code, as opposed to a broken connection)
// is marked AuthRefused.
func SASLHandshake(ctx context.Context, mech sasl.Mechanism, host string, roundTrip func(req kmsg.Request, resp kmsg.Response) error) (time.Duration, error) {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version = 1
	hs.Mechanism = mech.Name()
	hsResp := hs.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if err := roundTrip(hs, hsResp); err != nil {
		return 0, fmt.Errorf("SASL handshake: %w", err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return 0, AuthRefused(fmt.Errorf("SASL handshake for %s (broker offers %v): %w", hs.Mechanism, hsResp.SupportedMechanisms, err))
	}
	var lifetime time.Duration
	err := Authenticate(ctx, mech, host, func(msg []byte) ([]byte, error) {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version = 1
		req.SASLAuthBytes = msg
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		if err := roundTrip(req, resp); err != nil {
			return nil, err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			m := ""
			if resp.ErrorMessage != nil {
				m = ": " + *resp.ErrorMessage
			}
			return nil, AuthRefused(fmt.Errorf("%w%s", err, m))
		}
		lifetime = time.Duration(resp.SessionLifetimeMillis) * time.Millisecond
		return resp.SASLAuthBytes, nil
	})
	if err != nil {
		return 0, fmt.Errorf("SASL %s authentication: %w", hs.Mechanism, err)
	}
	return lifetime, nil
}
