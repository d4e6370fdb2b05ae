// Package verify is `kproxy verify`: the parallel-run check operators run
// before a flip. It reads both logs through the replicator's persisted
// offset maps and compares them record by record.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/secure"
)

const verifyUsage = `usage: kproxy verify -c FILE [-o table|json] [-timeout 2m] TOPIC...

Compares every partition of each TOPIC on the source and the target through
the replicator's offset maps (<replication state dir>/<topic>/<partition>.offsetmap):
each committed source record in the map's source range must be on the target
at the offset the map gives, with the same key, value, headers (in order) and
timestamp, and the target range must hold nothing else. Run it before a flip.
Exits non-zero on any difference, a missing map, or a read failure.

flags:
`

// Command runs `kproxy verify` with args (the arguments after the
// subcommand) and writes its report to w. It returns an error on any
// difference, a missing map or a read failure.
func Command(w io.Writer, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	path := fs.String("c", "kproxy.yaml", "config file")
	fs.StringVar(path, "config", "kproxy.yaml", "config file")
	out := fs.String("o", "table", "output: table or json")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up reading after this long (a read failure)")
	parallel := fs.Int("parallel", 8, "partitions verified at once")
	progressEvery := fs.Duration("progress-every", 5*time.Second, "when stderr is not a terminal, write a progress line this often (0: only at the end); on a terminal a bar is drawn")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), verifyUsage)
		fs.PrintDefaults()
	}
	topics, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *out != "table" && *out != "json" {
		return fmt.Errorf("-o %q: want table or json", *out)
	}
	if len(topics) == 0 {
		fs.Usage()
		return errors.New("name at least one topic to verify")
	}
	if *parallel < 1 {
		return fmt.Errorf("-parallel %d: must be >= 1", *parallel)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	if cfg.Clusters.Source == nil || cfg.Clusters.Target == nil {
		return fmt.Errorf("%s: verify needs both clusters.source and clusters.target", *path)
	}
	if cfg.StateDir == "" && cfg.Replication.StateDir == "" {
		return fmt.Errorf("%s: no state_dir or replication.state_dir: there are no offset maps to verify against", *path)
	}
	dir := cfg.ReplicationStateDir()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// The clusters' TLS and SASL, as kproxy itself reaches them.
	srcCl, err := secure.Client(cfg, config.Source)
	if err != nil {
		return err
	}
	defer srcCl.Close()
	tgtCl, err := secure.Client(cfg, config.Target)
	if err != nil {
		return err
	}
	defer tgtCl.Close()
	rep, err := verifyTopics(ctx, verifyOptions{
		Source:   srcCl,
		Target:   tgtCl,
		StateDir: dir,
		Topics:   topics,
		Parallel: *parallel,
		Progress: func(p *progress) func() {
			stop, done := make(chan struct{}), make(chan struct{})
			go p.report(progressOut, progressIsTerminal(), *progressEvery, stop, done)
			return func() { close(stop); <-done }
		},
	})
	if err != nil {
		return err
	}
	if *out == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.writeTable(w); err != nil {
		return err
	}
	return rep.err()
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments (`verify orders -o json` works like `verify -o json
// orders`), and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil // everything after -- is a topic
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// verifyOptions say what to verify against which clusters.
type verifyOptions struct {
	SourceBrokers, TargetBrokers []string
	// Source and Target, when set, are used instead of clients built from
	// the broker lists (and are not closed).
	Source, Target *kgo.Client
	StateDir       string
	Topics         []string
	Parallel       int
	// Progress, when set, starts reporting a run's progress once its
	// partitions are known and returns the function that ends it.
	Progress func(*progress) func()
}

// Verdicts of one partition.
const (
	verifyOK     = "ok"
	verifyDiffer = "differ" // the logs or the map disagree
	verifyError  = "error"  // could not verify: missing map, read failure
)

// verifyReport is the outcome of one run; -o json prints it as is.
type verifyReport struct {
	OK         bool              `json:"ok"`
	StateDir   string            `json:"state_dir"`
	Partitions []partitionReport `json:"partitions"`
}

// partitionReport is one partition's verdict. The ranges are the offsets
// compared: the map's ranges, less what retention already deleted.
type partitionReport struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"` // -1: the topic could not be verified at all
	// The offset map's ranges, [start, end).
	MapSource [2]int64 `json:"map_source"`
	MapTarget [2]int64 `json:"map_target"`
	// The ranges compared.
	Source [2]int64 `json:"source"`
	Target [2]int64 `json:"target"`
	// Records is how many committed source records were compared.
	Records int64 `json:"records"`
	// SourceHash and TargetHash are SHA-256 digests over key, value,
	// headers and timestamp of every data record read in the compared
	// ranges, in offset order; equal when the partitions agree.
	SourceHash string `json:"source_sha256"`
	TargetHash string `json:"target_sha256"`
	// Result is ok, differ or error.
	Result string `json:"result"`
	// Difference is the first difference (with its offsets) or the error.
	Difference  string `json:"difference,omitempty"`
	Differences int    `json:"differences,omitempty"`
	// Note says what was not compared and why (retention), and how many
	// target records past the map's end matched the source.
	Note string `json:"note,omitempty"`

	hasMap bool      // the map loaded: the ranges mean something
	prog   *progress // the run's progress (nil: not reported)
}

