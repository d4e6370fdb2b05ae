package proxy

// Listeners: each address kproxy accepts clients on, with its own TLS and
// SASL settings and its own advertised address (a client that came in over
// TLS must be told the TLS address in Metadata and FindCoordinator).

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/kproxy/kproxy/secure"
)

// Listener configures one client listener.
type Listener struct {
	// Name identifies the listener in logs, metrics and /status.
	Name string
	// Listen is the host:port to accept clients on.
	Listen string
	// AdvertiseHost and AdvertisePort are what this listener's clients
	// are told to connect to; empty means the listener's address.
	AdvertiseHost string
	AdvertisePort int32
	// TLS, when set, makes the listener speak TLS (secure.ServerTLS).
	TLS *tls.Config
	// Principals maps a verified client certificate to a principal (mTLS).
	Principals *secure.PrincipalMapper
	// SASL, when set, requires SASL authentication before any request but
	// ApiVersions, SaslHandshake and SaslAuthenticate (sasl_server.go).
	SASL *secure.Authenticator
	// MaxReauth is the session lifetime reported in SaslAuthenticate v1+
	// (KIP-368 connections.max.reauth.ms); 0 means no limit.
	MaxReauth time.Duration
}

// listener is an open Listener.
type listener struct {
	opts    Listener
	ln      net.Listener
	advHost string
	advPort int32
}

func (l *listener) kind() string {
	switch {
	case l.opts.TLS != nil && l.opts.SASL != nil:
		return "SASL_SSL"
	case l.opts.TLS != nil:
		return "SSL"
	case l.opts.SASL != nil:
		return "SASL_PLAINTEXT"
	}
	return "PLAINTEXT"
}

// ListenerStatus is one listener in /status.
type ListenerStatus struct {
	Name      string `json:"name"`
	Addr      string `json:"addr"`
	Advertise string `json:"advertise"`
	Security  string `json:"security"` // PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
}

// openListener listens on l.Listen and works out its advertised address.
func (s *Server) openListener(l Listener, listen func(network, addr string) (net.Listener, error)) (*listener, error) {
	ln, err := listen("tcp", l.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s (listener %s): %w", l.Listen, l.Name, err)
	}
	out := &listener{opts: l, ln: ln, advHost: l.AdvertiseHost, advPort: l.AdvertisePort}
	if out.advHost == "" || out.advPort == 0 {
		h, p, _ := net.SplitHostPort(ln.Addr().String())
		pn, _ := strconv.Atoi(p)
		if out.advHost == "" {
			out.advHost = h
		}
		if out.advPort == 0 {
			out.advPort = int32(pn)
		}
	}
	return out, nil
}

// ListenerAddr is the address of the listener named name (useful with
// port 0), or nil.
func (s *Server) ListenerAddr(name string) net.Addr {
	for _, l := range s.lns {
		if l.opts.Name == name {
			return l.ln.Addr()
		}
	}
	return nil
}

// handshakeTLS runs the server side of a TLS handshake on a new client
// connection, bounded by the read timeout, and returns the principal an
// mTLS certificate maps to ("" without one). A plaintext client on a TLS
// port fails here, before any request is read, and opens nothing upstream.
func (l *listener) handshakeTLS(tc *tls.Conn, timeout time.Duration) (string, error) {
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	_ = tc.SetDeadline(time.Time{})
	principal := ""
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		if l.opts.Principals != nil {
			principal = l.opts.Principals.Principal(certs[0])
		} else {
			principal = certs[0].Subject.String()
		}
	}
	return principal, nil
}
