package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