func (r *partitionReport) differ(format string, args ...any) {
	if r.Differences == 0 {
		r.Difference = fmt.Sprintf(format, args...)
	}
	r.Differences++
	if r.Result != verifyError {
		r.Result = verifyDiffer
	}
}

func (r *partitionReport) fail(format string, args ...any) {
	r.Result = verifyError
	msg := fmt.Sprintf(format, args...)
	if r.Difference == "" {
		r.Difference = msg
	} else {
		r.Difference = msg + "; before that: " + r.Difference
	}
}

// resultText is the RESULT column.
func (r *partitionReport) resultText() string {
	switch r.Result {
	case verifyOK:
		if r.Note != "" {
			return "ok (" + r.Note + ")"
		}
		return "ok"
	case verifyDiffer:
		s := "DIFFERS: " + r.Difference
		if r.Differences > 1 {
			s += fmt.Sprintf(" (+%d more differences)", r.Differences-1)
		}
		return s
	}
	return "ERROR: " + r.Difference
}

func (rep *verifyReport) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tSOURCE[start,end)\tTARGET[start,end)\tRECORDS\tHASH(source)\tHASH(target)\tRESULT")
	short := func(h string) string {
		if len(h) > 16 {
			return h[:16]
		}
		if h == "" {
			return "-"
		}
		return h
	}
	rng := func(r [2]int64) string { return fmt.Sprintf("[%d,%d)", r[0], r[1]) }
	for _, p := range rep.Partitions {
		part, src, tgt := strconv.Itoa(int(p.Partition)), rng(p.Source), rng(p.Target)
		if p.Partition < 0 {
			part = "-"
		}
		if !p.hasMap {
			src, tgt = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Topic, part, src, tgt, p.Records, short(p.SourceHash), short(p.TargetHash), p.resultText())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	bad := rep.failed()
	if len(bad) == 0 {
		_, err := fmt.Fprintf(w, "\n%d partitions verified: source and target agree\n", len(rep.Partitions))
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d of %d partitions differ or could not be verified: do not flip\n", len(bad), len(rep.Partitions))
	return err
}

func (rep *verifyReport) failed() []partitionReport {
	var bad []partitionReport
	for _, p := range rep.Partitions {
		if p.Result != verifyOK {
			bad = append(bad, p)
		}
	}
	return bad
}

// err is the command's error: nil when every partition agrees.
func (rep *verifyReport) err() error {
	bad := rep.failed()
	if len(bad) == 0 {
		return nil
	}
	first := bad[0]
	where := first.Topic
	if first.Partition >= 0 {
		where = fmt.Sprintf("%s/%d", first.Topic, first.Partition)
	}
	return fmt.Errorf("%d of %d partitions differ or could not be verified; first: %s: %s", len(bad), len(rep.Partitions), where, first.Difference)
}

// verifyTopics verifies every partition of the topics. It returns an error
// only when it cannot start (clients); everything else is in the report.
func verifyTopics(ctx context.Context, o verifyOptions) (*verifyReport, error) {
	src, err := newVerifySide("source", o.Source, o.SourceBrokers)
	if err != nil {
		return nil, err
	}
	defer src.close()
	tgt, err := newVerifySide("target", o.Target, o.TargetBrokers)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	if o.Parallel < 1 {
		o.Parallel = 1
	}
	rep := &verifyReport{StateDir: o.StateDir}
	var jobs []*partitionReport
	var run []func()
	for _, topic := range dedupe(o.Topics) {
		n, err := topicPartitions(ctx, src, tgt, topic)
		if err != nil {
			jobs = append(jobs, &partitionReport{Topic: topic, Partition: -1, Result: verifyError, Difference: err.Error()})
			continue
		}
		for p := int32(0); p < n; p++ {
			pr := &partitionReport{Topic: topic, Partition: p, Result: verifyOK}
			jobs = append(jobs, pr)
			run = append(run, func() {
				verifyPartition(ctx, src, tgt, o.StateDir, pr)
				pr.prog.partitionDone(pr, pr.Records)
			})
		}
	}
	var prog *progress
	if o.Progress != nil {
		prog = newProgress(len(run))
		defer o.Progress(prog)()
	}
	for _, pr := range jobs {
		pr.prog = prog
	}
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for _, f := range run {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f()
		}()
	}
	wg.Wait()
	rep.OK = true
	for _, j := range jobs {
		rep.Partitions = append(rep.Partitions, *j)
		if j.Result != verifyOK {
			rep.OK = false
		}
	}
	return rep, nil
}

