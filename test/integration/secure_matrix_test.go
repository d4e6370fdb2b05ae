package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/checker"
)

// secureMechs are the SASL mechanisms kproxy's secured listener offers.
var secureMechs = []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"}

// secClient runs one client through the secured listener with a mechanism;
// wrong uses the wrong password. produce returns stdout, stderr and the
// exit error (a refused client is expected to fail).
type secClient struct {
	name string
	// mechs are the mechanisms the client is run with: round i produces
	// with mechs[i] and consumes with mechs[i+1] (mod len), on the source
	// or the target in turn.
	mechs   []string
	rounds  int
	produce func(t *testing.T, k *securedKproxy, topic, mech string, wrong bool, run, count int) runResult
	// consume prepares a consumer (on the test's goroutine) and returns
	// the run, which the test starts beside the producer.
	consume func(t *testing.T, k *securedKproxy, topic, group, mech string, count int) func() runResult
}

// runResult is a driver run's stdout, stderr and exit error.
type runResult struct {
	stdout, stderr string
	err            error
}

// runOut runs a driver; a failure is the caller's to judge.
func runOut(timeout time.Duration, name string, args ...string) runResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KPROXY_TOOLS_CP="+env.toolsCP)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return runResult{out.String(), errb.String(), err}
}

func mustOut(t *testing.T, what string, r runResult) []byte {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v\nstderr (tail):\n%s", what, r.err, tail(r.stderr, 3000))
	}
	return []byte(r.stdout)
}

func gomatrixClient(client string) secClient {
	return secClient{
		name:   client,
		mechs:  secureMechs,
		rounds: 3,
		produce: func(t *testing.T, k *securedKproxy, topic, mech string, wrong bool, run_, count int) runResult {
			args := append([]string{"produce", "-client", client, "-bootstrap", k.listen, "-topic", topic, "-count", fmt.Sprint(count), "-run", fmt.Sprint(run_), "-idempotent", "-timeout", "30"},
				k.gomatrixArgs(mech, wrong)...)
			return runOut(time.Minute, bin("test/clients/bin/gomatrix"), args...)
		},
		consume: func(t *testing.T, k *securedKproxy, topic, group, mech string, count int) func() runResult {
			args := append([]string{"consume", "-client", client, "-bootstrap", k.listen, "-topic", topic, "-group", group, "-count", fmt.Sprint(count), "-timeout", "120"},
				k.gomatrixArgs(mech, false)...)
			return func() runResult { return runOut(3*time.Minute, bin("test/clients/bin/gomatrix"), args...) }
		},
	}
}

var secClients = []secClient{
	gomatrixClient("franz"),
	gomatrixClient("sarama"),
	{
		// PLAIN only: librdkafka before 2.6.1 (Debian's is 2.0.2) puts its
		// nonce twice into the SCRAM client-final message, which RFC 5802
		// servers refuse: Kafka 4.x does, and so does kproxy (see
		// TestSecuredClientMatrix's librdkafka-scram check and
		// docs/security.md).
		name:   "librdkafka",
		mechs:  []string{"PLAIN"},
		rounds: 2,
		produce: func(t *testing.T, k *securedKproxy, topic, mech string, wrong bool, run_, count int) runResult {
			// A refused librdkafka keeps retrying the authentication: its
			// --timeout ends the wait.
			timeout := "60"
			if wrong {
				timeout = "8"
			}
			return runOut(time.Minute, bin("test/clients/bin/rdk"), "produce", "--bootstrap", k.listen, "--topic", topic, "--count", fmt.Sprint(count),
				"--run", fmt.Sprint(run_), "--idempotent", "--timeout", timeout, "--config", k.rdkConfig(t, mech, wrong))
		},
		consume: func(t *testing.T, k *securedKproxy, topic, group, mech string, count int) func() runResult {
			conf := k.rdkConfig(t, mech, false)
			return func() runResult {
				return runOut(3*time.Minute, bin("test/clients/bin/rdk"), "consume", "--bootstrap", k.listen, "--topic", topic, "--group", group,
					"--count", fmt.Sprint(count), "--timeout", "120", "--config", conf)
			}
		},
	},
	{
		name:   "kafkajs",
		mechs:  secureMechs,
		rounds: 3,
		produce: func(t *testing.T, k *securedKproxy, topic, mech string, wrong bool, run_, count int) runResult {
			args := append([]string{bin("test/clients/js/driver.js"), "produce", "--bootstrap", k.listen, "--topic", topic, "--count", fmt.Sprint(count), "--run", fmt.Sprint(run_), "--timeout", "30"},
				k.kafkajsArgs(mech, wrong)...)
			return runOut(time.Minute, "node", args...)
		},
		consume: func(t *testing.T, k *securedKproxy, topic, group, mech string, count int) func() runResult {
			args := append([]string{bin("test/clients/js/driver.js"), "consume", "--bootstrap", k.listen, "--topic", topic, "--group", group, "--count", fmt.Sprint(count), "--timeout", "120"},
				k.kafkajsArgs(mech, false)...)
			return func() runResult { return runOut(3*time.Minute, "node", args...) }
		},
	},
	{
		// One round and the refusal (three JVM starts, which on a loaded
		// machine take a minute or more each) cover the three mechanisms:
		// produce with SCRAM-SHA-256, consume with PLAIN, refused with
		// SCRAM-SHA-512 and a wrong password.
		name:   "java",
		mechs:  []string{"SCRAM-SHA-256", "PLAIN", "SCRAM-SHA-512"},
		rounds: 1,
		produce: func(t *testing.T, k *securedKproxy, topic, mech string, wrong bool, run_, count int) runResult {
			props := k.javaConfig(t, fmt.Sprintf("java-p-%s-%s-%v", topic, mech, wrong), mech, wrong, "enable.idempotence=true\nacks=all\nretries=2147483647\n")
			// Generous: on a loaded machine a JVM may take a minute to send its first record.
			return runOut(5*time.Minute, "bash", bin("test/clients/java/verifiable.sh"), "--timeout", "240", "producer", "--bootstrap-server", k.listen, "--topic", topic,
				"--max-messages", fmt.Sprint(count), "--acks", "-1", "--value-prefix", fmt.Sprint(run_), "--command-config", props)
		},
		consume: func(t *testing.T, k *securedKproxy, topic, group, mech string, count int) func() runResult {
			props := k.javaConfig(t, "java-c-"+topic, mech, false, "")
			return func() runResult {
				return runOut(5*time.Minute, "bash", bin("test/clients/java/verifiable.sh"), "--timeout", "270", "consumer", "--bootstrap-server", k.listen,
					"--topic", topic, "--group-id", group, "--max-messages", fmt.Sprint(count), "--verbose", "--reset-policy", "earliest", "--command-config", props)
			}
		},
	},
}

