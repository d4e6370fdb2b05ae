package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/test/checker"
)

// apiRanges is one ApiVersions answer: key -> [min, max].
type apiRanges map[int16][2]int16

// liveApiVersions asks boot for its ApiVersions.
func liveApiVersions(t *testing.T, boot string) apiRanges {
	t.Helper()
	cl := replClient(t, boot)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("ApiVersions from %s: %v", boot, err)
	}
	out := apiRanges{}
	for _, k := range resp.ApiKeys {
		out[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	return out
}

// compatTable reads the per-API table of docs/compatibility.md: for each
// column header (a Kafka version, "kproxy", or a pair such as
// "2.8.2 + 4.4.0"), key -> range; "-" cells are absent keys.
func compatTable(t *testing.T) map[string]apiRanges {
	t.Helper()
	f, err := os.Open(filepath.Join(env.root, "docs", "compatibility.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var header []string
	out := map[string]apiRanges{}
	rng := regexp.MustCompile(`^v?(\d+)-v?(\d+)$|^v?(\d+)$`)
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.Contains(line, "BEGIN api-versions-table"):
			in = true
			continue
		case strings.Contains(line, "END api-versions-table"):
			in = false
		}
		if !in || !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|--") || strings.HasPrefix(line, "| --") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		key, err := strconv.Atoi(cells[1])
		if err != nil {
			t.Fatalf("compatibility.md: bad key cell %q", cells[1])
		}
		for i := 2; i < len(cells) && i < len(header); i++ {
			if out[header[i]] == nil {
				out[header[i]] = apiRanges{}
			}
			m := rng.FindStringSubmatch(cells[i])
			switch {
			case cells[i] == "-":
			case m == nil:
				t.Fatalf("compatibility.md: bad cell %q (key %d, column %s)", cells[i], key, header[i])
			case m[3] != "":
				v, _ := strconv.Atoi(m[3])
				out[header[i]][int16(key)] = [2]int16{int16(v), int16(v)}
			default:
				lo, _ := strconv.Atoi(m[1])
				hi, _ := strconv.Atoi(m[2])
				out[header[i]][int16(key)] = [2]int16{int16(lo), int16(hi)}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("compatibility.md: no api-versions-table found")
	}
	return out
}

func formatRanges(r apiRanges) string {
	keys := make([]int, 0, len(r))
	for k := range r {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	var b strings.Builder
	for _, k := range keys {
		v := r[int16(k)]
		fmt.Fprintf(&b, "%d:%d-%d ", k, v[0], v[1])
	}
	return b.String()
}

// The version floors of docs/compatibility.md hold against the real
// brokers of this pair: each broker's ApiVersions is the column the doc
// records for its version, and kproxy (both clusters configured) advertises
// exactly the doc's column for the pair. A client asking for a version above
// what kproxy advertises is refused the way a broker refuses it (the
// connection closes), never answered with a broken body.
func TestVersionFloorsLive(t *testing.T) {
	doc := compatTable(t)
	// The doc has a row for each API kproxy implements; the brokers' other
	// APIs are not compared.
	rows := func(r apiRanges) apiRanges {
		out := apiRanges{}
		for k, v := range r {
			if _, ok := doc["kproxy"][k]; ok {
				out[k] = v
			}
		}
		return out
	}
	src, tgt := rows(liveApiVersions(t, env.source)), rows(liveApiVersions(t, env.target))
	t.Logf("source %s ApiVersions: %s", env.sourceV, formatRanges(src))
	t.Logf("target %s ApiVersions: %s", env.targetV, formatRanges(tgt))
	for _, side := range []struct {
		version string
		live    apiRanges
	}{{env.sourceV, src}, {env.targetV, tgt}} {
		want, ok := doc[side.version]
		if !ok {
			t.Errorf("compatibility.md has no column for Kafka %s", side.version)
			continue
		}
		if got, w := formatRanges(side.live), formatRanges(want); got != w {
			t.Errorf("Kafka %s answers ApiVersions\n  %s\nbut compatibility.md records\n  %s", side.version, got, w)
		}
	}
	pair := pairColumn(env.sourceV, env.targetV)
	want, ok := doc[pair]
	if !ok {
		t.Fatalf("compatibility.md has no column %q", pair)
	}
	for _, route := range []string{proxy.Source, proxy.Target} {
		got := liveApiVersions(t, proxies[route].Addr().String())
		if g, w := formatRanges(got), formatRanges(want); g != w {
			t.Errorf("kproxy (%s route) advertises\n  %s\nbut compatibility.md's column %q says\n  %s", route, g, pair, w)
		}
	}

	// One version above the advertised Fetch maximum: the connection closes,
	// as a broker closes it; no response frame comes back.
	fetch := want[kmsg.Fetch.Int16()]
	conn, err := net.DialTimeout("tcp", proxies[proxy.Source].Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(fetch[1] + 1)
	if req.Version > req.MaxVersion() {
		t.Logf("Fetch v%d is franz-go's newest; no higher version to try", fetch[1])
		return
	}
	body := req.AppendTo(appendRequestHeader(nil, req, 7))
	frame := append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if n, err := conn.Read(size[:]); err == nil || n > 0 {
		t.Errorf("Fetch v%d (above the advertised v%d) got %d response bytes; want the connection closed", req.Version, fetch[1], n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("Fetch v%d (above the advertised v%d): no answer and the connection stays open", req.Version, fetch[1])
	}
}

// appendRequestHeader appends a request header v1 (or v2 for flexible
// requests) with client id "versions-test".
func appendRequestHeader(dst []byte, req kmsg.Request, corr int32) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.Key()))
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.GetVersion()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	id := "versions-test"
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(id)))
	dst = append(dst, id...)
	if req.IsFlexible() {
		dst = append(dst, 0) // no tagged fields
	}
	return dst
}

// pairColumn is the doc's column for a pair: the intersection does not care
// which side is the source, so the column names the older version first.
func pairColumn(a, b string) string {
	if versionLess(b, a) {
		a, b = b, a
	}
	return a + " + " + b
}

func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// fetchSniffer records the version of every Fetch request a franz-go client
// writes, by reading the request frames on their way out.
type fetchSniffer struct {
	mu       sync.Mutex
	versions map[int16]int
}

func (s *fetchSniffer) dialer() func(ctx context.Context, network, host string) (net.Conn, error) {
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, host)
		if err != nil {
			return nil, err
		}
		return &sniffConn{Conn: c, s: s}, nil
	}
}

