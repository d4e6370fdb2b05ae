package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

// verifyEnv is two kfake clusters, a topic on the source and a kproxy
// config whose state_dir holds the replicator's maps.
type verifyEnv struct {
	t        *testing.T
	src, tgt *kfake.Cluster
	topic    string
	cfgPath  string
	mapDir   string // <state_dir>/replicator
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	const topic = "orders"
	src, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(2, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tgt.Close)
	state := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "kproxy.yaml")
	yaml := fmt.Sprintf(`listen: 127.0.0.1:19999
state_dir: %s
clusters:
  source: { bootstrap: [%s] }
  target: { bootstrap: [%s] }
routes:
  default: source
replicate: [%s]
`, state, src.ListenAddrs()[0], tgt.ListenAddrs()[0], topic)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return &verifyEnv{t: t, src: src, tgt: tgt, topic: topic, cfgPath: cfgPath, mapDir: filepath.Join(state, "replicator")}
}

func (e *verifyEnv) client(c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

// produce writes n plain records with keys, headers and timestamps to a
// partition; the first is a tombstone with an empty key.
func (e *verifyEnv) produce(c *kfake.Cluster, partition int32, prefix string, n int) {
	e.t.Helper()
	cl := e.client(c, kgo.DefaultProduceTopic(e.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var rs []*kgo.Record
	for i := 0; i < n; i++ {
		r := &kgo.Record{
			Partition: partition, Key: []byte(fmt.Sprintf("%s-%d", prefix, i)), Value: []byte(strings.Repeat("v", i%5+1)),
			Headers:   []kgo.RecordHeader{{Key: "n", Value: []byte(strconv.Itoa(i))}, {Key: "p", Value: []byte(prefix)}},
			Timestamp: base.Add(time.Duration(i) * time.Millisecond),
		}
		if i == 0 {
			r.Key, r.Value = []byte{}, nil
		}
		rs = append(rs, r)
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// transaction writes n records to a partition in one transaction.
func (e *verifyEnv) transaction(partition int32, n int, commit bool) {
	e.t.Helper()
	cl := e.client(e.src, kgo.DefaultProduceTopic(e.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID(fmt.Sprintf("verify-%d-%v-%d", partition, commit, time.Now().UnixNano())))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: partition, Key: []byte(fmt.Sprintf("txn-%v-%d", commit, i)), Value: []byte("t")}).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		e.t.Fatal(err)
	}
}

// replicate runs a real replicator until every partition is copied up to
// the source's end offsets (or, with crash, until partition 0 crashes after
// a produce), then stops it.
func (e *verifyEnv) replicate(crash bool) {
	e.t.Helper()
	var crashed atomic.Bool
	hooks := replicator.Hooks{}
	if crash {
		hooks.AfterProduce = func(_ string, p int32) bool {
			if p == 0 {
				crashed.Store(true)
				return true
			}
			return false
		}
	}
	r, err := replicator.New(replicator.Options{
		SourceBrokers: e.src.ListenAddrs(), TargetBrokers: e.tgt.ListenAddrs(),
		Topics: []string{e.topic}, StateDir: e.mapDir,
		FetchMaxWait: 100 * time.Millisecond, RetryBackoff: 100 * time.Millisecond, Hooks: hooks,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	if crash {
		for !crashed.Load() {
			if ctx.Err() != nil {
				e.t.Fatal("partition 0 never produced")
			}
			time.Sleep(5 * time.Millisecond)
		}
		return
	}
	ends, err := kadm.NewClient(e.client(e.src)).ListEndOffsets(ctx, e.topic)
	if err != nil {
		e.t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if err := r.WaitCopied(ctx, e.topic, o.Partition, o.Offset); err != nil {
			e.t.Fatalf("partition %d: %v (status %+v)", o.Partition, err, r.Status())
		}
	})
}

// verify runs `kproxy verify` and returns its output and error.
func (e *verifyEnv) verify(args ...string) (string, error) {
	var out bytes.Buffer
	err := Command(&out, append([]string{"-c", e.cfgPath, "-timeout", "20s"}, args...))
	return out.String(), err
}

func (e *verifyEnv) mapPath(p int32) string {
	return filepath.Join(e.mapDir, e.topic, strconv.Itoa(int(p))+".offsetmap")
}

func (e *verifyEnv) loadMap(p int32) *replicator.OffsetMap {
	e.t.Helper()
	m, err := replicator.LoadMap(e.mapDir, e.topic, p)
	if err != nil || m == nil {
		e.t.Fatalf("map of partition %d: %v", p, err)
	}
	return m
}

// mapRun is a stretch of consecutive source offsets at consecutive target
// offsets, as the offset map file stores it.
type mapRun struct{ src, tgt, n int64 }

// mapRuns recovers a map's runs through its public lookups.
func mapRuns(m *replicator.OffsetMap) []mapRun {
	var runs []mapRun
	for t := m.TargetStart(); t < m.TargetEnd(); t++ {
		s, _ := m.ToSource(t)
		if k := len(runs); k > 0 && runs[k-1].src+runs[k-1].n == s {
			runs[k-1].n++
			continue
		}
		runs = append(runs, mapRun{src: s, tgt: t, n: 1})
	}
	return runs
}

// encodeMap writes a map file (format version 1, see replicator/offsetmap.go)
// with arbitrary runs, to hand the verifier maps that lie.
func encodeMap(meta replicator.MapMeta, srcBase, tgtBase int64, runs []mapRun, srcEnd int64) []byte {
	b := append([]byte("KPOMAP"), 2)
	b = binary.AppendUvarint(b, uint64(len(meta.Topic)))
	b = append(b, meta.Topic...)
	b = binary.BigEndian.AppendUint32(b, uint32(meta.Partition))
	b = append(b, meta.SourceTopicID[:]...)
	b = append(b, meta.TargetTopicID[:]...)
	b = binary.AppendVarint(b, meta.SourceShift)
	b = binary.AppendUvarint(b, uint64(srcBase))
	b = binary.AppendUvarint(b, uint64(tgtBase))
	b = binary.AppendUvarint(b, uint64(len(runs)))
	prev := srcBase
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r.src-prev))
		b = binary.AppendUvarint(b, uint64(r.n))
		prev = r.src + r.n
	}
	b = binary.AppendUvarint(b, uint64(srcEnd-prev))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

func TestVerify(t *testing.T) {
	e := newVerifyEnv(t)
	// Partition 0: plain records, a committed and an aborted transaction
	// (gaps in the source offsets), more plain records. Partition 1: plain.
	e.produce(e.src, 0, "a", 20)
	e.transaction(0, 4, true)
	e.transaction(0, 3, false)
	e.produce(e.src, 0, "b", 10)
	e.produce(e.src, 1, "c", 25)
	e.replicate(false)

	m0 := e.loadMap(0)
	if m0.SourceEnd()-m0.SourceStart() == m0.TargetEnd()-m0.TargetStart() {
		t.Fatalf("partition 0 should have gaps: source [%d,%d) target [%d,%d)", m0.SourceStart(), m0.SourceEnd(), m0.TargetStart(), m0.TargetEnd())
	}
	committed := map[int32]int64{0: 20 + 4 + 10, 1: 25}

	// 1. A faithful copy passes, as a table and as JSON.
	out, err := e.verify(e.topic)
	t.Logf("verify:\n%s", out)
	if err != nil {
		t.Fatalf("verify of a faithful copy failed: %v\n%s", err, out)
	}
	for p, n := range committed {
		row := fmt.Sprintf("orders %d", p)
		found := false
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 8 && strings.HasPrefix(collapse(line), row+" ") {
				found = true
				if f[4] != strconv.FormatInt(n, 10) || f[5] != f[6] || f[7] != "ok" {
					t.Errorf("partition %d row: %q (want %d records, equal hashes, ok)", p, line, n)
				}
			}
		}
		if !found {
			t.Errorf("no row for partition %d", p)
		}
	}
	if !strings.Contains(out, "2 partitions verified: source and target agree") {
		t.Errorf("no verdict line:\n%s", out)
	}
	js, err := e.verify("-o", "json", e.topic)
	if err != nil {
		t.Fatal(err)
	}
	var rep verifyReport
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if !rep.OK || len(rep.Partitions) != 2 {
		t.Fatalf("json report: %s", js)
	}
	for _, p := range rep.Partitions {
		m := e.loadMap(p.Partition)
		if p.Records != committed[p.Partition] || p.SourceHash != p.TargetHash || len(p.SourceHash) != 64 ||
			p.Source != [2]int64{m.SourceStart(), m.SourceEnd()} || p.Target != [2]int64{m.TargetStart(), m.TargetEnd()} {
			t.Errorf("json partition %+v", p)
		}
	}

	// 2. Maps that lie are caught, naming the offsets. The map is first
	// compacted into its snapshot (the delta file emptied), so the lying
	// snapshots below are the whole map verify reads.
	if err := replicator.SaveMap(e.mapDir, e.loadMap(0)); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(e.mapPath(0))
	if err != nil {
		t.Fatal(err)
	}
	runs := mapRuns(m0)
	if len(runs) != 2 {
		t.Fatalf("partition 0 runs %+v, want 2 (the aborted transaction and the markers are one gap)", runs)
	}
	meta, ss, ts, se := m0.Meta(), m0.SourceStart(), m0.TargetStart(), m0.SourceEnd()
	if !bytes.Equal(encodeMap(meta, ss, ts, runs, se), good) {
		t.Fatal("encodeMap does not reproduce the replicator's map file")
	}
	r0, r1 := runs[0], runs[1]
	for _, c := range []struct {
		name string
		file []byte
		want string
	}{{
		// The second run claims one more offset before it (the abort
		// marker) and one fewer at its end.
		name: "run shifted back",
		file: encodeMap(meta, ss, ts, []mapRun{r0, {r1.src - 1, r1.tgt, r1.n}}, se),
		want: fmt.Sprintf("target offset %d holds a record no committed source record explains (the map gives source offset %d", r1.tgt, r1.src-1),
	}, {
		name: "committed record as a gap",
		file: encodeMap(meta, ss, ts+1, []mapRun{{r0.src + 1, r0.tgt + 1, r0.n - 1}, r1}, se),
		want: fmt.Sprintf("source offset %d is a committed record but the offset map treats it as a gap", ss),
	}, {
		name: "target shifted by one",
		file: encodeMap(meta, ss, ts+1, []mapRun{{r0.src, r0.tgt + 1, r0.n}, {r1.src, r1.tgt + 1, r1.n}}, se),
		want: fmt.Sprintf(`source offset %d / target offset %d: keys differ (source "", target "a-1")`, ss, ts+1),
	}} {
		if err := os.WriteFile(e.mapPath(0), c.file, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := e.verify(e.topic)
		if err == nil || !strings.Contains(err.Error(), "orders/0") || !strings.Contains(out, c.want) {
			t.Errorf("%s: verify = %v, want a difference %q on orders/0:\n%s", c.name, err, c.want, out)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
	if err := os.WriteFile(e.mapPath(0), good, 0o644); err != nil {
		t.Fatal(err)
	}

	// 3. A missing map is an error.
	if err := os.Rename(e.mapPath(1), e.mapPath(1)+".bak"); err != nil {
		t.Fatal(err)
	}
	out, err = e.verify(e.topic)
	if err == nil || !strings.Contains(out, "ERROR: no offset map at "+e.mapPath(1)) {
		t.Errorf("missing map: verify = %v\n%s", err, out)
	}
	if err := os.Rename(e.mapPath(1)+".bak", e.mapPath(1)); err != nil {
		t.Fatal(err)
	}

	// 4. Records retention deleted from the source are not compared.
	adm := kadm.NewClient(e.client(e.src))
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: e.topic, Partition: 0, At: 10})
	if res, err := adm.DeleteRecords(context.Background(), del); err != nil || res.Error() != nil {
		t.Fatalf("DeleteRecords: %v %v", err, res.Error())
	}
	js, err = e.verify("-o", "json", e.topic)
	if err != nil {
		t.Fatalf("verify after source retention: %v\n%s", err, js)
	}
	rep = verifyReport{}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatal(err)
	}
	if p := rep.Partitions[0]; p.Source[0] != 10 || p.Target[0] != 10 || p.Records != committed[0]-10 || p.Note != "source offsets below 10 deleted by retention" {
		t.Errorf("after DeleteRecords up to 10: %+v", p)
	}

	// 5. Records on the target past the map's end (a replicator that
	// crashed between produce and persisting its map) pass when they are
	// the next source records.
	e.produce(e.src, 0, "d", 5)
	e.replicate(true)
	tgtEnds, err := kadm.NewClient(e.client(e.tgt)).ListEndOffsets(context.Background(), e.topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := tgtEnds.Lookup(e.topic, 0); o.Offset <= e.loadMap(0).TargetEnd() {
		t.Fatalf("target end %d, map end %d: the crash left no tail", o.Offset, e.loadMap(0).TargetEnd())
	}
	out, err = e.verify(e.topic)
	if err != nil || !strings.Contains(out, "target records past the map's end match the next source records") {
		t.Errorf("tail after a crash: verify = %v\n%s", err, out)
	}

	// 6. One record written straight into the target fails the check,
	// naming the partition and the offset.
	m1 := e.loadMap(1)
	e.produce(e.tgt, 1, "intruder", 1)
	out, err = e.verify(e.topic)
	t.Logf("verify after a foreign write:\n%s", out)
	want := fmt.Sprintf("target offset %d (past the offset map's target end %d) holds a record no committed source record after source offset %d explains", m1.TargetEnd(), m1.TargetEnd(), m1.SourceEnd())
	if err == nil || !strings.Contains(err.Error(), "orders/1") || !strings.Contains(out, want) {
		t.Fatalf("verify = %v, want a difference %q on orders/1:\n%s", err, want, out)
	}
	if !strings.Contains(collapse(out), "DIFFERS:") || strings.Count(out, "DIFFERS") != 1 {
		t.Errorf("only partition 1 should differ:\n%s", out)
	}
}

// verify reads flags after the topics too, and refuses no topics.
func TestVerifyArgs(t *testing.T) {
	fs := flagSetForTest()
	pos, err := parseInterspersed(fs, []string{"a", "-o", "json", "b", "--", "-c"})
	if err != nil || strings.Join(pos, ",") != "a,b,-c" || fs.Lookup("o").Value.String() != "json" {
		t.Fatalf("parseInterspersed = %v, %v, -o %s", pos, err, fs.Lookup("o").Value)
	}
	if err := Command(&bytes.Buffer{}, []string{"-c", "x.yaml"}); err == nil || !strings.Contains(err.Error(), "at least one topic") {
		t.Errorf("no topics: %v", err)
	}
}

func flagSetForTest() *flag.FlagSet {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.String("o", "table", "")
	fs.String("c", "", "")
	return fs
}

// collapse squeezes runs of white space to one blank (table columns).
func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }

// Progress goes to stderr: a bar redrawn in place on a terminal, plain
// lines when piped; both end at 100% with every partition finished, and
// the report on stdout carries neither.
func TestVerifyProgressOnATerminalAndPiped(t *testing.T) {
	e := newVerifyEnv(t)
	e.produce(e.src, 0, "a", 20)
	e.transaction(0, 4, true)
	e.transaction(0, 3, false)
	e.produce(e.src, 1, "c", 25)
	e.replicate(false)
	oldOut, oldTerm := progressOut, progressIsTerminal
	t.Cleanup(func() { progressOut, progressIsTerminal = oldOut, oldTerm })
	for _, term := range []bool{true, false} {
		var prog bytes.Buffer
		progressOut, progressIsTerminal = &prog, func() bool { return term }
		out, err := e.verify(e.topic, "-progress-every", "1ms")
		if err != nil {
			t.Fatalf("verify: %v\n%s", err, out)
		}
		got := prog.String()
		t.Logf("terminal %v:\n%q", term, got)
		if strings.Contains(out, "offsets") || strings.Contains(out, "\r") {
			t.Errorf("progress leaked into the report:\n%s", out)
		}
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		last := lines[len(lines)-1]
		if term {
			// 20 + 4 + marker + 3 aborted + marker on partition 0, 25 on 1.
			if !strings.HasPrefix(got, "\r[") || !strings.Contains(last, "[##############################] 100%") ||
				!strings.Contains(last, "54/54 offsets  2/2 partitions") || !strings.HasSuffix(got, "\x1b[K\n") {
				t.Errorf("terminal progress: %q", got)
			}
			continue
		}
		if strings.ContainsAny(got, "\r\x1b") || last != "verify: 100% done, 54 of 54 offsets compared, 2 of 2 partitions finished" {
			t.Errorf("piped progress (last line %q): %q", last, got)
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "verify: ") {
				t.Errorf("piped progress line %q", l)
			}
		}
	}
}
