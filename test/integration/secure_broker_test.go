package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/secure/securetest"
)

// secureBroker is a private single-node Kafka 3.9.2 (KRaft) with a SASL_SSL
// listener (SCRAM-SHA-512 users created at format time, PLAIN from JAAS), a
// throwaway CA and certificate made here with Go's crypto, started from the
// harness's cached broker jars.
type secureBroker struct {
	addr   string // SASL_SSL host:port
	caFile string
	proc   *os.Process // the broker's JVM (a test may pause it with SIGSTOP)
}

// secureBrokerOpts: user/pass is the SCRAM-SHA-512 and PLAIN user created
// at start (kproxy's service identity); plainUsers are further PLAIN
// users; authorizer turns on KRaft's StandardAuthorizer with user and
// ANONYMOUS (the plaintext inter-broker and controller listeners) as
// super users; ports, when set, are the SASL_SSL, internal and controller
// ports (a lane's range) instead of free ones.
type secureBrokerOpts struct {
	user, pass string
	plainUsers map[string]string
	authorizer bool
	ports      [3]int
}

func startSecureBrokerWith(t *testing.T, o secureBrokerOpts) *secureBroker {
	t.Helper()
	b := launchSecureBroker(t, o)
	b.waitUp(t)
	return b
}

// startSecureBrokers starts one broker per opts side by side (each JVM's
// start-up is most of the wait) and returns once every one listens.
func startSecureBrokers(t *testing.T, opts ...secureBrokerOpts) []*secureBroker {
	t.Helper()
	out := make([]*secureBroker, len(opts))
	for i, o := range opts {
		out[i] = launchSecureBroker(t, o)
	}
	for _, b := range out {
		b.waitUp(t)
	}
	return out
}

