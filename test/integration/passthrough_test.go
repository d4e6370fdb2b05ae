package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/kproxy/kproxy/secure"
)

// Identity passthrough against a real broker's authorizer: Kafka 3.9.2
// (KRaft, StandardAuthorizer, SASL_SSL) where kproxy's service user is a
// super user and alice may write and read topic A only. Through kproxy
// (identity: passthrough, alice authenticating to kproxy with PLAIN), alice
// produces to and consumes A, and producing to B gets the broker's own
// TOPIC_AUTHORIZATION_FAILED: the broker saw alice, not kproxy. Her
// password is in no log line. With identity: service the same produce to B
// succeeds (kproxy's super user), so the denial is passthrough's doing.
func TestPassthroughBrokerACLsRealKafka(t *testing.T) {
	const (
		servicePW = "kproxy-svc-pw-0d41"
		alicePW   = "alice-pw-77b3e9"
	)
	b := startSecureBrokerWith(t, secureBrokerOpts{user: "kproxy", pass: servicePW,
		plainUsers: map[string]string{"alice": alicePW}, authorizer: true, ports: lanePorts(t, 0)})
	topicA := fmt.Sprintf("pt-a-%d", time.Now().UnixNano())
	topicB := fmt.Sprintf("pt-b-%d", time.Now().UnixNano())
	b.createTopic(t, "kproxy", servicePW, topicA, 1)
	b.createTopic(t, "kproxy", servicePW, topicB, 1)
	b.allowUser(t, "kproxy", servicePW, "alice", topicA)

	dir := t.TempDir()
	users, err := secure.MarshalUsers(map[string]string{"alice": alicePW}, secure.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(usersFile, users, 0o600); err != nil {
		t.Fatal(err)
	}
	exe := buildKproxy(t, dir)
	t.Setenv("KPROXY_IT_SERVICE_PASSWORD", servicePW)
	// identity: service is the contrast: the broker then sees kproxy's
	// super user and lets alice's produce to B through.
	for _, identity := range []string{"passthrough", "service"} {
		t.Run(identity, func(t *testing.T) {
			listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			cfgPath := filepath.Join(dir, identity+".yaml")
			writeConfig(t, cfgPath, fmt.Sprintf(`
listeners:
  - name: sasl
    listen: %s
    sasl: { mechanisms: [PLAIN], users_file: %s }
state_dir: %s
clusters:
  source:
    bootstrap: [%s]
    tls: { ca_file: %s }
    sasl: { mechanism: SCRAM-SHA-512, username: kproxy, password_env: KPROXY_IT_SERVICE_PASSWORD }
    identity: %s
  target: { bootstrap: [%s] }
routes:
  default: source
`, listen, usersFile, filepath.Join(dir, identity+"-state"), b.addr, b.caFile, identity, env.target))
			_, logs := runKproxy(t, exe, cfgPath)

			alice, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.SASL(plain.Auth{User: "alice", Pass: alicePW}.AsMechanism()),
				kgo.ConsumeTopics(topicA), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RecordRetries(3))
			if err != nil {
				t.Fatal(err)
			}
			defer alice.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := alice.ProduceSync(ctx, &kgo.Record{Topic: topicA, Value: []byte("allowed")}).FirstErr(); err != nil {
				t.Fatalf("alice producing to %s (allowed by the broker's ACL): %v", topicA, err)
			}
			err = alice.ProduceSync(ctx, &kgo.Record{Topic: topicB, Value: []byte("denied")}).FirstErr()
			if identity == "service" {
				if err != nil {
					t.Fatalf("identity: service, alice producing to %s as kproxy's super user: %v", topicB, err)
				}
				return
			}
			if !errors.Is(err, kerr.TopicAuthorizationFailed) {
				t.Fatalf("alice producing to %s: %v, want the broker's TOPIC_AUTHORIZATION_FAILED", topicB, err)
			}
			for got := false; !got; {
				fs := alice.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("alice did not read back %s: %v", topicA, fs.Errors())
				}
				fs.EachRecord(func(r *kgo.Record) { got = got || string(r.Value) == "allowed" })
			}
			if strings.Contains(logs.String(), alicePW) || strings.Contains(logs.String(), servicePW) {
				t.Error("a password is in kproxy's log")
			}
		})
	}
}

// allowUser gives principal User:user Write, Read and Describe on topic,
// as the super user.
func (b *secureBroker) allowUser(t *testing.T, admin, pass, user, topic string) {
	t.Helper()
	cl := b.client(t, admin, pass)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acl := kadm.NewACLs().Allow("User:"+user).Topics(topic).
		Operations(kadm.OpWrite, kadm.OpRead, kadm.OpDescribe).ResourcePatternType(kadm.ACLPatternLiteral)
	res, err := kadm.NewClient(cl).CreateACLs(ctx, acl)
	if err != nil {
		t.Fatalf("creating ACLs: %v", err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("creating ACL %v: %v", r, r.Err)
		}
	}
}

// lanePorts are the i-th three ports for a test's own broker inside the
// lane's range when the test runs in a lane (/work/lane.sh exports the
// lane's source broker port, 40000+K*200+92: these are +8+3i..+10+3i of
// it, below the lane's target at +100), else free ports.
func lanePorts(t *testing.T, i int) [3]int {
	if p, err := strconv.Atoi(os.Getenv("KAFKA_SOURCE_BROKER_PORT")); err == nil && p > 0 {
		return [3]int{p + 8 + 3*i, p + 9 + 3*i, p + 10 + 3*i}
	}
	return [3]int{freePort(t), freePort(t), freePort(t)}
}