// The secured client matrix: every client produces and consumes through
// kproxy over TLS with each SASL mechanism it supports (SCRAM-SHA-256,
// SCRAM-SHA-512, PLAIN), against both real clusters, which kproxy reaches
// over SASL_SSL (SCRAM-SHA-512 to the source, SCRAM-SHA-256 to the
// target); the checker must find nothing lost, duplicated or reordered.
// Each client with a wrong password is refused (no record acked,
// SASL_AUTHENTICATION_FAILED counted), and kproxy's trace-level log and
// every /status, /metrics and `kproxy status` output of the run hold no
// password and no key.
func TestSecuredClientMatrix(t *testing.T) {
	k := newSecuredKproxy(t, securedOptions{routes: "  default: source\n  topics:\n    \"secm-*-target\": target\n"})
	k.start(t)
	// All clients at once (t.Run from goroutines; -parallel would cap
	// them at GOMAXPROCS): most of the wall time is JVM and node start-up
	// and group joins, not work.
	var wg sync.WaitGroup
	for ci, c := range secClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(c.name, func(t *testing.T) {
				// The rounds and the refusal at once, and each round's
				// consumer beside its producer: on a loaded machine most
				// of the wall time is JVM and node start-up and group
				// joins, not work.
				var rwg sync.WaitGroup
				for i := 0; i < c.rounds; i++ {
					rwg.Add(1)
					go func() {
						defer rwg.Done()
						t.Run(fmt.Sprint("round ", i), func(t *testing.T) { secRound(t, k, c, ci, i) })
					}()
				}
				defer rwg.Wait()

				// The wrong password: refused, nothing acked.
				topic := fmt.Sprintf("secm-%s-wrong-%d", c.name, runID)
				began := time.Now()
				r := c.produce(t, k, topic, c.mechs[len(c.mechs)-1], true, 9, 3)
				t.Logf("refused in %.1f s", time.Since(began).Seconds())
				stdout, stderr, err := r.stdout, r.stderr, r.err
				l, perr := checker.Parse(strings.NewReader(stdout), checker.ParseOptions{Source: c.name})
				if perr != nil {
					t.Fatalf("parsing the refused producer's output: %v", perr)
				}
				if len(l.Acks) != 0 {
					t.Errorf("with a wrong password %d records were acked", len(l.Acks))
				}
				said := strings.ToLower(stdout + stderr)
				if err == nil && len(l.Errors) == 0 {
					t.Errorf("with a wrong password the producer reported no failure")
				}
				if !strings.Contains(said, "authentication") {
					t.Errorf("the refused producer did not report an authentication failure:\n%s", tail(stdout+stderr, 2000))
				}
				var exit *exec.ExitError
				if err != nil && !errors.As(err, &exit) {
					t.Errorf("the refused producer did not run: %v", err)
				}
			})
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.Run("librdkafka-scram", func(t *testing.T) {
			// librdkafka's SCRAM gets from kproxy what it gets from a
			// Kafka 4.x broker (the target): with librdkafka before 2.6.1
			// both refuse its doubled nonce, with a fixed one both accept.
			topic := fmt.Sprintf("secm-rdkscram-%d-target", runID)
			createTopic(t, k.plain, topic, 1)
			viaKproxy := runOut(time.Minute, bin("test/clients/bin/rdk"), "produce", "--bootstrap", k.listen, "--topic", topic, "--count", "2", "--timeout", "5",
				"--config", k.rdkConfig(t, "SCRAM-SHA-256", false))
			direct := runOut(time.Minute, bin("test/clients/bin/rdk"), "produce", "--bootstrap", k.up.target, "--topic", topic, "--count", "2", "--timeout", "5",
				"--config", k.upstreamRdkConfig(t, "SCRAM-SHA-256"))
			if (viaKproxy.err == nil) != (direct.err == nil) {
				t.Errorf("librdkafka SCRAM-SHA-256: through kproxy err=%v, to the Kafka %s target directly err=%v", viaKproxy.err, env.targetV, direct.err)
			}
			t.Logf("librdkafka SCRAM-SHA-256 accepted through kproxy: %v, by the Kafka %s target: %v", viaKproxy.err == nil, env.targetV, direct.err == nil)
		})
	}()
	wg.Wait()
	// Each refused client was counted (clients may retry: at least one
	// failure each).
	if n := saslFailures(t, k); n < float64(len(secClients)) {
		t.Errorf("kproxy_sasl_authentication_failures_total = %v, want at least %d (one per refused client)", n, len(secClients))
	}
	k.assertNoSecrets(t)
}

