package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newLoggedProxy(t *testing.T) (*Server, *syncBuffer) {
	t.Helper()
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	logs := &syncBuffer{}
	srv := startProxy(t, Options{
		Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source),
		MaxFrameBytes: 1 << 20,
		Logger:        hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
	})
	return srv, logs
}

// expectClosed reads until EOF and fails if the proxy answered instead.
func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	if n != 0 {
		t.Errorf("proxy sent %d bytes instead of closing", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("connection was not closed")
	}
}

func rawRequest(key, version int16, body []byte) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, 42)
	b = binary.BigEndian.AppendUint16(b, 0xffff) // null client id
	b = append(b, body...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// Each kind of bad input closes only its own connection, with one log line
// that says what was wrong, while a healthy client keeps working.
func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	srv, logs := newLoggedProxy(t)
	addr := srv.Addr().String()
	good, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	cases := []struct {
		name string
		send []byte
		log  string
	}{
		{"an oversized frame", []byte{0x7f, 0, 0, 0}, "exceeds the configured maximum"},
		{"an HTTP request", []byte("GET / HTTP/1.1\r\n\r\n"), "speaking HTTP"},
		{"a truncated header", []byte{0, 0, 0, 3, 0, 1, 0}, "shorter than a request header"},
		{"an unknown api key", rawRequest(9999, 0, nil), "api key 9999"},
		{"an unadvertised version", rawRequest(kmsg.Metadata.Int16(), 99, nil), "outside the advertised range"},
		{"a truncated body", rawRequest(kmsg.Produce.Int16(), 7, []byte{0, 5, 'a'}), "malformed request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, nc)
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), tc.log) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("no log line containing %q; logs:\n%s", tc.log, logs.String())
			}
			// The healthy client is undisturbed.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, good); err != nil {
				t.Errorf("healthy client failed after %s: %v", tc.name, err)
			}
		})
	}
}

// An ApiVersions request newer than kproxy knows gets a v0 answer with
// UNSUPPORTED_VERSION and the supported range, so the client can retry.
func TestApiVersionsTooNewAnswersUnsupportedVersion(t *testing.T) {
	srv, _ := newLoggedProxy(t)
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(rawRequest(kmsg.ApiVersions.Int16(), 99, nil)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	frame, err := readFrame(nc, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if corr := int32(binary.BigEndian.Uint32(frame)); corr != 42 {
		t.Fatalf("correlation id %d, want 42", corr)
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	if err := resp.ReadFrom(frame[4:]); err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("error code %d, want UNSUPPORTED_VERSION", resp.ErrorCode)
	}
	found := false
	for _, k := range resp.ApiKeys {
		if k.ApiKey == kmsg.ApiVersions.Int16() && k.MaxVersion >= 3 {
			found = true
		}
	}
	if !found {
		t.Fatalf("answer does not list ApiVersions v3+: %+v", resp.ApiKeys)
	}
}

// The advertised versions are exactly the registry intersected with the
// cluster: every advertised key has a handler, and no range is wider than
// the handler's or (for APIs kproxy does not answer itself) the upstream's.
func TestAdvertisedVersionsAgreeWithRegistryAndUpstream(t *testing.T) {
	srv, _ := newLoggedProxy(t)
	up := srv.clusters[Source].apiVersions()
	for k, r := range srv.advertised() {
		spec := registry[k]
		if spec == nil {
			t.Errorf("key %d advertised without a handler", k)
			continue
		}
		if r.min < spec.min || r.max > spec.max {
			t.Errorf("%s: advertised %v outside handler range %d-%d", keyName(k), r, spec.min, spec.max)
		}
		if u, ok := up[k]; spec.route != answeredLocally && (!ok || r.min < u.min || r.max > u.max) {
			t.Errorf("%s: advertised %v outside upstream %v", keyName(k), r, u)
		}
	}
	for _, k := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.Metadata, kmsg.FindCoordinator, kmsg.JoinGroup} {
		if _, ok := srv.advertised()[k.Int16()]; !ok {
			t.Errorf("%s not advertised", kmsg.NameForKey(k.Int16()))
		}
	}
}

// Metadata and FindCoordinator through the proxy name only the proxy: no
// upstream port or cluster id reaches the client.
func TestMetadataNamesOnlyTheProxy(t *testing.T) {
	srv, _ := newKfakeProxy(t, 3, kfake.SeedTopics(4, "a", "b"))
	var captured [][]byte
	var mu sync.Mutex
	srv.opts.Capture = func(_, _ int16, frame []byte) { mu.Lock(); captured = append(captured, frame); mu.Unlock() }
	cl, ctx := proxyClient(t, srv, 10*time.Second)
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	if len(md.Brokers) != 1 || md.Brokers[0].NodeID != 7 || strconv.Itoa(int(md.Brokers[0].Port)) != port {
		t.Fatalf("brokers = %+v, want only node 7 on the proxy port", md.Brokers)
	}
	if md.ClusterID == nil || *md.ClusterID != "virtual-cluster" {
		t.Fatalf("cluster id %v", md.ClusterID)
	}
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			if p.Leader != 7 || len(p.Replicas) != 1 || p.Replicas[0] != 7 {
				t.Fatalf("%s/%d leader %d replicas %v", *tp.Topic, p.Partition, p.Leader, p.Replicas)
			}
		}
	}
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorKey, fc.CoordinatorKeys = "g", []string{"g"}
	fr, err := fc.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if fr.Version >= 4 {
		if len(fr.Coordinators) != 1 || fr.Coordinators[0].NodeID != 7 {
			t.Fatalf("coordinators %+v", fr.Coordinators)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, up := range srv.clusters[Source].allBrokers() {
		_, upPort, _ := net.SplitHostPort(up)
		pn, _ := strconv.Atoi(upPort)
		for _, f := range captured {
			if bytes.Contains(f, binary.BigEndian.AppendUint32(nil, uint32(pn))) || bytes.Contains(f, []byte(upPort)) {
				t.Fatalf("a response frame contains upstream port %s", upPort)
			}
			if bytes.Contains(f, []byte("kfake")) {
				t.Fatalf("a response frame contains the upstream cluster id")
			}
		}
	}
}
