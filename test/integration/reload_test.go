package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The kproxy binary, run from a config file: an invalid edit is refused with
// a log line naming the key and line, while a connected client keeps
// working; an edit of a cluster is refused, naming the key; a valid edit (routes.default source -> target) applies to new
// requests on the same connection, with no reconnect.
func TestBinaryConfigReload(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	port := freePort(t)
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	write := func(def string, extra string) {
		body := fmt.Sprintf("listen: 127.0.0.1:%d\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: %s\n%s", port, env.source, env.target, def, extra)
		writeConfig(t, cfgPath, body)
	}
	write("source", "")
	logs := &lockedBuf{}
	cmd := exec.Command(exe, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitFor(t, "kproxy to listen", func() bool { return strings.Contains(logs.String(), "listening for kafka clients") })

	cl, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", port)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Which cluster answers: each harness cluster has its own internal
	// topic set; the check topic differs by name per cluster below.
	topicOn := func(bootstrap, name string) {
		c, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.AllowAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.ProduceSync(ctx, &kgo.Record{Topic: name, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	srcOnly := fmt.Sprintf("reload-src-only-%d", runID)
	tgtOnly := fmt.Sprintf("reload-tgt-only-%d", runID)
	topicOn(env.source, srcOnly)
	topicOn(env.target, tgtOnly)
	sees := func(topic string) bool {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		req.AllowAutoTopicCreation = false
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("metadata through kproxy: %v", err)
		}
		return len(resp.Topics) == 1 && resp.Topics[0].ErrorCode == 0
	}
	if !sees(srcOnly) || sees(tgtOnly) {
		t.Fatalf("before reload: want the source's topics only")
	}

	write("tagret", "")
	waitFor(t, "the rejection log line", func() bool { return strings.Contains(logs.String(), "config reload rejected") })
	if !strings.Contains(logs.String(), "routes.default") || !strings.Contains(logs.String(), "tagret") {
		t.Fatalf("rejection does not name the key and value:\n%s", logs.String())
	}
	if !sees(srcOnly) {
		t.Fatalf("after an invalid edit the old config must keep serving")
	}

	// A cluster edit with a route edit: refused as a whole, naming the
	// cluster key; the route stays. (Before, it was reported as applied
	// while the proxy kept its start-up clusters.)
	writeConfig(t, cfgPath, fmt.Sprintf("listen: 127.0.0.1:%d\nclusters:\n  source: { bootstrap: [%s, 127.0.0.1:1] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: target\n", port, env.source, env.target))
	waitFor(t, "the refusal log line", func() bool { return strings.Contains(logs.String(), "config reload refused") })
	if !strings.Contains(logs.String(), "clusters.source.bootstrap") {
		t.Fatalf("the refusal does not name clusters.source.bootstrap:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "config reloaded") || !sees(srcOnly) {
		t.Fatalf("a config with a cluster edit was applied (in part)")
	}

	write("target", "")
	waitFor(t, "the reload to apply", func() bool { return strings.Contains(logs.String(), "config reloaded") })
	if !sees(tgtOnly) || sees(srcOnly) {
		t.Fatalf("after the reload: want the target's topics only")
	}
}
