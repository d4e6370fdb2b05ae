package integration

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

// franz-go produces and consumes through the real kproxy binary over TLS
// with SASL SCRAM-SHA-512 and PLAIN, against the real clusters; a wrong
// password is refused; and no password appears in kproxy's log, /status or
// `kproxy status` output of the run.
func TestSecuredClientsThroughKproxy(t *testing.T) {
	const (
		pass  = "integration-pw-5e0b7c2a"
		wrong = "integration-wrong-91f3d4"
	)
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	ca := securetest.NewCA(t, "kproxy-test-ca")
	certFile, keyFile, _ := ca.WriteFiles(t, dir, "kproxy", pkix.Name{CommonName: "localhost"})
	users, err := secure.MarshalUsers(map[string]string{"orders-app": pass}, secure.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(usersFile, users, 0o600); err != nil {
		t.Fatal(err)
	}
	secured := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	plainListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(`
listen: %s
listeners:
  - name: sasl_ssl
    listen: %s
    tls: { cert_file: %s, key_file: %s, min_version: "1.2" }
    sasl: { users_file: %s, mechanisms: [SCRAM-SHA-512, PLAIN], max_reauth: 10m }
admin: %s
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
  topics:
    sec-target-*: target
log: { level: debug }
`, plainListen, secured, certFile, keyFile, usersFile, admin, filepath.Join(dir, "state"), env.source, env.target))
	_, logs := runKproxy(t, exe, cfgPath)

	for _, tc := range []struct {
		mech  sasl.Mechanism
		topic string
	}{
		{scram.Auth{User: "orders-app", Pass: pass}.AsSha512Mechanism(), fmt.Sprintf("sec-source-%d", time.Now().UnixNano())},
		{plain.Auth{User: "orders-app", Pass: pass}.AsMechanism(), fmt.Sprintf("sec-target-%d", time.Now().UnixNano())},
	} {
		t.Run(tc.mech.Name(), func(t *testing.T) {
			createTopic(t, plainListen, tc.topic, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cl, err := kgo.NewClient(kgo.SeedBrokers(secured), kgo.DialTLSConfig(ca.ClientTLS(t, nil, nil)), kgo.SASL(tc.mech),
				kgo.ConsumeTopics(tc.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			const n = 200
			for i := 0; i < n; i++ {
				cl.Produce(ctx, &kgo.Record{Topic: tc.topic, Value: []byte(fmt.Sprint(i))}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Errorf("produce: %v", err)
					}
				})
			}
			if err := cl.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for len(seen) < n {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("consumed %d of %d: %v", len(seen), n, fs.Errors())
				}
				fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
			}
		})
	}

	bad, err := kgo.NewClient(kgo.SeedBrokers(secured), kgo.DialTLSConfig(ca.ClientTLS(t, nil, nil)),
		kgo.SASL(scram.Auth{User: "orders-app", Pass: wrong}.AsSha512Mechanism()), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bad.Ping(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("wrong password: got %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	bad.Close()

	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	statusCLI, err := exec.Command(exe, "status", "-admin", admin).CombinedOutput()
	if err != nil {
		t.Fatalf("kproxy status: %v\n%s", err, statusCLI)
	}
	waitFor(t, "the failed authentication in the log", func() bool { return strings.Contains(logs.String(), "SASL authentication failed") })
	for name, out := range map[string]string{"log": logs.String(), "/status": string(status), "kproxy status": string(statusCLI)} {
		for _, secret := range []string{pass, wrong} {
			if strings.Contains(out, secret) {
				t.Errorf("%s contains a password", name)
			}
		}
	}
	if !strings.Contains(logs.String(), "principal=orders-app") {
		t.Errorf("authentications not logged with the principal")
	}
}
