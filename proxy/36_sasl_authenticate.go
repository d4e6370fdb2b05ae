package proxy

// SaslAuthenticate (key 36), accepted v0-2.
// Route: answered by kproxy itself against the listener's users file
// (secure.Authenticator); nothing is dialed upstream for a connection
// that has not authenticated.
// Answer: the mechanism's next message. Wrong credentials get
// SASL_AUTHENTICATION_FAILED with the broker's message, logged once with
// the user name (never the password or any token), and the connection is
// closed after the answer, as a broker does. v1+ reports the session
// lifetime (KIP-368 connections.max.reauth.ms, listener sasl.max_reauth);
// a connection that has not re-authenticated by then is closed at its
// next request. An OAUTHBEARER session also ends when its token expires.
// A re-authentication must keep the principal. With a passthrough cluster
// (identity: passthrough), a client whose identity cannot be carried
// upstream (SCRAM without a mapped credential) is refused here with the
// reason in the message; a re-authentication with a new credential
// replaces the connection's upstream connections (passthrough.go).

import (
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/secure"
)

func handleSaslAuthenticate(rc *reqCtx, req *kmsg.SASLAuthenticateRequest) func() kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	answer := func() kmsg.Response { return resp }
	cc := rc.cc
	st := &cc.sasl
	if cc.saslListener() == nil || st.conv == nil {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		resp.ErrorMessage = kmsg.StringPtr("SaslAuthenticate before a SaslHandshake")
		rc.closeAfter = cc.saslListener() != nil
		return answer
	}
	out, done, err := st.conv.Step(req.SASLAuthBytes)
	if err != nil {
		user := st.conv.Username()
		st.conv = nil
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		var af *secure.ErrAuthFailed
		if !errors.As(err, &af) {
			af = &secure.ErrAuthFailed{Mechanism: st.mech}
		}
		resp.ErrorMessage = kmsg.StringPtr(af.Error())
		rc.closeAfter = true
		cc.srv.metrics.saslFailures.WithLabelValues(st.mech).Inc()
		reason := err.Error()
		if af.Reason != "" {
			reason = af.Reason // e.g. why a token was refused; never the token
		}
		cc.log.Warn("SASL authentication failed", "principal", user, "mechanism", st.mech, "listener", cc.lst.opts.Name, "reason", reason)
		return answer
	}
	resp.SASLAuthBytes = out
	if !done {
		return answer
	}
	user := st.conv.Username()
	var tokenExpiry time.Time // OAUTHBEARER: the session may not outlive the token
	if e, ok := st.conv.(interface{ Expiry() time.Time }); ok {
		tokenExpiry = e.Expiry()
	}
	cred := credentialOf(st.conv)
	st.conv = nil
	if err := cc.passthroughCheck(user, st.mech); err != nil {
		// identity: passthrough cannot carry this client upstream
		// (SCRAM without a mapped credential): refused now, with the
		// reason, rather than at its first request for the cluster.
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr(err.Error())
		resp.SASLAuthBytes = nil
		rc.closeAfter = true
		cc.srv.metrics.saslFailures.WithLabelValues(st.mech).Inc()
		cc.log.Warn("SASL authentication refused: identity cannot be passed through", "principal", user, "mechanism", st.mech, "listener", cc.lst.opts.Name, "reason", err.Error())
		return answer
	}
	if st.authenticated && user != st.principal {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("Cannot change principals during re-authentication")
		resp.SASLAuthBytes = nil
		rc.closeAfter = true
		cc.log.Warn("SASL re-authentication refused: a different principal", "principal", st.principal, "new_principal", user)
		return answer
	}
	resp.SessionLifetimeMillis = cc.completeSASL(user, tokenExpiry, cred).Milliseconds()
	return answer
}
