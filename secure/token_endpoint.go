package secure

// OAUTHBEARER upstream with tokens from an OAuth 2.0 client-credentials
// token endpoint (a cluster's sasl.token_endpoint). The grant and the
// token caching are golang.org/x/oauth2's; kproxy only says when to fetch
// again: tokenEarly before the token expires, so that a connection never
// authenticates with a token about to lapse.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kproxy/kproxy/config"
)

// tokenEarly is how long before its expiry a cached token is replaced.
const tokenEarly = time.Minute

func tokenEndpointMechanism(e *config.TokenEndpoint) (sasl.Mechanism, error) {
	secret, err := config.ReadSecret(e.ClientSecretFile, e.ClientSecretEnv)
	if err != nil {
		return nil, fmt.Errorf("token endpoint client secret: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pool, err := loadCAs(e.CAFile)
		if err != nil {
			return nil, fmt.Errorf("token endpoint CA: %w", err)
		}
		tc.RootCAs = pool
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	cc := &clientcredentials.Config{ClientID: e.ClientID, ClientSecret: secret, TokenURL: e.URL, Scopes: e.Scopes}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	// Config.Token always asks the endpoint; the reuse wrapper caches the
	// answer until tokenEarly before it expires.
	ts := oauth2.ReuseTokenSourceWithExpiry(nil, tokenSourceFunc(func() (*oauth2.Token, error) { return cc.Token(ctx) }), tokenEarly)
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		tok, err := ts.Token()
		if err != nil {
			// The oauth2 error carries the endpoint's answer, never the
			// client secret.
			return oauth.Auth{}, fmt.Errorf("token endpoint %s: %w", e.URL, err)
		}
		return oauth.Auth{Token: tok.AccessToken}, nil
	}), nil
}

type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }
