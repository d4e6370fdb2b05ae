package secure

// OAUTHBEARER keys from the issuer's JWKS endpoint (listener
// oauthbearer.jwks_url): fetched over HTTPS at start, again when they are
// older than the refresh period, and when a token names a key id they do
// not have (the issuer rotated keys), at most once per unknownKidEvery so
// that tokens with made-up key ids cannot make kproxy hammer the issuer.
// A failed fetch keeps the keys already held. The fetch runs on the
// authenticating connection's goroutine, bounded by the HTTP client's
// timeout; other connections keep validating with the held keys.

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	// DefaultJWKSRefresh is how old fetched keys may get.
	DefaultJWKSRefresh = 15 * time.Minute
	// unknownKidEvery bounds fetches caused by unknown key ids.
	unknownKidEvery  = 30 * time.Second
	jwksFetchTimeout = 10 * time.Second
	jwksMaxBytes     = 1 << 20
)

type remoteJWKS struct {
	url     string
	client  *http.Client
	refresh time.Duration
	log     hclog.Logger

	fetchMu sync.Mutex // one fetch at a time; guards the fields below
	held    map[string]crypto.PublicKey
	fetched time.Time // last fetch attempt, for the refresh period
	kidTry  time.Time // last fetch for an unknown key id
	// fetches counts fetch attempts (tests).
	fetches int
}

// NewOAuthValidatorURL is NewOAuthValidator with the keys from a JWKS URL
// (https). caFile, when set, is the bundle the endpoint's certificate must
// chain to; refresh 0 means DefaultJWKSRefresh. The first fetch must work.
func NewOAuthValidatorURL(url, caFile string, refresh time.Duration, issuer, audience string, skew time.Duration, claim string, log hclog.Logger) (*OAuthValidator, error) {
	if claim == "" {
		claim = "sub"
	}
	if refresh <= 0 {
		refresh = DefaultJWKSRefresh
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadCAs(caFile)
		if err != nil {
			return nil, fmt.Errorf("JWKS CA: %w", err)
		}
		tc.RootCAs = pool
	}
	r := &remoteJWKS{url: url, refresh: refresh, log: log,
		client: &http.Client{Timeout: jwksFetchTimeout, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}}
	v := &OAuthValidator{Issuer: issuer, Audience: audience, ClockSkew: skew, PrincipalClaim: claim, remote: r, log: log, now: time.Now}
	keys, err := r.fetch()
	r.fetches++
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", url, err)
	}
	r.held, r.fetched = keys, v.now()
	return v, nil
}

// keys returns the held keys, fetching first when they are older than the
// refresh period, or when kid is set, not held, and no unknown-kid fetch
// happened within unknownKidEvery.
func (r *remoteJWKS) keys(now time.Time, kid string) map[string]crypto.PublicKey {
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	stale := now.Sub(r.fetched) >= r.refresh
	_, have := r.held[kid]
	unknown := kid != "" && !have && now.Sub(r.kidTry) >= unknownKidEvery
	if !stale && !unknown {
		return r.held
	}
	r.fetched = now
	if unknown {
		r.kidTry = now
	}
	r.fetches++
	keys, err := r.fetch()
	if err != nil {
		r.log.Error("JWKS fetch failed; keeping the keys held", "url", r.url, "error", err)
		return r.held
	}
	r.held = keys
	r.log.Debug("JWKS fetched", "url", r.url, "keys", len(keys))
	return r.held
}

func (r *remoteJWKS) fetch() (map[string]crypto.PublicKey, error) {
	resp, err := r.client.Get(r.url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes))
	if err != nil {
		return nil, err
	}
	return parseJWKS(body)
}
