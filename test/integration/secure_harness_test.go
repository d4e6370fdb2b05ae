package integration

// What the secured tests share: the harness's SASL_SSL listeners
// (test/kafka/kafka.sh with KAFKA_SECURE=1), a kproxy binary with a TLS+SASL
// listener in front of them, each client's TLS/SASL settings, and the check
// that no secret reached any output of a run.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/secure"
	"github.com/kproxy/kproxy/secure/securetest"
)

// harnessSecure is the harness's SASL_SSL side: both clusters' listeners,
// the CA that signed them and the file with user kproxy's password.
type harnessSecure struct {
	source, target string
	caFile         string
	user, passFile string
	pass           string
}

// needHarnessSecure fails (these tests never skip) when the harness was
// started without KAFKA_SECURE=1.
func needHarnessSecure(t *testing.T) harnessSecure {
	t.Helper()
	h := harnessSecure{
		source: os.Getenv("KPROXY_SOURCE_SECURE_BOOTSTRAP"),
		target: os.Getenv("KPROXY_TARGET_SECURE_BOOTSTRAP"),
		user:   "kproxy",
	}
	dir := os.Getenv("KPROXY_KAFKA_SECURE_DIR")
	if h.source == "" || h.target == "" || dir == "" {
		t.Fatal("the harness has no SASL_SSL listeners: start it with KAFKA_SECURE=1 bash test/kafka/kafka.sh up (make test does), then eval \"$(bash test/kafka/kafka.sh env)\"")
	}
	h.caFile, h.passFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "kproxy.password")
	b, err := os.ReadFile(h.passFile)
	if err != nil {
		t.Fatal(err)
	}
	h.pass = strings.TrimSpace(string(b))
	return h
}

// securedKproxy is the kproxy binary with a TLS listener that requires SASL
// (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN) and a loopback plaintext one, in
// front of both clusters' SASL_SSL listeners (source with SCRAM-SHA-512,
// target with SCRAM-SHA-256: both upstream mechanisms in one run).
type securedKproxy struct {
	exe, dir, cfgPath     string
	listen, plain, admin  string // TLS+SASL, plaintext, admin HTTP
	ca                    *securetest.CA
	caFile                string
	certFile, keyFile     string
	user, pass, wrong     string // the client credential, and a wrong password
	passFile, wrongFile   string
	up                    harnessSecure
	logs                  *lockedBuf
	cmd                   *exec.Cmd
	outputs               outputLog
	routesYAML, extraYAML string
}

// outputLog collects every /status, /metrics and `kproxy status` answer of
// a run, for the no-secret check.
type outputLog struct {
	mu  sync.Mutex
	out []string
}

func (o *outputLog) add(name, body string) {
	o.mu.Lock()
	o.out = append(o.out, name+"\x00"+body)
	o.mu.Unlock()
}

type securedOptions struct {
	routes string // the routes: block (indented YAML under "routes:")
	extra  string // more top-level YAML (replicate:, groups:, cutover:, log:)
	user   string // the client's user (default "orders-app")
}

