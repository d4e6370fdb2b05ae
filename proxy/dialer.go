package proxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/kproxy/kproxy/secure"
)

// errDialBackoff marks a request that was not sent because its broker's
// last dial failed moments ago; handlers answer it like any other upstream
// failure, with a retriable error.
var errDialBackoff = errors.New("broker is in dial backoff")

// dialer dials upstream brokers for every client connection and remembers
// which brokers failed: after a failed dial, requests for that broker fail
// fast until a backoff (doubling from Limits.DialBackoffMin to
// DialBackoffMax, with jitter so that many connections do not retry in
// step) has passed. A dead broker then costs one dial per backoff period,
// not one 10 s dial per request.
type dialer struct {
	lim     Limits
	maxResp int32
	onFail  func(cluster string)
	// netDial dials a broker; tests replace it.
	netDial func(addr string, timeout time.Duration) (net.Conn, error)
	// sec is how to reach each cluster (TLS, SASL), by name.
	sec map[string]secure.Upstream

	mu    sync.Mutex
	state map[string]*dialState // by cluster + "\x00" + addr
}

type dialState struct {
	fails   int
	retryAt time.Time
	lastErr error
}

func newDialer(lim Limits, maxResp int32, onFail func(cluster string)) *dialer {
	return &dialer{lim: lim, maxResp: maxResp, onFail: onFail, state: map[string]*dialState{},
		netDial: func(addr string, timeout time.Duration) (net.Conn, error) {
			return net.DialTimeout("tcp", addr, timeout)
		}}
}

// upIdentity is whose identity a passthrough connection carries: the
// client's principal and the SASL mechanism that presents its credential
// (secure.Passthrough). nil means kproxy's own (the cluster's sasl).
type upIdentity struct {
	principal string
	mech      sasl.Mechanism
}

// pool (may be nil) is where the connection's answers are read into
// (upstreamConn.pool).
func (d *dialer) dial(cluster string, broker int32, addr string, pool *sync.Pool, id *upIdentity) (*upstreamConn, error) {
	key := cluster + "\x00" + addr
	sec := d.sec[cluster]
	mech := sec.SASL
	if id != nil {
		// One principal's refused credential must not hold the broker
		// back for everyone else: backoff is per principal.
		key += "\x00" + id.principal
		mech = id.mech
	}
	d.mu.Lock()
	if st := d.state[key]; st != nil {
		if wait := time.Until(st.retryAt); wait > 0 {
			err := st.lastErr
			d.mu.Unlock()
			return nil, fmt.Errorf("%w (%s more): %w", errDialBackoff, wait.Round(time.Millisecond), err)
		}
	}
	d.mu.Unlock()

	start := time.Now()
	var lifetime time.Duration
	nc, err := d.netDial(addr, d.lim.DialTimeout)
	if err == nil {
		// TLS and SASL share the dial's time bound.
		var sc net.Conn
		if sc, lifetime, err = secureUpstream(nc, sec.TLS, mech, addr, max(d.lim.DialTimeout-time.Since(start), time.Second), d.maxResp); err != nil {
			nc.Close()
		}
		nc = sc
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.state, key)
		uc := newUpstreamConn(nc, cluster, broker, addr, d.maxResp, pool, d.lim.UpstreamWriteTimeout)
		if lifetime > 0 {
			// Replace the connection before the broker ends its
			// session (KIP-368): at 90% of the lifetime new requests
			// go to a fresh connection and this one closes once its
			// calls are answered (clientConn.upstream).
			uc.renewAt = start.Add(lifetime * 9 / 10)
		}
		return uc, nil
	}
	err = fmt.Errorf("dialing upstream %s broker %d at %s: %w", cluster, broker, addr, err)
	st := d.state[key]
	if st == nil {
		st = &dialState{}
		d.state[key] = st
	}
	st.fails++
	st.lastErr = err
	st.retryAt = time.Now().Add(d.backoff(st.fails))
	if d.onFail != nil {
		d.onFail(cluster)
	}
	return nil, err
}

// backoff is the wait after the fails-th consecutive failure: doubling from
// DialBackoffMin, capped at DialBackoffMax, then jittered to 50-100%.
func (d *dialer) backoff(fails int) time.Duration {
	b := d.lim.DialBackoffMin
	for i := 1; i < fails && b < d.lim.DialBackoffMax; i++ {
		b *= 2
	}
	b = min(b, d.lim.DialBackoffMax)
	return b/2 + rand.N(b/2+1)
}
