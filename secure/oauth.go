package secure

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
)

// OAuthValidator checks OAUTHBEARER tokens (RFC 7628) as JWTs: signed by a
// key of a JWKS file (RS256/384/512, PS256/384/512, ES256/384/512), with
// the configured issuer and audience, not expired (with clock skew). The
// principal is a claim of the token (default "sub"). Signature checking is
// github.com/golang-jwt/jwt's; this file only reads the keys.
type OAuthValidator struct {
	Issuer, Audience string
	ClockSkew        time.Duration
	PrincipalClaim   string

	jwksFile string
	// remote, when set, is the JWKS URL the keys come from instead
	// (jwks.go); jwksFile is then "".
	remote *remoteJWKS
	log    hclog.Logger
	now    func() time.Time

	mu        sync.Mutex
	keys      map[string]crypto.PublicKey // by kid
	stamp     string
	checkedAt time.Time
}

// NewOAuthValidator loads jwksFile; it is re-read when it changes (checked
// at most once a second, at authentications).
func NewOAuthValidator(jwksFile, issuer, audience string, skew time.Duration, claim string, log hclog.Logger) (*OAuthValidator, error) {
	if claim == "" {
		claim = "sub"
	}
	v := &OAuthValidator{Issuer: issuer, Audience: audience, ClockSkew: skew, PrincipalClaim: claim, jwksFile: jwksFile, log: log, now: time.Now}
	stamp, err := fileStamp(jwksFile)
	if err != nil {
		return nil, fmt.Errorf("JWKS file: %w", err)
	}
	data, err := os.ReadFile(jwksFile)
	if err != nil {
		return nil, fmt.Errorf("JWKS file: %w", err)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", jwksFile, err)
	}
	v.keys, v.stamp, v.checkedAt = keys, stamp, v.now()
	return v, nil
}

func (v *OAuthValidator) currentKeys() map[string]crypto.PublicKey {
	if v.remote != nil {
		return v.remote.keys(v.now(), "")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if now.Sub(v.checkedAt) < time.Second {
		return v.keys
	}
	v.checkedAt = now
	stamp, err := fileStamp(v.jwksFile)
	if err != nil || stamp == v.stamp {
		return v.keys
	}
	data, err := os.ReadFile(v.jwksFile)
	if err == nil {
		var keys map[string]crypto.PublicKey
		if keys, err = parseJWKS(data); err == nil {
			v.keys, v.stamp = keys, stamp
			v.log.Info("JWKS file reloaded", "path", v.jwksFile, "keys", len(keys))
			return v.keys
		}
	}
	v.stamp = stamp // log a broken file once
	v.log.Error("JWKS file changed but does not load; keeping the previous keys", "path", v.jwksFile, "error", err)
	return v.keys
}

// Validate checks token and returns its principal and expiry.
func (v *OAuthValidator) Validate(token string) (principal string, exp time.Time, err error) {
	keys := v.currentKeys()
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.ClockSkew),
		jwt.WithTimeFunc(v.now),
	}
	if v.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.Issuer))
	}
	if v.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.Audience))
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if k, ok := keys[kid]; ok {
			return k, nil
		}
		if v.remote != nil && kid != "" {
			// A key the issuer may have just rotated in: fetch the
			// JWKS again (rate-limited, jwks.go).
			if k, ok := v.remote.keys(v.now(), kid)[kid]; ok {
				return k, nil
			}
		}
		if kid == "" && len(keys) == 1 {
			for _, k := range keys {
				return k, nil
			}
		}
		return nil, fmt.Errorf("no key %q in the JWKS", kid)
	}, opts...)
	if err != nil {
		return "", time.Time{}, err
	}
	p, _ := claims[v.PrincipalClaim].(string)
	if p == "" {
		return "", time.Time{}, fmt.Errorf("token has no %q claim", v.PrincipalClaim)
	}
	e, err := claims.GetExpirationTime()
	if err != nil || e == nil {
		return "", time.Time{}, errors.New("token has no expiry")
	}
	return p, e.Time, nil
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads the public keys of a JWKS document (RFC 7517): RSA and
// EC (P-256, P-384, P-521) signing keys.
func parseJWKS(data []byte) (map[string]crypto.PublicKey, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	b64 := func(s string) (*big.Int, error) {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil || len(b) == 0 {
			return nil, errors.New("bad base64url number")
		}
		return new(big.Int).SetBytes(b), nil
	}
	out := map[string]crypto.PublicKey{}
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch k.Kty {
		case "RSA":
			n, err1 := b64(k.N)
			e, err2 := b64(k.E)
			if err := errors.Join(err1, err2); err != nil || !e.IsInt64() {
				return nil, fmt.Errorf("key %d (%q): bad RSA key", i, k.Kid)
			}
			out[k.Kid] = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			var curve elliptic.Curve
			switch k.Crv {
			case "P-256":
				curve = elliptic.P256()
			case "P-384":
				curve = elliptic.P384()
			case "P-521":
				curve = elliptic.P521()
			default:
				return nil, fmt.Errorf("key %d (%q): unsupported curve %q", i, k.Kid, k.Crv)
			}
			size := (curve.Params().BitSize + 7) / 8
			x, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.X, "="))
			y, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.Y, "="))
			if err := errors.Join(err1, err2); err != nil || len(x) != size || len(y) != size {
				return nil, fmt.Errorf("key %d (%q): bad EC key", i, k.Kid)
			}
			// The uncompressed point; parsing checks it is on the curve.
			pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
			if err != nil {
				return nil, fmt.Errorf("key %d (%q): %w", i, k.Kid, err)
			}
			out[k.Kid] = pub
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no RSA or EC signing key")
	}
	return out, nil
}

// oauthConv checks the client's single OAUTHBEARER message:
// "n,[a=authzid],\x01auth=Bearer <token>\x01[k=v\x01...]\x01".
type oauthConv struct {
	v     *OAuthValidator
	user  string
	exp   time.Time
	token string // the validated token, for identity passthrough
}

func (o *oauthConv) Username() string { return o.user }

// Expiry is when the token expires: the session may not outlive it.
func (o *oauthConv) Expiry() time.Time { return o.exp }

func (o *oauthConv) Step(in []byte) ([]byte, bool, error) {
	gs2, rest, ok := bytes.Cut(in, []byte{1})
	if !ok || !bytes.HasPrefix(gs2, []byte("n,")) {
		return nil, false, errors.New("malformed OAUTHBEARER message")
	}
	var token string
	for _, kv := range bytes.Split(rest, []byte{1}) {
		if v, ok := bytes.CutPrefix(kv, []byte("auth=")); ok {
			t, ok := strings.CutPrefix(string(v), "Bearer ")
			if !ok {
				return nil, false, errors.New("malformed OAUTHBEARER auth value")
			}
			token = strings.TrimSpace(t)
		}
	}
	if token == "" {
		return nil, false, errors.New("OAUTHBEARER message without a token")
	}
	p, exp, err := o.v.Validate(token)
	if err != nil {
		// The reason goes to kproxy's log (never the token itself).
		return nil, false, &ErrAuthFailed{Mechanism: "OAUTHBEARER", Reason: err.Error()}
	}
	o.user, o.exp, o.token = p, exp, token
	return nil, true, nil
}