// newSecuredKproxy writes the certificates, users file and config; start
// runs it.
func newSecuredKproxy(t *testing.T, opt securedOptions) *securedKproxy {
	t.Helper()
	up := needHarnessSecure(t)
	dir := t.TempDir()
	k := &securedKproxy{
		dir: dir, up: up, exe: buildKproxy(t, dir),
		user:  "orders-app",
		pass:  fmt.Sprintf("client-pw-%d", time.Now().UnixNano()),
		wrong: fmt.Sprintf("wrong-pw-%d", time.Now().UnixNano()),
	}
	if opt.user != "" {
		k.user = opt.user
	}
	k.ca = securetest.NewCA(t, "kproxy-it-ca")
	k.certFile, k.keyFile, k.caFile = k.ca.WriteFiles(t, dir, "kproxy", pkix.Name{CommonName: "localhost"})
	users, err := secure.MarshalUsers(map[string]string{k.user: k.pass}, secure.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	k.passFile, k.wrongFile = filepath.Join(dir, "client.password"), filepath.Join(dir, "wrong.password")
	for f, b := range map[string][]byte{filepath.Join(dir, "users.yaml"): users, k.passFile: []byte(k.pass), k.wrongFile: []byte(k.wrong)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k.listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	k.plain = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	k.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	k.cfgPath = filepath.Join(dir, "kproxy.yaml")
	k.routesYAML, k.extraYAML = opt.routes, opt.extra
	if k.routesYAML == "" {
		k.routesYAML = "  default: source\n"
	}
	k.writeConfig(t, k.routesYAML, k.extraYAML)
	return k
}

// writeConfig (re)writes the config with these routes and extra keys; the
// security blocks stay the same.
func (k *securedKproxy) writeConfig(t *testing.T, routes, extra string) {
	t.Helper()
	if !strings.Contains(extra, "log:") {
		extra += "log: { level: trace }\n"
	}
	writeConfig(t, k.cfgPath, fmt.Sprintf(`listen: %s
listeners:
  - name: sasl_ssl
    listen: %s
    tls: { cert_file: %s, key_file: %s, min_version: "1.2" }
    sasl: { users_file: %s, mechanisms: [SCRAM-SHA-256, SCRAM-SHA-512, PLAIN] }
admin: %s
state_dir: %s
clusters:
  source:
    bootstrap: [%s]
    tls: { ca_file: %s }
    sasl: { mechanism: SCRAM-SHA-512, username: %s, password_file: %s }
  target:
    bootstrap: [%s]
    tls: { ca_file: %s }
    sasl: { mechanism: SCRAM-SHA-256, username: %s, password_file: %s }
routes:
%s%s`, k.plain, k.listen, k.certFile, k.keyFile, filepath.Join(k.dir, "users.yaml"), k.admin, filepath.Join(k.dir, "state"),
		k.up.source, k.up.caFile, k.up.user, k.up.passFile,
		k.up.target, k.up.caFile, k.up.user, k.up.passFile,
		routes, extra))
}

func (k *securedKproxy) start(t *testing.T) {
	t.Helper()
	k.cmd, k.logs = runKproxy(t, k.exe, k.cfgPath)
}

// franz is franz-go's TLS and SASL options for this kproxy's listener.
func (k *securedKproxy) franz(t *testing.T, mech string) []kgo.Opt {
	t.Helper()
	opts := []kgo.Opt{kgo.DialTLSConfig(k.ca.ClientTLS(t, nil, nil))}
	switch mech {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: k.user, Pass: k.pass}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.user, Pass: k.pass}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.user, Pass: k.pass}.AsSha512Mechanism()))
	default:
		t.Fatalf("unknown mechanism %s", mech)
	}
	return opts
}

// gomatrixArgs are the gomatrix flags (sarama, franz) for mech; wrong picks
// the wrong password.
func (k *securedKproxy) gomatrixArgs(mech string, wrong bool) []string {
	return []string{"-tls-ca", k.caFile, "-sasl", mech, "-sasl-user", k.user, "-sasl-password-file", k.pwFile(wrong)}
}

// kafkajsArgs are driver.js's flags for mech.
func (k *securedKproxy) kafkajsArgs(mech string, wrong bool) []string {
	return []string{"--tls-ca", k.caFile, "--sasl", mech, "--sasl-user", k.user, "--sasl-password-file", k.pwFile(wrong)}
}

func (k *securedKproxy) pwFile(wrong bool) string {
	if wrong {
		return k.wrongFile
	}
	return k.passFile
}

func (k *securedKproxy) password(wrong bool) string {
	if wrong {
		return k.wrong
	}
	return k.pass
}

// rdkConfig writes a librdkafka config file (rdk --config, kcat -F) for
// mech and returns its path: the password stays out of argv.
func (k *securedKproxy) rdkConfig(t *testing.T, mech string, wrong bool) string {
	t.Helper()
	body := fmt.Sprintf("security.protocol=SASL_SSL\nssl.ca.location=%s\nsasl.mechanisms=%s\nsasl.username=%s\nsasl.password=%s\n",
		k.caFile, mech, k.user, k.password(wrong))
	return writeUniqueConfig(t, k.dir, fmt.Sprintf("rdk-%s-%v-*.conf", mech, wrong), body)
}

