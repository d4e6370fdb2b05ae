package secure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/kproxy/kproxy/config"
)

// firstMessage is what mech sends first: for PLAIN "\x00user\x00pass", for
// OAUTHBEARER the GS2 header with the token.
func firstMessage(t *testing.T, mech sasl.Mechanism) []byte {
	t.Helper()
	_, msg, err := mech.Authenticate(context.Background(), "broker")
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// An upstream password (or token) file rewritten on disk is used by the
// next authentication, with no restart; a file that disappears fails
// that authentication with the file's name and no secret.
func TestUpstreamPasswordFileIsReadAgainWhenItChanges(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("first-pw-19ab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mech, err := ClientMechanism(&config.ClientSASL{Mechanism: "PLAIN", Username: "kp", PasswordFile: pwFile})
	if err != nil {
		t.Fatal(err)
	}
	if msg := firstMessage(t, mech); !bytes.Equal(msg, []byte("\x00kp\x00first-pw-19ab")) {
		t.Fatalf("first authentication sends the wrong credential (%d bytes)", len(msg))
	}
	if err := os.WriteFile(pwFile, []byte("rotated-pw-77c0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := firstMessage(t, mech); !bytes.Equal(msg, []byte("\x00kp\x00rotated-pw-77c0")) {
		t.Fatal("after the file changed, the next authentication still sends the old password")
	}
	// SCRAM reads it again too (the client-first message carries only the
	// user, so check that a missing file now fails the authentication).
	scramMech, err := ClientMechanism(&config.ClientSASL{Mechanism: "SCRAM-SHA-512", Username: "kp", PasswordFile: pwFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(pwFile); err != nil {
		t.Fatal(err)
	}
	_, _, err = scramMech.Authenticate(context.Background(), "broker")
	if err == nil || !strings.Contains(err.Error(), pwFile) || strings.Contains(err.Error(), "rotated-pw") {
		t.Errorf("missing password file: %v, want an error naming the file and not the password", err)
	}
}

// What passthrough presents for each kind of client, and that a
// credential never prints its secret.
func TestPassthroughMechanisms(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "bob.pw")
	if err := os.WriteFile(pwFile, []byte("bob-upstream-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := NewPassthrough("source", map[string]config.ClientSASL{"bob": {Mechanism: "PLAIN", Username: "bob-up", PasswordFile: pwFile}})
	if err != nil {
		t.Fatal(err)
	}
	alice := &ClientCredential{mech: "PLAIN", user: "alice", pass: "alice-secret-pw"}
	m, err := p.Mechanism("alice", alice)
	if err != nil || !bytes.Equal(firstMessage(t, m), []byte("\x00alice\x00alice-secret-pw")) {
		t.Fatalf("PLAIN client: %v", err)
	}
	tok := &ClientCredential{mech: "OAUTHBEARER", user: "svc", token: "tok.en.sig"}
	if m, err = p.Mechanism("svc", tok); err != nil || !bytes.Contains(firstMessage(t, m), []byte("auth=Bearer tok.en.sig")) {
		t.Fatalf("OAUTHBEARER client: %v", err)
	}
	// A mapped principal uses its mapping, whatever it authenticated with.
	if m, err = p.Mechanism("bob", nil); err != nil || !bytes.Equal(firstMessage(t, m), []byte("\x00bob-up\x00bob-upstream-pw")) {
		t.Fatalf("mapped principal: %v", err)
	}
	var np *ErrNoPassthrough
	if _, err = p.Mechanism("carol", nil); !errors.As(err, &np) || !strings.Contains(err.Error(), "without SASL") {
		t.Errorf("unmapped client without SASL: %v", err)
	}
	if err = p.Check("carol", "SCRAM-SHA-256"); !errors.As(err, &np) || !strings.Contains(err.Error(), "SCRAM exchange never reveals the password") {
		t.Errorf("unmapped SCRAM client: %v", err)
	}
	if err = p.Check("bob", "SCRAM-SHA-256"); err != nil {
		t.Errorf("mapped SCRAM client: %v", err)
	}
	for _, s := range []string{fmt.Sprint(alice), fmt.Sprintf("%+v", alice), fmt.Sprintf("%#v", alice), fmt.Sprint(tok), fmt.Sprintf("%+v", *alice), fmt.Sprintf("%#v", *tok)} {
		if strings.Contains(s, "alice-secret-pw") || strings.Contains(s, "tok.en.sig") {
			t.Errorf("a credential prints its secret: %s", s)
		}
	}
	if !alice.Same(&ClientCredential{mech: "PLAIN", user: "alice", pass: "alice-secret-pw"}) || alice.Same(tok) || alice.Same(nil) {
		t.Error("Same")
	}
}
