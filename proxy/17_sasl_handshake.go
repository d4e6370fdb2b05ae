package proxy

// SaslHandshake (key 17), accepted v0-1.
// Route: answered by kproxy itself (the client's authentication to kproxy;
// kproxy's own to the brokers is separate, see dialer.go).
// Answer: the listener's mechanisms; the chosen one starts a conversation
// that SaslAuthenticate carries. A mechanism not offered gets
// UNSUPPORTED_SASL_MECHANISM and the connection is closed after the
// answer; a handshake on a listener without SASL, or in the middle of an
// exchange, gets ILLEGAL_SASL_STATE. A handshake after authentication
// starts a re-authentication (KIP-368). After a v0 handshake (pre-1.0
// clients) the exchange continues in bare size-prefixed tokens outside
// Kafka framing (rawSASLStep in sasl_server.go).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleSaslHandshake(rc *reqCtx, req *kmsg.SASLHandshakeRequest) func() kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	cc := rc.cc
	auth := cc.saslListener()
	if auth == nil {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		return func() kmsg.Response { return resp }
	}
	resp.SupportedMechanisms = auth.Mechanisms()
	st := &cc.sasl
	if st.conv != nil {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		rc.closeAfter = true
		return func() kmsg.Response { return resp }
	}
	conv, err := auth.Start(req.Mechanism)
	if err != nil {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		rc.closeAfter = true
		cc.log.Warn("SASL handshake refused: mechanism not offered", "mechanism", req.Mechanism, "offered", resp.SupportedMechanisms)
		return func() kmsg.Response { return resp }
	}
	st.mech, st.conv = req.Mechanism, conv
	st.raw = req.Version == 0
	return func() kmsg.Response { return resp }
}
