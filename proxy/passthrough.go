package proxy

// Identity passthrough (clusters.X.identity: passthrough): a client
// connection's upstream connections to such a cluster authenticate as the
// client (secure/passthrough.go says what can be carried). Upstream
// connections belong to one client connection (conn.go ups), so they are
// never shared across principals. kproxy's own lookups (cluster.go: the
// metadata client and coordinator lookups), the replicator and the
// control plane keep kproxy's service identity; FindCoordinator asks the
// broker as the client too (10_find_coordinator.go), so a client the
// broker may not describe a group or transactional id for gets the
// broker's denial.

import (
	"errors"

	"github.com/kproxy/kproxy/secure"
)

// passthroughClusters lists the clusters whose connections carry client
// identities.
func (s *Server) passthroughClusters() map[string]*secure.Passthrough {
	out := map[string]*secure.Passthrough{}
	for name, u := range s.dialer.sec {
		if u.Passthrough != nil {
			out[name] = u.Passthrough
		}
	}
	return out
}

// passthroughCheck reports why principal, authenticated with mech (""
// without SASL), could not reach a passthrough cluster, or nil. It is
// asked when the client authenticates, so that the client is told then
// (SASL_AUTHENTICATION_FAILED with this text) rather than failing at its
// first request for that cluster.
func (cc *clientConn) passthroughCheck(principal, mech string) error {
	var errs []error
	for _, p := range cc.srv.passthroughClusters() {
		if err := p.Check(principal, mech); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// setUpstreamIdentity records who the connection's passthrough upstream
// connections authenticate as. A changed credential (a re-authentication
// with a new OAUTHBEARER token, KIP-368) bumps the generation: each
// upstream connection made with the old one is replaced at its next use
// and closes once its pending calls are answered (conn.go upstream).
func (cc *clientConn) setUpstreamIdentity(principal string, cred *secure.ClientCredential) {
	cc.upMu.Lock()
	defer cc.upMu.Unlock()
	if cc.upPrincipal == principal && cc.upCred.Same(cred) {
		return
	}
	cc.upPrincipal, cc.upCred = principal, cred
	cc.upGen++
}

// upstreamRefused handles a passthrough broker refusing the client's
// credential: logged (principal and the broker's message, never the
// secret) and the client connection closed, as a broker closes a
// connection whose authentication failed. Retrying on the same
// connection would only be refused again.
func (cc *clientConn) upstreamRefused(cluster, principal string, err error) {
	cc.srv.metrics.closed.WithLabelValues("upstream_auth").Inc()
	cc.log.Warn("closing client connection: the broker refused the client's identity (identity: passthrough)", "cluster", cluster, "principal", principal, "error", err)
	cc.nc.Close()
}
