package control

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
)

// The freeze against real Kafka (test/kafka/kafka.sh; skipped without
// it), over the plaintext listener, the other cluster's and, when the
// harness has one, the SASL_SSL listener (the freeze connection dials with the cluster's TLS
// and SASL): the four pipelined requests come back in order, describe an
// idempotent producer's last sequence at the ends, and see an open
// transaction as stable ends below the ends.
func TestFreezeOnRealKafka(t *testing.T) {
	plain := os.Getenv("KPROXY_SOURCE_BOOTSTRAP")
	if plain == "" {
		t.Skip("no Kafka harness (bash test/kafka/kafka.sh up, then its env)")
	}
	listeners := map[string]string{"plaintext": fmt.Sprintf("{bootstrap: [%s]}", plain)}
	if tgt := os.Getenv("KPROXY_TARGET_BOOTSTRAP"); tgt != "" {
		// The harness's other cluster (Kafka 4.x), the home a rollback
		// freezes: newer ListOffsets versions.
		listeners["other_cluster"] = fmt.Sprintf("{bootstrap: [%s]}", tgt)
	}
	if sec, dir := os.Getenv("KPROXY_SOURCE_SECURE_BOOTSTRAP"), os.Getenv("KPROXY_KAFKA_SECURE_DIR"); sec != "" && dir != "" {
		listeners["sasl_ssl"] = fmt.Sprintf("{bootstrap: [%s], tls: {ca_file: %s}, sasl: {mechanism: SCRAM-SHA-512, username: kproxy, password_file: %s}}",
			sec, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "kproxy.password"))
	}
	for name, cluster := range listeners {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg, err := config.Parse(fmt.Appendf(nil, "listen: 127.0.0.1:1\nclusters:\n  source: %s\n  target: {bootstrap: [127.0.0.1:3]}\nroutes:\n  default: source\n", cluster))
			if err != nil {
				t.Fatal(err)
			}
			admins := &clusterAdmins{}
			t.Cleanup(admins.close)
			ao := adminOffsets{admins: admins, cfg: cfg, leaders: &endLeaders{}, freeze: &freezeConns{}}
			t.Cleanup(ao.freeze.close)
			adm, err := admins.get(cfg, proxy.Source)
			if err != nil {
				t.Fatal(err)
			}
			topic := fmt.Sprintf("freeze-%s-%d", name, time.Now().UnixNano())
			if _, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
			raw, _ := admins.client(cfg, proxy.Source)
			// Producers with the admin client's options: its seeds, TLS
			// and SASL.
			opts := append(raw.Opts(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))
			produce := func(extra ...kgo.Opt) *kgo.Client {
				t.Helper()
				cl, err := kgo.NewClient(append(opts, extra...)...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(cl.Close)
				return cl
			}
			idem := produce()
			for i := range 10 {
				for p := range int32(3) {
					if err := idem.ProduceSync(ctx, &kgo.Record{Partition: p, Value: fmt.Append(nil, i)}).FirstErr(); err != nil {
						t.Fatal(err)
					}
				}
			}
			id, _, err := idem.ProducerID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ao.Warm(ctx, proxy.Source, []string{topic})
			fh, err := ao.Freeze(ctx, proxy.Source, topic)
			if err != nil {
				t.Fatal(err)
			}
			for p := range int32(3) {
				if fh.ends[p] != 10 || fh.stable[p] != 10 || fh.after[p] != 10 {
					t.Fatalf("partition %d: ends %d, stable %d, again %d; want 10 each", p, fh.ends[p], fh.stable[p], fh.after[p])
				}
				found := false
				for _, s := range fh.producers[p] {
					found = found || (s.ID == id && s.LastSequence == 9)
				}
				if !found {
					t.Fatalf("partition %d: producers %v; want producer %d at last sequence 9", p, fh.producers[p], id)
				}
			}

			txn := produce(kgo.TransactionalID(topic))
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := txn.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("open")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if fh, err = ao.Freeze(ctx, proxy.Source, topic); err != nil {
				t.Fatal(err)
			}
			if fh.ends[0] != 11 || fh.stable[0] != 10 {
				t.Fatalf("with a transaction open: ends %d, stable %d; want 11 and 10", fh.ends[0], fh.stable[0])
			}
			if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
				t.Fatal(err)
			}
		})
	}
}