func dedupe(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// topicPartitions is the topic's partition count, which both clusters must
// agree on.
func topicPartitions(ctx context.Context, src, tgt *verifySide, topic string) (int32, error) {
	sd, err := src.topic(ctx, topic, false)
	if err != nil {
		return 0, err
	}
	td, err := tgt.topic(ctx, topic, false)
	if err != nil {
		return 0, err
	}
	ns, nt := int32(len(sd.Partitions)), int32(len(td.Partitions))
	if ns != nt {
		return 0, fmt.Errorf("the source topic has %d partitions, the target %d", ns, nt)
	}
	return ns, nil
}

// verifySide is one cluster: a client and its cached metadata.
type verifySide struct {
	name string
	cl   *kgo.Client
	adm  *kadm.Client
	own  bool

	mu     sync.Mutex // guards topics
	topics map[string]kadm.TopicDetail
}

func newVerifySide(name string, cl *kgo.Client, brokers []string) (*verifySide, error) {
	s := &verifySide{name: name, cl: cl, topics: map[string]kadm.TopicDetail{}}
	if s.cl == nil {
		if len(brokers) == 0 {
			return nil, fmt.Errorf("no %s bootstrap brokers", name)
		}
		var err error
		if s.cl, err = kgo.NewClient(kgo.SeedBrokers(brokers...)); err != nil {
			return nil, fmt.Errorf("%s client: %w", name, err)
		}
		s.own = true
	}
	s.adm = kadm.NewClient(s.cl)
	return s, nil
}

func (s *verifySide) close() {
	if s.own {
		s.cl.Close()
	}
}

// topic returns the topic's metadata, cached unless refresh.
func (s *verifySide) topic(ctx context.Context, topic string, refresh bool) (kadm.TopicDetail, error) {
	s.mu.Lock()
	d, ok := s.topics[topic]
	s.mu.Unlock()
	if ok && !refresh {
		return d, nil
	}
	td, err := s.adm.ListTopics(ctx, topic)
	if err != nil {
		return d, fmt.Errorf("%s metadata: %w", s.name, err)
	}
	d = td[topic]
	if d.Err != nil {
		return d, fmt.Errorf("%s topic %s: %w", s.name, topic, d.Err)
	}
	s.mu.Lock()
	s.topics[topic] = d
	s.mu.Unlock()
	return d, nil
}

// logBounds returns a partition's log start and end offsets.
func (s *verifySide) logBounds(ctx context.Context, topic string, partition int32) (start, end int64, err error) {
	st, err := s.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = st.Error()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s start offsets: %w", s.name, err)
	}
	en, err := s.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = en.Error()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s end offsets: %w", s.name, err)
	}
	so, ok1 := st.Lookup(topic, partition)
	eo, ok2 := en.Lookup(topic, partition)
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("%s offsets: partition %d missing from the answer", s.name, partition)
	}
	return so.Offset, eo.Offset, nil
}

