package proxy

// SASL on the client side, as a broker does it: on a SASL listener a
// connection may send only ApiVersions, SaslHandshake and SaslAuthenticate
// until it has authenticated; anything else closes it (the broker's
// IllegalSaslStateException), and nothing is dialed upstream for it. The
// handlers are 17_sasl_handshake.go and 36_sasl_authenticate.go.

import (
	"fmt"
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
		return fmt.Errorf("%s before SASL authentication completed (ILLEGAL_SASL_STATE); closing as a broker does", kmsg.NameForKey(key))
	}
	if !st.expiry.IsZero() && time.Now().After(st.expiry) {
		cc.srv.metrics.closed.WithLabelValues("sasl_expired").Inc()
		return fmt.Errorf("SASL session of %s expired without re-authentication (connections.max.reauth.ms); closing as a broker does", st.principal)
	}
	return nil
}