var saslFailureLine = regexp.MustCompile(`(?m)^kproxy_sasl_authentication_failures_total(\{[^}]*\})? ([0-9.e+]+)$`)

// saslFailures sums kproxy_sasl_authentication_failures_total over its labels.
func saslFailures(t *testing.T, k *securedKproxy) float64 {
	t.Helper()
	var sum float64
	for _, m := range saslFailureLine.FindAllStringSubmatch(k.get(t, "/metrics"), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// secRound is round i of client c: it produces 40 records with c.mechs[i]
// while a consumer group reads them with c.mechs[i+1], on the source or the
// target, and the checker judges the two; librdkafka's first round is also
// read whole with kcat.
func secRound(t *testing.T, k *securedKproxy, c secClient, ci, i int) {
	cluster := []string{"source", "target"}[(ci+i)%2]
	pmech, cmech := c.mechs[i%len(c.mechs)], c.mechs[(i+1)%len(c.mechs)]
	topic := fmt.Sprintf("secm-%s-%d-%d-%s", c.name, i, runID, cluster)
	createTopic(t, k.plain, topic, 2)
	const n = 40
	consume := c.consume(t, k, topic, "g-"+topic, cmech, n)
	consumed := make(chan runResult, 1)
	go func() { consumed <- consume() }()
	began := time.Now()
	acks := parse(t, c.name+" produce", mustOut(t, c.name+" produce with "+pmech, c.produce(t, k, topic, pmech, false, i+1, n)))
	produced := time.Since(began)
	got := parse(t, c.name+" consume", mustOut(t, c.name+" consume with "+cmech, <-consumed))
	if len(acks.Acks) != n {
		t.Fatalf("%s on the %s: %d acks, want %d", pmech, cluster, len(acks.Acks), n)
	}
	rep := checker.Check(acks.Acks, got.Consumed, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("produced with %s (%.1f s), consumed with %s (%.1f s), on the %s: %s", pmech, produced.Seconds(), cmech, time.Since(began).Seconds(), cluster, rep)
	if !rep.OK() {
		t.Fatalf("%s: %s\n%s", topic, rep, rep.Details())
	}
	if c.name == "librdkafka" && i == 0 {
		// kcat reads the log whole, over TLS with PLAIN.
		out := mustOut(t, "kcat", runOut(2*time.Minute, "bash", bin("test/clients/rdkafka/kcat.sh"), "--bootstrap", k.listen, "--topic", topic,
			"--", "-F", k.rdkConfig(t, "PLAIN", false)))
		rep := checker.Check(acks.Acks, parse(t, "kcat", out).Consumed, checker.Options{ExpectAll: true, RequireAcked: true})
		t.Logf("kcat: %s", rep)
		if !rep.OK() {
			t.Fatalf("kcat: %s\n%s", rep, rep.Details())
		}
	}
}