// loadOffsetMap reads a partition's map as the replicator does: its
// snapshot and the deltas saved after it.
func loadOffsetMap(dir, topic string, partition int32) (*replicator.OffsetMap, string, error) {
	path := filepath.Join(dir, topic, strconv.Itoa(int(partition))+".offsetmap")
	m, err := replicator.LoadMap(dir, topic, partition)
	if err == nil && m == nil {
		err = os.ErrNotExist
	}
	return m, path, err
}

// verifyPartition fills pr with the verdict of one partition.
func verifyPartition(ctx context.Context, src, tgt *verifySide, dir string, pr *partitionReport) {
	topic, partition := pr.Topic, pr.Partition
	m, path, err := loadOffsetMap(dir, topic, partition)
	if errors.Is(err, os.ErrNotExist) {
		pr.fail("no offset map at %s: the partition was never replicated with this state directory", path)
		return
	}
	if err != nil {
		pr.fail("offset map %s: %v", path, err)
		return
	}
	if m.Meta().SourceShift != 0 {
		// After a cutover and a rollback the copy's source side is virtual
		// offsets, not source log offsets; comparing record by record
		// would need the chain of maps.
		pr.fail("offset map %s belongs to a copy that resumed after a rollback (its source offsets are shifted by %d): verify compares a topic's first copy, before its first flip", path, m.Meta().SourceShift)
		return
	}
	pr.hasMap = true
	ss, se, ts, te := m.SourceStart(), m.SourceEnd(), m.TargetStart(), m.TargetEnd()
	pr.MapSource, pr.MapTarget = [2]int64{ss, se}, [2]int64{ts, te}
	pr.Source, pr.Target = pr.MapSource, pr.MapTarget
	meta := m.Meta()
	if meta.Topic != topic || meta.Partition != partition {
		pr.fail("offset map %s belongs to %s/%d", path, meta.Topic, meta.Partition)
		return
	}
	sd, err := src.topic(ctx, topic, false)
	if err != nil {
		pr.fail("%v", err)
		return
	}
	td, err := tgt.topic(ctx, topic, false)
	if err != nil {
		pr.fail("%v", err)
		return
	}
	if meta.SourceTopicID != sd.ID {
		pr.differ("the source topic was recreated since the offset map was written (topic id %x, map has %x)", sd.ID, meta.SourceTopicID)
		return
	}
	if meta.TargetTopicID != td.ID {
		pr.differ("the target topic was recreated since the offset map was written (topic id %x, map has %x)", td.ID, meta.TargetTopicID)
		return
	}

	// Where to start: retention may have deleted the oldest records of
	// either log; those cannot be compared.
	srcLogStart, _, err := src.logBounds(ctx, topic, partition)
	if err != nil {
		pr.fail("%v", err)
		return
	}
	tgtLogStart, _, err := tgt.logBounds(ctx, topic, partition)
	if err != nil {
		pr.fail("%v", err)
		return
	}
	srcFrom, tgtFrom := ss, ts
	var notes []string
	if srcLogStart > srcFrom {
		if srcLogStart > se {
			pr.differ("the source log starts at %d, past the offset map's end %d: records that were never copied are gone", srcLogStart, se)
			return
		}
		srcFrom = srcLogStart
		tgtFrom, _ = m.ToTarget(srcFrom)
		notes = append(notes, fmt.Sprintf("source offsets below %d deleted by retention", srcLogStart))
	}
	if tgtLogStart > tgtFrom {
		if tgtLogStart > te {
			pr.differ("the target log starts at %d, past the offset map's target end %d", tgtLogStart, te)
			return
		}
		tgtFrom = tgtLogStart
		srcFrom, _ = m.ToSource(tgtFrom)
		notes = append(notes, fmt.Sprintf("target offsets below %d deleted by retention", tgtLogStart))
	}
	pr.Source, pr.Target = [2]int64{srcFrom, se}, [2]int64{tgtFrom, te}
	pr.Note = strings.Join(notes, "; ")
	pr.prog.addTotal(se - srcFrom)

	if !compareRange(ctx, src, tgt, m, 0, pr, srcFrom, se, tgtFrom, te) {
		return
	}
	verifyTail(ctx, src, tgt, pr, se, te)
}

