// Package integration runs kproxy in front of two real Apache Kafka clusters
// (started by test/kafka/kafka.sh: source 3.9.x, target 4.x) and drives real
// clients through it. These tests never skip: without real Kafka they fail.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/test/checker"
)

// env is what the harness exports (test/kafka/kafka.sh env).
var env struct {
	source, target   string
	sourceV, targetV string
	toolsCP          string
	root             string
}

// capture records every response frame the proxies send to clients, for the
// no-leak test.
type capture struct {
	mu     sync.Mutex
	frames []capturedFrame
}

type capturedFrame struct {
	key, version int16
	frame        []byte
}

func (c *capture) add(key, version int16, frame []byte) {
	c.mu.Lock()
	c.frames = append(c.frames, capturedFrame{key, version, frame})
	c.mu.Unlock()
}

func (c *capture) all() []capturedFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]capturedFrame(nil), c.frames...)
}

var frames = &capture{}

// proxies: one kproxy routing everything to the source, one to the target;
// both know both clusters, so their ApiVersions answers are the intersection.
var proxies = map[string]*proxy.Server{}

func TestMain(m *testing.M) {
	env.source = os.Getenv("KPROXY_SOURCE_BOOTSTRAP")
	env.target = os.Getenv("KPROXY_TARGET_BOOTSTRAP")
	env.sourceV = os.Getenv("KPROXY_SOURCE_VERSION")
	env.targetV = os.Getenv("KPROXY_TARGET_VERSION")
	env.toolsCP = os.Getenv("KPROXY_TOOLS_CP")
	wd, _ := os.Getwd()
	env.root = wd + "/../.."
	if env.source == "" || env.target == "" {
		fmt.Fprintln(os.Stderr, "integration: KPROXY_SOURCE_BOOTSTRAP / KPROXY_TARGET_BOOTSTRAP are not set; start real Kafka with `make kafka-up` and run `eval \"$(bash test/kafka/kafka.sh env)\"`. These tests do not skip.")
		os.Exit(1)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: hclog.Warn, Output: os.Stderr})
	for _, route := range []string{proxy.Source, proxy.Target} {
		srv, err := proxy.New(proxy.Options{
			Listen:    "127.0.0.1:0",
			ClusterID: "kproxy-it-virtual",
			NodeID:    4242,
			Clusters:  map[string][]string{proxy.Source: {env.source}, proxy.Target: {env.target}},
			Router:    proxy.StaticRouter(route),
			Logger:    log.Named(route),
			Capture:   frames.add,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "integration:", err)
			os.Exit(1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err = srv.Start(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "integration: kproxy could not reach real Kafka:", err)
			os.Exit(1)
		}
		proxies[route] = srv
	}
	code := m.Run()
	for _, p := range proxies {
		p.Close()
	}
	os.Exit(code)
}

// buildKproxy builds the kproxy binary into dir and returns its path, for
// tests that run the real binary with a config file.
func buildKproxy(t *testing.T, dir string) string {
	t.Helper()
	exe := filepath.Join(dir, "kproxy")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/kproxy/kproxy/cmd/kproxy").CombinedOutput(); err != nil {
		t.Fatalf("building kproxy: %v\n%s", err, out)
	}
	return exe
}

// writeConfig replaces the config file at path the way editors do (a
// temporary file renamed over it), which is what kproxy's watcher must see.
func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// runKproxy starts `kproxy run -c cfgPath`, waits until it listens for
// clients, and stops it (SIGTERM) when the test ends, printing its log if
// the test failed.
func runKproxy(t *testing.T, exe, cfgPath string) (*exec.Cmd, *lockedBuf) {
	t.Helper()
	logs := &lockedBuf{}
	cmd := exec.Command(exe, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("kproxy log:\n%s", logs.String())
		}
	})
	waitFor(t, "kproxy to listen", func() bool { return strings.Contains(logs.String(), "listening for kafka clients") })
	return cmd, logs
}

// ackLog records what a franz-go producer had acknowledged, for the checker.
type ackLog struct {
	mu   sync.Mutex
	acks []checker.Ack
	errs int
}

// promise is a kgo produce promise that records the ack or the error.
func (l *ackLog) promise(r *kgo.Record, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs++
		return
	}
	l.acks = append(l.acks, checker.Ack{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)})
}

// snapshot returns the acks so far and the number of errors.
func (l *ackLog) snapshot() ([]checker.Ack, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]checker.Ack(nil), l.acks...), l.errs
}
