package proxy

// kproxy's own TLS and SASL on the broker connections it dials for
// clients (dialer.go). The kgo metadata client of each cluster gets the
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

	"github.com/kproxy/kproxy/secure"
)

var upstreamClientID = kmsg.StringPtr("kproxy")

// secureUpstream runs TLS and SASL on a freshly dialed broker connection,
// within timeout, and returns the connection to use. The broker sees
// kproxy's own identity (the cluster's sasl section), whoever the client.
func secureUpstream(nc net.Conn, sec secure.Upstream, addr string, timeout time.Duration, maxResp int32) (net.Conn, error) {
	if sec.TLS == nil && sec.SASL == nil {
		return nc, nil
	}
	host, _, _ := net.SplitHostPort(addr)
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if sec.TLS != nil {
		cfg := sec.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	if sec.SASL != nil {
		if err := saslToBroker(nc, sec, host, maxResp); err != nil {
			return nil, err
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

func saslToBroker(nc net.Conn, sec secure.Upstream, host string, maxResp int32) error {
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
	hs.Mechanism = sec.SASL.Name()
	hsResp := hs.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if err := roundTrip(hs, hsResp); err != nil {
		return fmt.Errorf("SASL handshake: %w", err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return fmt.Errorf("SASL handshake for %s (broker offers %v): %w", hs.Mechanism, hsResp.SupportedMechanisms, err)
	}
	err := secure.Authenticate(context.Background(), sec.SASL, host, func(msg []byte) ([]byte, error) {
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
			return nil, fmt.Errorf("%w%s", err, m)
		}
		return resp.SASLAuthBytes, nil
	})
	if err != nil {
		return fmt.Errorf("SASL %s authentication: %w", hs.Mechanism, err)
	}
	return nil
}
