package secure

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/xdg-go/scram"
)

// Authenticator runs the server side of SASL for one listener: the
// mechanisms it offers and the users file it checks against.
type Authenticator struct {
	mechs []string
	store *UserStore
	oauth *OAuthValidator
}

// WithOAuth enables OAUTHBEARER against v (when offered in mechs).
func (a *Authenticator) WithOAuth(v *OAuthValidator) *Authenticator {
	a.oauth = v
	return a
}

// NewAuthenticator offers mechs (validated by config) against store.
func NewAuthenticator(mechs []string, store *UserStore) *Authenticator {
	return &Authenticator{mechs: slices.Clone(mechs), store: store}
}

// Mechanisms lists the offered mechanisms, as SaslHandshake reports them.
func (a *Authenticator) Mechanisms() []string { return slices.Clone(a.mechs) }

// Supports reports whether mech is offered.
func (a *Authenticator) Supports(mech string) bool { return slices.Contains(a.mechs, mech) }

// ErrAuthFailed is the error of a conversation whose credentials were
// wrong; its text is what a client is told (the broker's wording), and
// carries neither the user's password nor which part was wrong.
type ErrAuthFailed struct {
	Mechanism string
	// Reason is for kproxy's log only (a token's validation error, say);
	// it never carries a secret.
	Reason string
}

func (e *ErrAuthFailed) Error() string {
	return "Authentication failed during authentication due to invalid credentials with SASL mechanism " + e.Mechanism
}

// Conversation is one client's authentication exchange.
type Conversation interface {
	// Step takes the client's next message and returns the answer, and
	// whether the exchange is complete (authenticated). An error ends it:
	// *ErrAuthFailed for wrong credentials, another error for a malformed
	// message.
	Step(in []byte) (out []byte, done bool, err error)
	// Username is the name the client gave, once it gave one ("" before);
	// after a successful exchange it is the principal.
	Username() string
}

// Start begins a conversation with mech, which must be offered.
func (a *Authenticator) Start(mech string) (Conversation, error) {
	if !a.Supports(mech) {
		return nil, fmt.Errorf("unsupported SASL mechanism %s", mech)
	}
	switch mech {
	case "PLAIN":
		return &plainConv{store: a.store}, nil
	case "OAUTHBEARER":
		if a.oauth == nil {
			return nil, fmt.Errorf("unsupported SASL mechanism %s", mech)
		}
		return &oauthConv{v: a.oauth}, nil
	}
	h, ok := hashFor(mech)
	if !ok {
		return nil, fmt.Errorf("unsupported SASL mechanism %s", mech)
	}
	c := &scramConv{mech: mech}
	srv, err := h.NewServer(func(user string) (scram.StoredCredentials, error) {
		c.user = user
		sc, ok := a.store.lookup(mech, user)
		if !ok {
			return scram.StoredCredentials{}, errors.New("unknown user")
		}
		return sc, nil
	})
	if err != nil {
		return nil, err
	}
	c.conv = srv.NewConversation()
	return c, nil
}

// plainConv checks "authzid NUL authcid NUL password" (RFC 4616).
type plainConv struct {
	store *UserStore
	user  string
	// pass is kept only after a successful check, for identity
	// passthrough (passthrough.go); the conversation is dropped when the
	// connection's credential has been taken from it.
	pass string
}

func (p *plainConv) Username() string { return p.user }

func (p *plainConv) Step(in []byte) ([]byte, bool, error) {
	parts := bytes.Split(in, []byte{0})
	if len(parts) != 3 {
		return nil, false, errors.New("malformed PLAIN message")
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	p.user = user
	if authz != "" && authz != user {
		return nil, false, &ErrAuthFailed{Mechanism: "PLAIN"}
	}
	if user == "" || !p.store.checkPlain(user, pass) {
		return nil, false, &ErrAuthFailed{Mechanism: "PLAIN"}
	}
	p.pass = pass
	return nil, true, nil
}

type scramConv struct {
	mech string
	user string
	conv *scram.ServerConversation
}

func (s *scramConv) Username() string { return s.user }

func (s *scramConv) Step(in []byte) ([]byte, bool, error) {
	out, err := s.conv.Step(string(in))
	if err != nil {
		return nil, false, &ErrAuthFailed{Mechanism: s.mech}
	}
	if s.conv.Done() {
		if !s.conv.Valid() {
			return nil, false, &ErrAuthFailed{Mechanism: s.mech}
		}
		return []byte(out), true, nil
	}
	return []byte(out), false, nil
}