func (s *fetchSniffer) seen() map[int16]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int16]int{}
	for v, n := range s.versions {
		out[v] = n
	}
	return out
}

type sniffConn struct {
	net.Conn
	s   *fetchSniffer
	buf []byte
}

func (c *sniffConn) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	for len(c.buf) >= 8 {
		size := int(binary.BigEndian.Uint32(c.buf))
		if len(c.buf) < 4+size {
			break
		}
		key, version := int16(binary.BigEndian.Uint16(c.buf[4:])), int16(binary.BigEndian.Uint16(c.buf[6:]))
		if key == kmsg.Fetch.Int16() {
			c.s.mu.Lock()
			if c.s.versions == nil {
				c.s.versions = map[int16]int{}
			}
			c.s.versions[version]++
			c.s.mu.Unlock()
		}
		c.buf = c.buf[4+size:]
	}
	return c.Conn.Write(p)
}

// readSniffed reads n records of topic from the start through boot with a
// franz-go client whose Fetch versions s records.
func readSniffed(t *testing.T, boot, topic string, n int, s *fetchSniffer) []checker.Consumed {
	t.Helper()
	cl := replClient(t, boot, kgo.Dialer(s.dialer()), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(300*time.Millisecond))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []checker.Consumed
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), n, topic)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, checker.Consumed{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)})
		})
	}
	return out
}

// End state with an old source: while both clusters are configured, the
// oldest decides what clients get (a 2.8 source has no Fetch v13, so no
// topic ids in Fetch). Once the topic is flipped and clusters.source is
// removed, ApiVersions rises to the target's, and a new franz-go client
// fetches with the target's newest Fetch (v13+, by topic id) and reads every
// record at the offset its producer was given.
func TestEndStateFetchUsesTopicIDs(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	topic := replTopic("endstate-ids")
	replCreateTopic(t, topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	clientMax := kmsg.NewPtrFetchRequest().MaxVersion()
	srcMax := liveApiVersions(t, env.source)[kmsg.Fetch.Int16()][1]
	tgtMax := liveApiVersions(t, env.target)[kmsg.Fetch.Int16()][1]
	wantBoth, wantTarget := min(srcMax, tgtMax, clientMax), min(tgtMax, clientMax)

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	state := filepath.Join(dir, "state")
	both := func(route string) string {
		return fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    %q: %s\nreplicate: [%q]\nlog: { level: info }\n",
			listen, admin, state, env.source, env.target, topic, route, topic)
	}
	var log ackLog
	produce := func(prefix string, n int) {
		cl := replClient(t, listen, kgo.DefaultProduceTopic(topic))
		defer cl.Close()
		for i := 0; i < n; i++ {
			cl.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}, log.promise)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}

	writeConfig(t, cfgPath, both("source"))
	cmd, logs := runKproxy(t, exe, cfgPath)
	waitFor(t, "replication to start", func() bool { return strings.Contains(logs.String(), "replication of a topic started") })
	produce("before", 50)
	var before fetchSniffer
	readSniffed(t, listen, topic, 50, &before)
	writeConfig(t, cfgPath, both("target"))
	waitFor(t, "the flip", func() bool {
		return strings.Contains(logs.String(), "cutover released held produce requests to the target")
	})
	produce("after", 50)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	writeConfig(t, cfgPath, fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  target: { bootstrap: [%s] }\nroutes:\n  default: target\nlog: { level: info }\n",
		listen, admin, state, env.target))
	_, logs = runKproxy(t, exe, cfgPath)
	if got := liveApiVersions(t, listen)[kmsg.Fetch.Int16()][1]; got != wantTarget {
		t.Errorf("without the source kproxy advertises Fetch up to v%d, want the target's v%d", got, wantTarget)
	}
	var after fetchSniffer
	want, errs := log.snapshot()
	if errs > 0 {
		t.Errorf("the producers saw %d errors", errs)
	}
	got := readSniffed(t, listen, topic, len(want), &after)
	rep := checker.Check(want, got, checker.Options{ExpectAll: true, RequireAcked: true})
	if !rep.OK() {
		t.Fatalf("without the source: %s\n%s\n%s", rep, rep.Details(), logs.String())
	}
	t.Logf("source %s Fetch max v%d, target %s v%d; fetch versions with both clusters %v, after the end state %v; %s",
		env.sourceV, srcMax, env.targetV, tgtMax, before.seen(), after.seen(), rep)
	for v := range before.seen() {
		if v != wantBoth {
			t.Errorf("with both clusters the client fetched with v%d, want v%d (the older cluster's)", v, wantBoth)
		}
	}
	if len(after.seen()) == 0 {
		t.Fatal("the client sent no Fetch after the end state")
	}
	for v := range after.seen() {
		if v != wantTarget {
			t.Errorf("after the end state the client fetched with v%d, want the target's v%d", v, wantTarget)
		}
		if v < 13 {
			t.Errorf("after the end state the client fetched with v%d: no topic ids", v)
		}
	}
}