// writeUniqueConfig writes body to a new file named after pattern in dir.
// Each call gets its own file: the matrix's rounds run at once, and a
// shared name was rewritten (truncated, then written) while another
// round's librdkafka read it. A CI run's librdkafka producer read it
// empty, connected without TLS and retried until it was killed.
func writeUniqueConfig(t *testing.T, dir, pattern, body string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, pattern) // mode 0600
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// upstreamRdkConfig is rdkConfig for the harness's brokers (user kproxy).
func (k *securedKproxy) upstreamRdkConfig(t *testing.T, mech string) string {
	t.Helper()
	body := fmt.Sprintf("security.protocol=SASL_SSL\nssl.ca.location=%s\nsasl.mechanisms=%s\nsasl.username=%s\nsasl.password=%s\n",
		k.up.caFile, mech, k.up.user, k.up.pass)
	return writeUniqueConfig(t, k.dir, "rdk-upstream-"+mech+"-*.conf", body)
}

// javaConfig writes a Java client properties file (VerifiableProducer and
// VerifiableConsumer --command-config) for mech, with extra lines appended.
func (k *securedKproxy) javaConfig(t *testing.T, name, mech string, wrong bool, extra string) string {
	t.Helper()
	module := "org.apache.kafka.common.security.scram.ScramLoginModule"
	if mech == "PLAIN" {
		module = "org.apache.kafka.common.security.plain.PlainLoginModule"
	}
	f := filepath.Join(k.dir, name+".properties")
	body := fmt.Sprintf("security.protocol=SASL_SSL\nssl.truststore.type=PEM\nssl.truststore.location=%s\nsasl.mechanism=%s\nsasl.jaas.config=%s required username=\"%s\" password=\"%s\";\n%s",
		k.caFile, mech, module, k.user, k.password(wrong), extra)
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// get fetches an admin HTTP path and records the answer.
func (k *securedKproxy) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + k.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	k.outputs.add(path, string(b))
	return string(b)
}

// statusCLI runs `kproxy status` and records its output.
func (k *securedKproxy) statusCLI(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(k.exe, "status", "-admin", k.admin).CombinedOutput()
	if err != nil {
		t.Fatalf("kproxy status: %v\n%s", err, out)
	}
	k.outputs.add("kproxy status", string(out))
	return string(out)
}

// assertNoSecrets checks kproxy's log and every recorded /status, /metrics
// and `kproxy status` output for the client's passwords (right and wrong),
// the brokers' password and the listener's private key.
func (k *securedKproxy) assertNoSecrets(t *testing.T) {
	t.Helper()
	k.get(t, "/status")
	k.get(t, "/metrics")
	k.statusCLI(t)
	secrets := map[string]string{
		"the client's password":      k.pass,
		"the wrong password":         k.wrong,
		"the brokers' password":      k.up.pass,
		"the listener's private key": keyMaterial(t, k.keyFile),
		"the brokers' private key":   keyMaterial(t, filepath.Join(filepath.Dir(k.up.caFile), "broker.key")),
	}
	outputs := map[string]string{"kproxy log": k.logs.String()}
	k.outputs.mu.Lock()
	for i, o := range k.outputs.out {
		name, body, _ := strings.Cut(o, "\x00")
		outputs[fmt.Sprintf("%s #%d", name, i)] = body
	}
	k.outputs.mu.Unlock()
	for oname, out := range outputs {
		for sname, s := range secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("%s contains %s", oname, sname)
			}
		}
	}
	t.Logf("no secret in %d outputs (kproxy log %d bytes at level %s)", len(outputs), len(k.logs.String()), logLevelOf(k.extraYAML))
}

func logLevelOf(extra string) string {
	if i := strings.Index(extra, "level:"); i >= 0 {
		return strings.Fields(extra[i+len("level:"):])[0]
	}
	return "trace"
}

// keyMaterial is a distinctive piece of a PEM private key's body: the
// middle 40 base64 characters, which no log line can hold by chance.
func keyMaterial(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("no PEM block in %s", file)
	}
	body := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "X", Bytes: block.Bytes})), "\n", "")
	body = strings.TrimSuffix(strings.TrimPrefix(body, "-----BEGIN X-----"), "-----END X-----")
	mid := len(body) / 2
	return body[mid-20 : mid+20]
}

// servedCert is the certificate kproxy's TLS listener presents to a new
// connection.
func servedCert(t *testing.T, addr string, pool *x509.CertPool) *x509.Certificate {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0]
}