// compareRange compares the committed source records in [srcFrom, se)
// (source log offsets) with the target records in [tgtFrom, te) through
// the map m, whose source side is the source's log offsets plus shift
// (MapMeta.SourceShift). Differences go into pr; it reports whether the
// comparison ran to the end (false: a read failed or the target ends
// early, already in pr).
func compareRange(ctx context.Context, src, tgt *verifySide, m *replicator.OffsetMap, shift int64, pr *partitionReport, srcFrom, se, tgtFrom, te int64) bool {
	sh, th := sha256.New(), sha256.New()
	defer func() {
		pr.SourceHash, pr.TargetHash = hex.EncodeToString(sh.Sum(nil)), hex.EncodeToString(th.Sum(nil))
	}()
	sc := &verifyCursor{side: src, topic: pr.Topic, partition: pr.Partition, off: srcFrom, end: se, committed: true}
	tc := &verifyCursor{side: tgt, topic: pr.Topic, partition: pr.Partition, off: tgtFrom, end: te}

	// peekTarget returns the next target record (nil at the end), hashing
	// each data record once.
	var hashedTo int64 = -1
	peekTarget := func() (*kgo.Record, error) {
		r, err := tc.peek(ctx)
		if r != nil && r.Offset > hashedTo {
			hashedTo = r.Offset
			if !r.Attrs.IsControl() {
				hashRecord(th, r)
			}
		}
		return r, err
	}
	extra := func(r *kgo.Record) {
		back, _ := m.ToSource(r.Offset)
		back -= shift
		if r.Attrs.IsControl() {
			pr.differ("target offset %d holds a transaction marker, not a copied record (the map gives source offset %d)", r.Offset, back)
			return
		}
		pr.differ("target offset %d holds a record no committed source record explains (the map gives source offset %d, which is not a committed record there)", r.Offset, back)
	}
	for {
		s, err := sc.peek(ctx)
		if err != nil {
			pr.fail("%v", err)
			return false
		}
		if s == nil {
			break
		}
		sc.pop()
		hashRecord(sh, s)
		pr.Records++
		pr.prog.add(1)
		want, _ := m.ToTarget(s.Offset + shift)
		if back, ok := m.ToSource(want); !ok || back-shift != s.Offset || want >= te {
			pr.differ("source offset %d is a committed record but the offset map treats it as a gap (it maps to target offset %d, which is source offset %d)", s.Offset, want, back)
			continue
		}
		for {
			t, err := peekTarget()
			if err != nil {
				pr.fail("%v", err)
				return false
			}
			if t == nil {
				if !tc.short { // cannot happen: want < te
					pr.differ("target offset %d is missing (source offset %d)", want, s.Offset)
				}
				break
			}
			if t.Offset < want {
				extra(t)
				tc.pop()
				continue
			}
			if t.Offset > want {
				pr.differ("target offset %d is missing (it should hold source offset %d; the target has offset %d next)", want, s.Offset, t.Offset)
				break
			}
			tc.pop()
			if t.Attrs.IsControl() {
				pr.differ("target offset %d holds a transaction marker instead of source offset %d's record", t.Offset, s.Offset)
			} else if d := recordDiff(s, t); d != "" {
				pr.differ("source offset %d / target offset %d: %s", s.Offset, t.Offset, d)
			}
			break
		}
	}
	if sc.short {
		pr.differ("the source log ends at %d, before the offset map's source end %d", sc.logEnd, se)
	}
	for {
		t, err := peekTarget()
		if err != nil {
			pr.fail("%v", err)
			return false
		}
		if t == nil {
			break
		}
		tc.pop()
		extra(t)
	}
	if tc.short {
		back, _ := m.ToSource(tc.logEnd)
		back -= shift
		pr.differ("the target log ends at %d, before the offset map's target end %d (source offset %d onwards is missing)", tc.logEnd, te, back)
		return false
	}
	return true
}

