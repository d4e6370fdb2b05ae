package proxy

// TLS and SASL on the broker connections kproxy dials for clients
// (dialer.go): kproxy's own identity, or with identity: passthrough the
// client's (conn.go upstreamIdentity). The kgo metadata client of each cluster gets the
// same settings as kgo options (cluster.go); both come from one
// secure.Upstream per cluster.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/kproxy/kproxy/secure"
)

var upstreamClientID = kmsg.StringPtr("kproxy")

// secureUpstream runs TLS and SASL on a freshly dialed broker connection,
// within timeout, and returns the connection to use.
// mech is the SASL mechanism to authenticate with (the cluster's own, or a
// passthrough client's); the returned lifetime is the broker's session
// lifetime (KIP-368, 0 = none).
func secureUpstream(nc net.Conn, tlsCfg *tls.Config, mech sasl.Mechanism, addr string, timeout time.Duration, maxResp int32) (net.Conn, time.Duration, error) {
	if tlsCfg == nil && mech == nil {
		return nc, 0, nil
	}
	host, _, _ := net.SplitHostPort(addr)
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if tlsCfg != nil {
		cfg := tlsCfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, 0, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	var lifetime time.Duration
	if mech != nil {
		var err error
		if lifetime, err = saslToBroker(nc, mech, host, maxResp); err != nil {
			return nil, 0, err
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, lifetime, nil
}

// saslToBroker authenticates with mech and returns the session lifetime
// the broker reported. A refusal by the broker (an error code, as opposed
// to a broken connection) is marked secure.AuthRefused.
func saslToBroker(nc net.Conn, mech sasl.Mechanism, host string, maxResp int32) (time.Duration, error) {
	corr := int32(0)
	roundTrip := func(req kmsg.Request, resp kmsg.Response) error {
		corr++
		if _, err := nc.Write(appendRequest(nil, corr, upstreamClientID, req)); err != nil {
			return err
		}
		frame, err := readFrame(nc, maxResp)
		if err != nil {
			return err
		}
		if len(frame) < 4 || int32(binary.BigEndian.Uint32(frame)) != corr {
			return errors.New("SASL answer out of order")
		}
		body := frame[4:]
		if resp.IsFlexible() {
			r := kbinReader(body)
			skipTagsBounded(r)
			body = r.Src
		}
		resp.SetVersion(req.GetVersion())
		return resp.ReadFrom(body)
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version = 1
	hs.Mechanism = mech.Name()
	hsResp := hs.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if err := roundTrip(hs, hsResp); err != nil {
		return 0, fmt.Errorf("SASL handshake: %w", err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return 0, secure.AuthRefused(fmt.Errorf("SASL handshake for %s (broker offers %v): %w", hs.Mechanism, hsResp.SupportedMechanisms, err))
	}
	var lifetime time.Duration
	err := secure.Authenticate(context.Background(), mech, host, func(msg []byte) ([]byte, error) {
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
			return nil, secure.AuthRefused(fmt.Errorf("%w%s", err, m))
		}
		lifetime = time.Duration(resp.SessionLifetimeMillis) * time.Millisecond
		return resp.SASLAuthBytes, nil
	})
	if err != nil {
		return 0, fmt.Errorf("SASL %s authentication: %w", hs.Mechanism, err)
	}
	return lifetime, nil
}
