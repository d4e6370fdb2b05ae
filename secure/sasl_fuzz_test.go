package secure

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/xdg-go/scram"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure/securetest"
)

var fuzzMechs = []string{"PLAIN", config.MechScramSHA256, config.MechScramSHA512, "OAUTHBEARER"}

// FuzzSASLServer feeds the server side of every mechanism kproxy offers
// (PLAIN, SCRAM-SHA-256/512 client-first and client-final, the OAUTHBEARER
// initial response) fuzzed client messages, against a users file with one
// user and a JWKS with one key. No message panics, and none authenticates
// unless it is exactly a valid credential: PLAIN only with alice's
// password, OAUTHBEARER only with the token the issuer signed, SCRAM
// never (a fuzzed client-final cannot hold the proof for the server's
// random nonce). The same conversations authenticate a real client first,
// so the refusals are not those of a broken setup.
func FuzzSASLServer(f *testing.F) {
	dir := f.TempDir()
	usersPath := filepath.Join(dir, "users.yaml")
	users, err := MarshalUsers(map[string]string{"alice": "pw-alice-123"}, MinIterations)
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(usersPath, users, 0o600); err != nil {
		f.Fatal(err)
	}
	store, err := OpenUserStore(usersPath, hclog.NewNullLogger())
	if err != nil {
		f.Fatal(err)
	}
	iss := securetest.NewIssuer(f, "k1")
	jwksPath := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksPath, iss.JWKS(f), 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := NewOAuthValidator(jwksPath, "https://idp", "kafka", 0, "", hclog.NewNullLogger())
	if err != nil {
		f.Fatal(err)
	}
	a := NewAuthenticator(fuzzMechs, store).WithOAuth(v)
	token := iss.Token(f, "svc-a", "https://idp", "kafka", 2*time.Hour)
	validOAuth := []byte("n,,\x01auth=Bearer " + token + "\x01\x01")
	validPlain := [][]byte{[]byte("\x00alice\x00pw-alice-123"), []byte("alice\x00alice\x00pw-alice-123")}

	// The real clients authenticate.
	for _, mech := range fuzzMechs {
		conv, err := a.Start(mech)
		if err != nil {
			f.Fatal(err)
		}
		var done bool
		switch mech {
		case "PLAIN":
			_, done, err = conv.Step(validPlain[0])
		case "OAUTHBEARER":
			_, done, err = conv.Step(validOAuth)
		default:
			h := scram.SHA256
			if mech == config.MechScramSHA512 {
				h = scram.SHA512
			}
			cl, _ := h.NewClient("alice", "pw-alice-123", "")
			cc := cl.NewConversation()
			first, _ := cc.Step("")
			f.Add(uint8(0), []byte(first), []byte("c=biws,r=x,p=AAAA"))
			out, _, err1 := conv.Step([]byte(first))
			final, err2 := cc.Step(string(out))
			if err1 != nil || err2 != nil {
				f.Fatalf("%s: %v %v", mech, err1, err2)
			}
			f.Add(uint8(1), []byte(first), []byte(final))
			_, done, err = conv.Step([]byte(final))
		}
		if err != nil || !done {
			f.Fatalf("%s: a valid client did not authenticate: done %v, %v", mech, done, err)
		}
	}
	f.Add(uint8(0), validPlain[0], []byte{})
	f.Add(uint8(0), []byte("bob\x00alice\x00pw-alice-123"), []byte{})
	f.Add(uint8(3), validOAuth, []byte{})
	f.Add(uint8(3), []byte("n,a=alice,\x01auth=Bearer not.a.jwt\x01\x01"), []byte{})
	f.Add(uint8(2), []byte("n,,n=alice,r=abc"), []byte("c=biws,r=abc,p=dGVzdA=="))
	f.Add(uint8(1), []byte("y,a=bob,n=al=2Cice,r=\xff"), []byte(""))

	f.Fuzz(func(t *testing.T, m uint8, first, final []byte) {
		mech := fuzzMechs[int(m)%len(fuzzMechs)]
		conv, err := a.Start(mech)
		if err != nil {
			t.Fatal(err)
		}
		out, done, err := conv.Step(first)
		if done && err != nil {
			t.Fatalf("%s: done with an error: %v", mech, err)
		}
		switch mech {
		case "PLAIN":
			valid := bytes.Equal(first, validPlain[0]) || bytes.Equal(first, validPlain[1])
			if done != valid {
				t.Fatalf("PLAIN %q: authenticated %v, valid %v", first, done, valid)
			}
			if done && conv.Username() != "alice" {
				t.Fatalf("PLAIN authenticated as %q", conv.Username())
			}
		case "OAUTHBEARER":
			if done && (!bytes.Contains(first, []byte(token)) || conv.Username() != "svc-a") {
				t.Fatalf("OAUTHBEARER %q authenticated as %q without the signed token", first, conv.Username())
			}
			if bytes.Equal(first, validOAuth) && !done {
				t.Fatalf("OAUTHBEARER: the signed token was refused: %v", err)
			}
		default:
			if done {
				t.Fatalf("%s: the client-first message %q alone authenticated", mech, first)
			}
			if err != nil {
				return
			}
			// server-first: the client's nonce extended, the salt, the count.
			if s := string(out); !strings.HasPrefix(s, "r=") || !strings.Contains(s, ",s=") || !strings.Contains(s, ",i=") {
				t.Fatalf("%s: server-first %q", mech, s)
			}
			if _, done, err = conv.Step(final); done || err == nil {
				t.Fatalf("%s: a fuzzed client-final %q: done %v, err %v", mech, final, done, err)
			}
		}
	})
}
