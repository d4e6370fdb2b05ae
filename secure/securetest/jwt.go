package securetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer is a throwaway token issuer: an EC P-256 key and its JWKS.
type Issuer struct {
	Kid string
	key *ecdsa.PrivateKey
}

// NewIssuer makes an issuer whose key id is kid.
func NewIssuer(t testing.TB, kid string) *Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{Kid: kid, key: key}
}

// JWKS is the issuer's public key as a JWKS document.
func (i *Issuer) JWKS(t testing.TB) []byte {
	t.Helper()
	pt, err := i.key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": i.Kid, "use": "sig", "alg": "ES256",
		"x": base64.RawURLEncoding.EncodeToString(pt[1:33]),
		"y": base64.RawURLEncoding.EncodeToString(pt[33:]),
	}}}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Token signs a token for sub, issued by iss for aud, expiring after ttl
// (negative: already expired).
func (i *Issuer) Token(t testing.TB, sub, iss, aud string, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"sub": sub, "iss": iss, "aud": aud, "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	})
	tok.Header["kid"] = i.Kid
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
