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
	return secure.SASLHandshake(context.Background(), mech, host, roundTrip)
}