// verifyTail checks the target records beyond the map's end: the replicator
// persists its map after the target acknowledged a batch, so a running (or
// crashed) replicator leaves target records the map does not cover yet.
// Each must be a copy of the next committed source record after the map's
// source end, in order; anything else was written by someone else.
func verifyTail(ctx context.Context, src, tgt *verifySide, pr *partitionReport, se, te int64) {
	_, tgtEnd, err := tgt.logBounds(ctx, pr.Topic, pr.Partition)
	if err != nil {
		pr.fail("%v", err)
		return
	}
	if tgtEnd <= te {
		return
	}
	tc := &verifyCursor{side: tgt, topic: pr.Topic, partition: pr.Partition, off: te, end: tgtEnd}
	sc := &verifyCursor{side: src, topic: pr.Topic, partition: pr.Partition, off: se, end: math.MaxInt64, committed: true}
	matched := 0
	for {
		t, err := tc.peek(ctx)
		if err != nil {
			pr.fail("%v", err)
			return
		}
		if t == nil {
			break
		}
		tc.pop()
		if t.Attrs.IsControl() {
			pr.differ("target offset %d (past the offset map's target end %d) holds a transaction marker: something else wrote into the target partition", t.Offset, te)
			return
		}
		s, err := sc.peek(ctx)
		if err != nil {
			pr.fail("%v", err)
			return
		}
		if s == nil {
			pr.differ("target offset %d (past the offset map's target end %d) holds a record no committed source record after source offset %d explains: something else wrote into the target partition", t.Offset, te, se)
			return
		}
		sc.pop()
		if d := recordDiff(s, t); d != "" {
			pr.differ("target offset %d (past the offset map's target end %d) is not a copy of the next committed source record, source offset %d: %s", t.Offset, te, s.Offset, d)
			return
		}
		matched++
	}
	if matched > 0 {
		note := fmt.Sprintf("%d target records past the map's end match the next source records", matched)
		if pr.Note != "" {
			note = pr.Note + "; " + note
		}
		pr.Note = note
	}
}

// hashRecord feeds one record into a running digest: timestamp, key, value
// and headers, each length-prefixed (null distinct from empty).
func hashRecord(h hash.Hash, r *kgo.Record) {
	var b []byte
	b = binary.BigEndian.AppendUint64(b, uint64(r.Timestamp.UnixMilli()))
	b = appendNullable(b, r.Key)
	b = appendNullable(b, r.Value)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Headers)))
	for _, hd := range r.Headers {
		b = appendNullable(b, []byte(hd.Key))
		b = appendNullable(b, hd.Value)
	}
	h.Write(b)
}

func appendNullable(b, v []byte) []byte {
	if v == nil {
		return binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// recordDiff says how two records differ, or "" when they are the same.
func recordDiff(s, t *kgo.Record) string {
	switch {
	case !sameBytes(s.Key, t.Key):
		return fmt.Sprintf("keys differ (source %s, target %s)", quoteBytes(s.Key), quoteBytes(t.Key))
	case !sameBytes(s.Value, t.Value):
		return fmt.Sprintf("values differ (source %s, target %s)", quoteBytes(s.Value), quoteBytes(t.Value))
	case s.Timestamp.UnixMilli() != t.Timestamp.UnixMilli():
		return fmt.Sprintf("timestamps differ (source %d, target %d)", s.Timestamp.UnixMilli(), t.Timestamp.UnixMilli())
	case len(s.Headers) != len(t.Headers):
		return fmt.Sprintf("header counts differ (source %d, target %d)", len(s.Headers), len(t.Headers))
	}
	for i := range s.Headers {
		a, b := s.Headers[i], t.Headers[i]
		if a.Key != b.Key || !sameBytes(a.Value, b.Value) {
			return fmt.Sprintf("header %d differs (source %q=%s, target %q=%s)", i, a.Key, quoteBytes(a.Value), b.Key, quoteBytes(b.Value))
		}
	}
	return ""
}

// sameBytes is bytes.Equal that tells null from empty.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && string(a) == string(b)
}

func quoteBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	const max = 40
	if len(b) > max {
		return fmt.Sprintf("%q… (%d bytes)", b[:max], len(b))
	}
	return strconv.Quote(string(b))
}

// verifyCursor reads one partition's records in [off, end) in order, with
// single-partition Fetch requests to the leader: the fetch answers say
// exactly how far each read got, so the read stops at end even when the
// last offsets below it are transaction markers or aborted records. The
// source is read read_committed (data records only); the target
// read_uncommitted with control records, so that every target offset that
// is not a plain copied record shows up.
type verifyCursor struct {
	side      *verifySide
	topic     string
	partition int32
	off, end  int64
	committed bool

	buf    []*kgo.Record
	done   bool
	short  bool  // the log ended before end
	logEnd int64 // where, when short
}

