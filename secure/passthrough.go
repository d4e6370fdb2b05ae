package secure

// Identity passthrough: the upstream connections kproxy opens for a
// client of a passthrough cluster authenticate as that client. What kproxy
// can carry upstream depends on how the client authenticated:
//
//   - PLAIN: the client sent its password, so kproxy replays the same user
//     name and password (held in memory for the connection's life only).
//   - OAUTHBEARER: the client sent a token, so kproxy presents the same
//     token; a re-authentication (KIP-368) brings a new one.
//   - SCRAM: the client proved it knows its password without sending it,
//     so there is nothing to replay; only a credential mapped to the
//     principal in the config can be used.
//   - no SASL (mTLS, or ANONYMOUS on a plaintext listener): likewise only
//     a mapped credential.
//
// A mapped credential wins over replay: the operator said so explicitly.

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/kproxy/kproxy/config"
)

// ClientCredential is what a client authenticated with, kept so its
// passthrough connections can present it upstream. It lives in the
// client connection's memory only; String and GoString never show the
// secret, so a stray %v in a log line cannot leak it.
type ClientCredential struct {
	mech  string
	user  string
	pass  string
	token string
}

// Mechanism is the SASL mechanism the client used.
func (c *ClientCredential) Mechanism() string { return c.mech }

func (c ClientCredential) String() string {
	return fmt.Sprintf("%s credential of %q (secret not shown)", c.mech, c.user)
}

// Same reports whether c and o are the same credential (both nil, or the
// same mechanism, user and secret).
func (c *ClientCredential) Same(o *ClientCredential) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.mech == o.mech && c.user == o.user &&
		subtle.ConstantTimeCompare([]byte(c.pass), []byte(o.pass)) == 1 &&
		subtle.ConstantTimeCompare([]byte(c.token), []byte(o.token)) == 1
}

// GoString keeps %#v from printing the fields.
func (c ClientCredential) GoString() string { return c.String() }

// Credentialed is a finished conversation whose client credential can be
// replayed upstream (PLAIN and OAUTHBEARER).
type Credentialed interface {
	Credential() *ClientCredential
}

func (p *plainConv) Credential() *ClientCredential {
	if p.pass == "" {
		return nil
	}
	return &ClientCredential{mech: config.MechPlain, user: p.user, pass: p.pass}
}

func (o *oauthConv) Credential() *ClientCredential {
	if o.token == "" {
		return nil
	}
	return &ClientCredential{mech: config.MechOAuthBearer, user: o.user, token: o.token}
}

// ErrNoPassthrough is the error when a principal's identity cannot be
// carried to a passthrough cluster; its text is safe to show the client.
type ErrNoPassthrough struct {
	Cluster, Principal, Mechanism string
}

func (e *ErrNoPassthrough) Error() string {
	how := "without SASL"
	if e.Mechanism != "" {
		how = "with " + e.Mechanism
	}
	why := "a client without SASL brings no credential kproxy could present"
	if e.Mechanism == config.MechScramSHA256 || e.Mechanism == config.MechScramSHA512 {
		why = "a SCRAM exchange never reveals the password, so kproxy cannot replay it"
	}
	return fmt.Sprintf("cluster %s passes client identities through, and principal %q authenticated %s: %s, and no upstream credential is mapped to this principal (clusters.%s.passthrough)", e.Cluster, e.Principal, how, why, e.Cluster)
}

// Passthrough is one passthrough cluster's identity rule: the mapped
// credentials by principal.
type Passthrough struct {
	cluster string
	mapped  map[string]sasl.Mechanism
}

// NewPassthrough builds cluster's passthrough from its passthrough map.
// Every mapped secret is read now (a missing one is a start-up error) and
// again at each upstream authentication (ClientMechanism).
func NewPassthrough(cluster string, m map[string]config.ClientSASL) (*Passthrough, error) {
	p := &Passthrough{cluster: cluster, mapped: map[string]sasl.Mechanism{}}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := m[n]
		mech, err := ClientMechanism(&s)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: passthrough credential of %q: %w", cluster, n, err)
		}
		p.mapped[n] = mech
	}
	return p, nil
}

// Mechanism returns what principal's connections present to the cluster:
// its mapped credential, else its own (cred, nil without SASL) replayed.
func (p *Passthrough) Mechanism(principal string, cred *ClientCredential) (sasl.Mechanism, error) {
	if m, ok := p.mapped[principal]; ok {
		return m, nil
	}
	if cred != nil {
		switch cred.mech {
		case config.MechPlain:
			return plain.Auth{User: cred.user, Pass: cred.pass}.AsMechanism(), nil
		case config.MechOAuthBearer:
			return oauth.Auth{Token: cred.token}.AsMechanism(), nil
		}
	}
	e := &ErrNoPassthrough{Cluster: p.cluster, Principal: principal}
	if cred != nil {
		e.Mechanism = cred.mech
	}
	return nil, e
}

// Check reports whether principal, authenticated with mech ("" without
// SASL), can be carried to the cluster; it is asked at authentication so
// that a client that could never reach the cluster is told at once.
func (p *Passthrough) Check(principal, mech string) error {
	if _, ok := p.mapped[principal]; ok {
		return nil
	}
	if mech == config.MechPlain || mech == config.MechOAuthBearer {
		return nil
	}
	return &ErrNoPassthrough{Cluster: p.cluster, Principal: principal, Mechanism: mech}
}

// IsUpstreamAuthFailure reports whether err is a broker refusing the
// credentials kproxy presented (as opposed to a network failure).
func IsUpstreamAuthFailure(err error) bool {
	var af *upstreamAuthError
	return errors.As(err, &af)
}

// upstreamAuthError marks a SASL exchange the broker refused.
type upstreamAuthError struct{ err error }

func (e *upstreamAuthError) Error() string { return e.err.Error() }
func (e *upstreamAuthError) Unwrap() error { return e.err }

// AuthRefused wraps err, a broker's refusal of a SASL exchange, so that
// IsUpstreamAuthFailure recognizes it.
func AuthRefused(err error) error { return &upstreamAuthError{err: err} }