// launchSecureBroker formats and starts the broker; waitUp waits for it.
func launchSecureBroker(t *testing.T, o secureBrokerOpts) *secureBroker {
	t.Helper()
	user, pass := o.user, o.pass
	cache := os.Getenv("KPROXY_CACHE")
	if cache == "" {
		cache = filepath.Join(env.root, ".cache")
	}
	libs := filepath.Join(cache, "kafka", "broker-3.9.2", "libs")
	if _, err := os.Stat(libs); err != nil {
		t.Fatalf("Kafka 3.9.2 jars not in %s (test/kafka/kafka.sh fetch puts them there): %v", libs, err)
	}
	dir := t.TempDir()
	ca := securetest.NewCA(t, "secure-broker-ca")
	certPEM, keyPEM := ca.Issue(t, pkix.Name{CommonName: "localhost"})
	// Kafka's PEM key store wants a PKCS#8 key next to the chain
	// (securetest issues PKCS#8 keys; an SEC 1 "EC PRIVATE KEY" is
	// converted).
	block, _ := pem.Decode(keyPEM)
	p8 := block.Bytes
	if block.Type != "PRIVATE KEY" {
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if p8, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
			t.Fatal(err)
		}
	}
	keystore := filepath.Join(dir, "keystore.pem")
	ks := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), certPEM...)
	if err := os.WriteFile(keystore, ks, 0o600); err != nil {
		t.Fatal(err)
	}
	b := &secureBroker{caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(b.caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	sport, iport, cport := o.ports[0], o.ports[1], o.ports[2]
	if sport == 0 {
		sport, iport, cport = freePort(t), freePort(t), freePort(t)
	}
	plainJAAS := fmt.Sprintf("user_%s=%q", user, pass)
	for u, p := range o.plainUsers {
		plainJAAS += fmt.Sprintf(" user_%s=%q", u, p)
	}
	extra := ""
	if o.authorizer {
		extra = fmt.Sprintf("authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\nsuper.users=User:%s;User:ANONYMOUS\n", user)
	}
	b.addr = fmt.Sprintf("127.0.0.1:%d", sport)
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[3]d
listeners=SASL_SSL://127.0.0.1:%[1]d,INTERNAL://127.0.0.1:%[2]d,CONTROLLER://127.0.0.1:%[3]d
advertised.listeners=SASL_SSL://127.0.0.1:%[1]d,INTERNAL://127.0.0.1:%[2]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required %[8]s;
ssl.keystore.type=PEM
ssl.keystore.location=%[6]s
log.dirs=%[7]s/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=16777216
%[9]s`, sport, iport, cport, user, pass, keystore, dir, plainJAAS, extra)
	propsFile := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(propsFile, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := libs + "/*"
	// A cluster id is 16 random bytes in base64url; one that starts with
	// '-' would read as an option, so pass it with '='.
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	format := exec.Command("java", "-Xmx256m", "-XX:+UseSerialGC", "-cp", cp, "kafka.tools.StorageTool", "format",
		"--cluster-id="+base64.RawURLEncoding.EncodeToString(id), "-c", propsFile,
		"--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", user, pass))
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("formatting the secured broker: %v\n%s", err, out)
	}
	logFile, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	broker := exec.Command("java", "-Xms128m", "-Xmx384m", "-XX:+UseG1GC", "-Djava.awt.headless=true", "-cp", cp, "kafka.Kafka", propsFile)
	broker.Stdout, broker.Stderr = logFile, logFile
	broker.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	b.proc = broker.Process
	t.Cleanup(func() {
		// SIGCONT first: a test that paused the broker and failed
		// before resuming it would otherwise leave SIGTERM pending.
		_ = broker.Process.Signal(syscall.SIGCONT)
		_ = broker.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = broker.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = broker.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logFile.Name())
			t.Logf("secured broker %s console (tail):\n%s", b.addr, tail(string(out), 4000))
		}
	})
	return b
}

func (b *secureBroker) waitUp(t *testing.T) {
	t.Helper()
	if !poll(180*time.Second, 250*time.Millisecond, func() bool {
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("the secured broker %s did not open its SASL_SSL port in 180 s", b.addr)
	}
}

// kproxy reaches the harness source's SASL_SSL listener (test/kafka/kafka.sh
// with KAFKA_SECURE=1) with its own SCRAM-SHA-512 (and then PLAIN)
// credential from an environment variable: a plaintext client produces and
// consumes through it, the replicator copies the secured source to the
// (plaintext) target, and the password appears in no output. Both clusters
// over SASL_SSL, with password files, are TestSecuredClientMatrix and
// TestSecuredCutoverAndRollbackUnderLoad.
func TestUpstreamSASLSSLRealBroker(t *testing.T) {
	h := needHarnessSecure(t)
	pass := h.pass
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	t.Setenv("KPROXY_IT_SOURCE_PASSWORD", pass)
	for _, mech := range []string{"SCRAM-SHA-512", "PLAIN"} {
		t.Run(mech, func(t *testing.T) {
			// The topic exists before kproxy starts: the replicator
			// resolves replicate: when it starts.
			topic := fmt.Sprintf("secure-up-%s-%d", strings.ToLower(mech), time.Now().UnixNano())
			replCreateTopic(t, topic, 2, nil)
			listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			cfgPath := filepath.Join(dir, mech+".yaml")
			writeConfig(t, cfgPath, fmt.Sprintf(`
listen: %s
admin: %s
state_dir: %s
clusters:
  source:
    bootstrap: [%s]
    tls: { ca_file: %s }
    sasl: { mechanism: %s, username: kproxy, password_env: KPROXY_IT_SOURCE_PASSWORD }
  target: { bootstrap: [%s] }
routes:
  default: source
replicate: [%s]
`, listen, admin, filepath.Join(dir, mech+"-state"), h.source, h.caFile, mech, env.target, topic))
			_, logs := runKproxy(t, exe, cfgPath)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			const n = 100
			for i := 0; i < n; i++ {
				cl.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte(fmt.Sprint(i))}, func(_ *kgo.Record, err error) {
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
			// The replicator reads the secured source with the same
			// settings: the records reach the (plaintext) target.
			tcl, err := kgo.NewClient(kgo.SeedBrokers(env.target))
			if err != nil {
				t.Fatal(err)
			}
			defer tcl.Close()
			adm := kadm.NewClient(tcl)
			waitFor(t, "the replicator to copy the secured source's records", func() bool {
				ends, err := adm.ListEndOffsets(ctx, topic)
				if err != nil {
					return false
				}
				var total int64
				ends.Each(func(o kadm.ListedOffset) {
					if o.Err == nil {
						total += o.Offset
					}
				})
				return total == n
			})
			if strings.Contains(logs.String(), pass) {
				t.Error("the upstream password is in kproxy's log")
			}
		})
	}
}

// createTopic creates topic on the secured broker directly, over TLS with
// SCRAM-SHA-512.
func (b *secureBroker) createTopic(t *testing.T, user, pass, topic string, partitions int32) {
	t.Helper()
	cl := b.client(t, user, pass)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("creating %s on the secured broker: %v %v", topic, err, resp.Err)
	}
}

// client is a client of the secured broker itself, over TLS with
// SCRAM-SHA-512 as user (for set-up done around kproxy), with opts added.
func (b *secureBroker) client(t *testing.T, user, pass string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	caPEM, err := os.ReadFile(b.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.addr), kgo.DialTLSConfig(&tls.Config{RootCAs: pool}),
		kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
