package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/test/checker"
)

// driver runs one client's produce and consume through a bootstrap address.
type driver struct {
	name    string
	produce func(t *testing.T, boot, topic string, run, start, count int) []byte
	consume func(t *testing.T, boot, topic, group string, count int) []byte
}

// runID keeps topic and group names unique across runs against one cluster.
var runID = time.Now().Unix() % 100000

func bin(rel string) string { return filepath.Join(env.root, rel) }

// run executes a driver command, returning stdout; stderr is kept for the
// failure message.
func run(t *testing.T, timeout time.Duration, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KPROXY_TOOLS_CP="+env.toolsCP)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstderr (tail):\n%s", name, strings.Join(args, " "), err, tail(errb.String(), 3000))
	}
	return out.Bytes()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var drivers = []driver{
	{
		name: "franz-go",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "produce", "-client", "franz", "-bootstrap", boot, "-topic", topic, "-count", fmt.Sprint(count), "-start", fmt.Sprint(start), "-run", fmt.Sprint(run_), "-idempotent")
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "consume", "-client", "franz", "-bootstrap", boot, "-topic", topic, "-group", group, "-count", fmt.Sprint(count), "-timeout", "60")
		},
	},
	{
		name: "franz-go-txn",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "produce", "-client", "franz", "-bootstrap", boot, "-topic", topic, "-count", fmt.Sprint(count), "-start", fmt.Sprint(start), "-run", fmt.Sprint(run_), "-transactional", topic+"-txn", "-txn-size", "50")
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "consume", "-client", "franz", "-bootstrap", boot, "-topic", topic, "-group", group, "-count", fmt.Sprint(count), "-timeout", "60")
		},
	},
	{
		name: "librdkafka-txn",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/rdk"), "produce", "--bootstrap", boot, "--topic", topic, "--count", fmt.Sprint(count), "--start", fmt.Sprint(start), "--run", fmt.Sprint(run_), "--transactional", topic+"-txn", "--txn-size", "50")
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/rdk"), "consume", "--bootstrap", boot, "--topic", topic, "--group", group, "--count", fmt.Sprint(count), "--timeout", "60")
		},
	},
	{
		name: "sarama",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "produce", "-client", "sarama", "-bootstrap", boot, "-topic", topic, "-count", fmt.Sprint(count), "-start", fmt.Sprint(start), "-run", fmt.Sprint(run_), "-idempotent")
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "consume", "-client", "sarama", "-bootstrap", boot, "-topic", topic, "-group", group, "-count", fmt.Sprint(count), "-timeout", "60")
		},
	},
	{
		name: "kafka-go",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "produce", "-client", "kafkago", "-bootstrap", boot, "-topic", topic, "-count", fmt.Sprint(count), "-start", fmt.Sprint(start), "-run", fmt.Sprint(run_))
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/gomatrix"), "consume", "-client", "kafkago", "-bootstrap", boot, "-topic", topic, "-group", group, "-count", fmt.Sprint(count), "-timeout", "60")
		},
	},
	{
		name: "librdkafka",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/rdk"), "produce", "--bootstrap", boot, "--topic", topic, "--count", fmt.Sprint(count), "--start", fmt.Sprint(start), "--run", fmt.Sprint(run_), "--idempotent")
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, bin("test/clients/bin/rdk"), "consume", "--bootstrap", boot, "--topic", topic, "--group", group, "--count", fmt.Sprint(count), "--timeout", "60")
		},
	},
	{
		name: "kafkajs",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 2*time.Minute, "node", bin("test/clients/js/driver.js"), "produce", "--bootstrap", boot, "--topic", topic, "--count", fmt.Sprint(count), "--start", fmt.Sprint(start), "--run", fmt.Sprint(run_))
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 2*time.Minute, "node", bin("test/clients/js/driver.js"), "consume", "--bootstrap", boot, "--topic", topic, "--group", group, "--count", fmt.Sprint(count), "--timeout", "60")
		},
	},
	{
		name: "java-verifiable",
		produce: func(t *testing.T, boot, topic string, run_, start, count int) []byte {
			return run(t, 3*time.Minute, "bash", bin("test/clients/java/verifiable.sh"), "producer", "--bootstrap-server", boot, "--topic", topic, "--max-messages", fmt.Sprint(count), "--acks", "-1", "--value-prefix", fmt.Sprint(run_))
		},
		consume: func(t *testing.T, boot, topic, group string, count int) []byte {
			return run(t, 3*time.Minute, "bash", bin("test/clients/java/verifiable.sh"), "--timeout", "90", "consumer", "--bootstrap-server", boot, "--topic", topic, "--group-id", group, "--max-messages", fmt.Sprint(count), "--verbose", "--reset-policy", "earliest")
		},
	},
}