var verifyDecompressor = kgo.DefaultDecompressor()

func (c *verifyCursor) peek(ctx context.Context) (*kgo.Record, error) {
	for len(c.buf) == 0 && !c.done {
		if err := c.fill(ctx); err != nil {
			return nil, err
		}
	}
	if len(c.buf) == 0 {
		return nil, nil
	}
	return c.buf[0], nil
}

func (c *verifyCursor) pop() { c.buf = c.buf[1:] }

// fill fetches the next records, retrying transient errors until ctx ends.
func (c *verifyCursor) fill(ctx context.Context) error {
	if c.off >= c.end {
		c.done = true
		return nil
	}
	var lastErr error
	stalls := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("reading %s %s/%d at offset %d: %w (last error: %v)", c.side.name, c.topic, c.partition, c.off, ctx.Err(), lastErr)
			case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, time.Second)):
			}
		}
		fp, err := c.fetch(ctx, attempt > 0)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("reading %s %s/%d at offset %d: %w (last error: %v)", c.side.name, c.topic, c.partition, c.off, ctx.Err(), err)
			}
			lastErr = err
			continue
		}
		isolation := kgo.ReadUncommitted()
		if c.committed {
			isolation = kgo.ReadCommitted()
		}
		recs, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Offset: c.off, IsolationLevel: isolation, KeepControlRecords: !c.committed,
			Topic: c.topic, Partition: c.partition,
		}, fp, verifyDecompressor, nil)
		if recs.Err != nil {
			if kerr.IsRetriable(recs.Err) && !errors.Is(recs.Err, kerr.OffsetOutOfRange) {
				lastErr = recs.Err
				continue
			}
			return fmt.Errorf("reading %s %s/%d at offset %d: %w (log start %d, end %d)", c.side.name, c.topic, c.partition, c.off, recs.Err, fp.LogStartOffset, fp.HighWatermark)
		}
		prev := c.off
		for _, r := range recs.Records {
			if r.Offset >= c.off && r.Offset < c.end {
				c.buf = append(c.buf, r)
			}
		}
		if next > c.off {
			c.off = next
		}
		if c.off >= c.end {
			c.done = true
			return nil
		}
		if c.off > prev {
			return nil
		}
		// Nothing read: the log may end here.
		limit := fp.HighWatermark
		if c.committed && fp.LastStableOffset >= 0 {
			limit = fp.LastStableOffset
		}
		if c.off >= limit {
			c.done, c.short, c.logEnd = true, true, limit
			return nil
		}
		if len(fp.RecordBatches) == 0 {
			lastErr = fmt.Errorf("empty fetch answer at offset %d below the log end %d", c.off, limit)
			continue // ask again
		}
		if stalls++; stalls > 5 {
			return fmt.Errorf("reading %s %s/%d: the fetch at offset %d makes no progress (log end %d)", c.side.name, c.topic, c.partition, c.off, limit)
		}
	}
}

// fetch sends one single-partition Fetch to the partition's leader.
func (c *verifyCursor) fetch(ctx context.Context, refresh bool) (*kmsg.FetchResponseTopicPartition, error) {
	d, err := c.side.topic(ctx, c.topic, refresh)
	if err != nil {
		return nil, err
	}
	p, ok := d.Partitions[c.partition]
	if !ok || p.Leader < 0 {
		return nil, fmt.Errorf("%s %s/%d has no leader", c.side.name, c.topic, c.partition)
	}
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = 500
	req.MinBytes = 1
	req.MaxBytes = 16 << 20
	if c.committed {
		req.IsolationLevel = 1
	}
	req.SessionEpoch = -1 // a full fetch that opens no session (KIP-227)
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = c.topic, d.ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = c.partition
	rp.FetchOffset = c.off
	rp.PartitionMaxBytes = 4 << 20
	rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	kresp, err := c.side.cl.Broker(int(p.Leader)).Request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s broker %d: fetch: %w", c.side.name, p.Leader, err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("%s broker %d: fetch: %w", c.side.name, p.Leader, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].Partition != c.partition {
		return nil, fmt.Errorf("%s broker %d: the fetch answer does not hold exactly partition %d", c.side.name, p.Leader, c.partition)
	}
	return &resp.Topics[0].Partitions[0], nil
}
