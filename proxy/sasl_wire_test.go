package proxy

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

// Raw-connection helpers for the SASL and OAUTHBEARER tests, which speak
// the authentication exchange frame by frame.

// dialTLS connects to addr with cfg and sets a deadline for the exchange;
// the caller closes the connection.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) net.Conn {
	t.Helper()
	nc, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

// sendRequest writes req with correlation id corr and reads the answer frame;
// a read error is the connection closing.
func sendRequest(t *testing.T, nc net.Conn, corr int32, req kmsg.Request) ([]byte, error) {
	t.Helper()
	if _, err := nc.Write(appendRequest(nil, corr, kmsg.StringPtr("t"), req)); err != nil {
		t.Fatal(err)
	}
	return readFrame(nc, 1<<20)
}

// saslHandshake sends a SaslHandshake for mechanism at version and returns
// the answer.
func saslHandshake(t *testing.T, nc net.Conn, corr int32, version int16, mechanism string) *kmsg.SASLHandshakeResponse {
	t.Helper()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = version, mechanism
	f, err := sendRequest(t, nc, corr, hs)
	if err != nil {
		t.Fatal(err)
	}
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.Version = version
	if err := resp.ReadFrom(f[4:]); err != nil {
		t.Fatal(err)
	}
	return resp
}

// saslAuthenticateV1 sends auth in a SaslAuthenticate v1 and returns the
// answer.
func saslAuthenticateV1(t *testing.T, nc net.Conn, corr int32, auth []byte) *kmsg.SASLAuthenticateResponse {
	t.Helper()
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.Version, au.SASLAuthBytes = 1, auth
	f, err := sendRequest(t, nc, corr, au)
	if err != nil {
		t.Fatal(err)
	}
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.Version = 1
	if err := resp.ReadFrom(f[4:]); err != nil {
		t.Fatal(err)
	}
	return resp
}

// listenerTLS writes a certificate for cn signed by ca into dir and returns
// kproxy's listener TLS read from those files, and the files.
func listenerTLS(t *testing.T, ca *securetest.CA, dir, cn string) (tc *tls.Config, certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = ca.WriteFiles(t, dir, "kproxy", pkix.Name{CommonName: cn})
	tc, err := secure.ServerTLS(&config.ServerTLS{CertFile: certFile, KeyFile: keyFile}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return tc, certFile, keyFile
}