func parse(t *testing.T, name string, b []byte) *checker.Log {
	t.Helper()
	l, err := checker.Parse(bytes.NewReader(b), checker.ParseOptions{Source: name})
	if err != nil {
		t.Fatalf("parsing %s output: %v", name, err)
	}
	if n := len(l.Errors); n > 0 {
		t.Errorf("%s reported %d client errors, the first: %+v", name, n, l.Errors[:min(n, 5)])
	}
	return l
}

func createTopic(t *testing.T, boot, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(boot))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("creating %s through kproxy: %v %v", topic, err, resp.Err)
	}
}

// Every client produces through kproxy, reads the records back in a
// consumer group, and then resumes from its committed offsets, against each
// real cluster; the checker must find nothing lost, duplicated, skipped or
// reordered.
func TestClientMatrix(t *testing.T) {
	for _, cluster := range []string{proxy.Source, proxy.Target} {
		version := env.sourceV
		if cluster == proxy.Target {
			version = env.targetV
		}
		boot := proxies[cluster].Addr().String()
		for _, d := range drivers {
			t.Run(fmt.Sprintf("%s on %s %s", d.name, cluster, version), func(t *testing.T) {
				topic := fmt.Sprintf("matrix-%s-%s-%d", strings.ReplaceAll(d.name, "-", ""), cluster, runID)
				createTopic(t, boot, topic, 3)
				matrixRun(t, d, boot, topic, 300, 60)
			})
		}
	}
}

// matrixRun is one client's matrix run on topic (created beforehand)
// through boot (one address, or several comma-separated): first records
// produced and read back in a consumer group, then second more, read by the
// group resuming from its commits; librdkafka's log is also read whole by
// kcat. The checker must find nothing lost, duplicated, skipped or
// reordered in each reading. It returns every acknowledgement.
func matrixRun(t *testing.T, d driver, boot, topic string, first, second int) []checker.Ack {
	t.Helper()
	group := "g-" + topic
	acks1 := parse(t, d.name+" produce", d.produce(t, boot, topic, 1, 0, first))
	if len(acks1.Acks) != first {
		t.Fatalf("%d acks, want %d", len(acks1.Acks), first)
	}
	got1 := parse(t, d.name+" consume", d.consume(t, boot, topic, group, first))
	rep := checker.Check(acks1.Acks, got1.Consumed, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("first run: %s", rep)
	if !rep.OK() {
		t.Fatalf("first run: %s\n%s", rep, rep.Details())
	}

	// The group resumes from its commits: only new records arrive.
	acks2 := parse(t, d.name+" produce", d.produce(t, boot, topic, 2, first, second))
	got2 := parse(t, d.name+" consume", d.consume(t, boot, topic, group, second))
	rep = checker.Check(acks2.Acks, got2.Consumed, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("resume run: %s", rep)
	if !rep.OK() {
		t.Fatalf("resume run: %s\n%s", rep, rep.Details())
	}

	if d.name == "librdkafka" {
		// kcat, a plain reader, sees the whole log in order.
		all := append(append([]checker.Ack(nil), acks1.Acks...), acks2.Acks...)
		out := run(t, 2*time.Minute, "bash", bin("test/clients/rdkafka/kcat.sh"), "--bootstrap", boot, "--topic", topic)
		kc := parse(t, "kcat", out)
		rep = checker.Check(all, kc.Consumed, checker.Options{ExpectAll: true, RequireAcked: true})
		t.Logf("kcat: %s", rep)
		if !rep.OK() {
			t.Fatalf("kcat: %s\n%s", rep, rep.Details())
		}
	}
	return append(acks1.Acks, acks2.Acks...)
}
