package proxy

// SASL on the client side, as a broker does it: on a SASL listener a
// connection may send only ApiVersions, SaslHandshake and SaslAuthenticate
// until it has authenticated; anything else closes it (the broker's
// IllegalSaslStateException), and nothing is dialed upstream for it. The
// handlers are 17_sasl_handshake.go and 36_sasl_authenticate.go.

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/secure"
)

// saslState is one connection's authentication. It is read and written on
// the connection's read goroutine only (admit, and the synchronous part of
// the two SASL handlers), except principal, which is set before any
// request that could read it is dispatched.
type saslState struct {
	mech          string              // chosen by SaslHandshake; "" before
	raw           bool                // v0 handshake: the next frames are bare tokens
	conv          secure.Conversation // the exchange in progress
	authenticated bool
	principal     string    // the SASL user once authenticated
	certPrincipal string    // from an mTLS client certificate
	expiry        time.Time // session end (KIP-368); zero: none
}

// Principal is who the client is: its SASL user, else its mTLS
// certificate's principal, else "ANONYMOUS" (Kafka's name for it).
func (cc *clientConn) Principal() string {
	switch {
	case cc.sasl.principal != "":
		return cc.sasl.principal
	case cc.sasl.certPrincipal != "":
		return cc.sasl.certPrincipal
	}
	return "ANONYMOUS"
}

func (cc *clientConn) saslListener() *secure.Authenticator {
	if cc.lst == nil {
		return nil
	}
	return cc.lst.opts.SASL
}

// admit refuses a request the connection may not send yet: on a SASL
// listener, anything but ApiVersions and the SASL APIs before
// authentication, and anything once the session has expired without
// re-authentication (KIP-368). The error closes the connection.
func (cc *clientConn) admit(key int16) error {
	if cc.saslListener() == nil {
		return nil
	}
	switch kmsg.Key(key) {
	case kmsg.ApiVersions, kmsg.SASLHandshake, kmsg.SASLAuthenticate:
		return nil
	}
	st := &cc.sasl
	if !st.authenticated {
		cc.srv.metrics.closed.WithLabelValues("sasl_state").Inc()
		return fmt.Errorf("%w: %s before SASL authentication completed (ILLEGAL_SASL_STATE); closing as a broker does", errSASLState, kmsg.NameForKey(key))
	}
	if !st.expiry.IsZero() && time.Now().After(st.expiry) {
		cc.srv.metrics.closed.WithLabelValues("sasl_expired").Inc()
		return fmt.Errorf("%w: session of %s expired without re-authentication (connections.max.reauth.ms); closing as a broker does", errSASLState, st.principal)
	}
	return nil
}

// errSASLState ends a connection that sent a request its SASL state does
// not allow.
var errSASLState = errors.New("SASL state")

// rawSASLToken is the answer to a bare token after a v0 SaslHandshake: a
// size-prefixed token with no response header. The write loop sends it
// as it is; no kmsg.Response method is ever called on it.
type rawSASLToken struct {
	kmsg.Response
	token []byte
}

// rawSASLStep takes one bare token of a v0 exchange (pre-KIP-152 clients)
// and queues the bare answer. Wrong credentials close the connection, as
// a broker does for v0, where there is no way to send an error.
func (cc *clientConn) rawSASLStep(token []byte) error {
	st := &cc.sasl
	out, done, err := st.conv.Step(token)
	if err != nil {
		user := st.conv.Username()
		st.conv, st.raw = nil, false
		cc.srv.metrics.saslFailures.WithLabelValues(st.mech).Inc()
		cc.log.Warn("SASL authentication failed", "principal", user, "mechanism", st.mech, "listener", cc.lst.opts.Name, "handshake", "v0", "reason", err.Error())
		return errors.New("SASL authentication failed (v0 handshake: closed without an answer, as a broker does)")
	}
	if done {
		user := st.conv.Username()
		if err := cc.passthroughCheck(user, st.mech); err != nil {
			cc.srv.metrics.saslFailures.WithLabelValues(st.mech).Inc()
			cc.log.Warn("SASL authentication refused: identity cannot be passed through", "principal", user, "mechanism", st.mech, "listener", cc.lst.opts.Name, "handshake", "v0", "reason", err.Error())
			return errors.New("SASL authentication refused (v0 handshake: closed without an answer, as a broker does)")
		}
		cc.completeSASL(user, time.Time{}, credentialOf(st.conv))
		st.raw = false
	}
	s := &slot{key: kmsg.SASLAuthenticate.Int16(), ready: make(chan struct{}), resp: &rawSASLToken{token: out}, start: time.Now()}
	close(s.ready)
	cc.outstanding.Add(1)
	if !cc.push(s) {
		cc.outstanding.Add(-1)
		return net.ErrClosed
	}
	return nil
}

// completeSASL records a successful authentication as user and returns
// the session's lifetime (0: unlimited): MaxReauth, and no longer than
// until tokenExpiry when that is set (OAUTHBEARER).
// cred is the client's credential for identity passthrough (nil for
// SCRAM).
func (cc *clientConn) completeSASL(user string, tokenExpiry time.Time, cred *secure.ClientCredential) (lifetime time.Duration) {
	st := &cc.sasl
	reauth := st.authenticated
	st.conv = nil
	st.authenticated, st.principal = true, user
	cc.setUpstreamIdentity(user, cred)
	now := time.Now()
	lifetime = cc.lst.opts.MaxReauth
	if !tokenExpiry.IsZero() {
		if left := max(tokenExpiry.Sub(now), time.Millisecond); lifetime == 0 || left < lifetime {
			lifetime = left
		}
	}
	st.expiry = time.Time{}
	if lifetime > 0 {
		st.expiry = now.Add(lifetime)
	}
	if cc.log.IsDebug() || !reauth {
		cc.log.Info("SASL authenticated", "principal", user, "mechanism", st.mech, "listener", cc.lst.opts.Name, "reauthentication", reauth)
	}
	return lifetime
}

// credentialOf is the replayable credential of a finished conversation
// (PLAIN, OAUTHBEARER), or nil.
func credentialOf(c secure.Conversation) *secure.ClientCredential {
	if cr, ok := c.(secure.Credentialed); ok {
		return cr.Credential()
	}
	return nil
}
