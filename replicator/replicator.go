package replicator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/internal/pipes"
)

// Options configure a Replicator. Source and Target clients, when given, are
// used as they are and not closed; otherwise clients are built from the
// bootstrap lists and closed by Stop.
type Options struct {
	// Source and Target are franz-go clients for the two clusters.
	Source, Target *kgo.Client
	// SourceBrokers and TargetBrokers are bootstrap addresses, used when
	// the corresponding client is nil.
	SourceBrokers, TargetBrokers []string
	// SourceOpts and TargetOpts are added to the clients built from the
	// bootstrap lists: the clusters' TLS and SASL (secure.Upstream).
	SourceOpts, TargetOpts []kgo.Opt

	// Topics are the source topic names to copy (exact names; globs are
	// config's business).
	Topics []string

	// StateDir holds one offset map file per partition
	// (<dir>/<topic>/<partition>.offsetmap). Required.
	StateDir string

	// Logger is the replicator's logger; default a null logger.
	Logger hclog.Logger
	// Registerer receives the replicator's metrics; nil registers none.
	Registerer prometheus.Registerer

	// FetchMaxBytes bounds one source fetch response. Default 50 MiB.
	FetchMaxBytes int32
	// PartitionMaxBytes bounds one partition's data in a fetch; the broker
	// still returns at least one whole batch (KIP-74). Default 1 MiB.
	PartitionMaxBytes int32
	// FetchMaxWait is the source poll while some partition of the leader
	// is busy copying an answer (its next fetch should not wait out a long
	// poll). Default 500ms.
	FetchMaxWait time.Duration
	// ProduceTimeout is how long the copy waits for one produce answer from
	// the target before it drops the connection and starts its session
	// again. Default 60 s.
	ProduceTimeout time.Duration
	// IdleFetchWait is the source long poll while every partition of the
	// leader is caught up and waiting for records: new records end it at
	// once, and a partition that starts copying meanwhile is fetched
	// beside it, so it only bounds how often an idle source is asked, and
	// the broker reads every partition of the fetch session each time
	// (fetcher.go). Default 10s; never below FetchMaxWait.
	IdleFetchWait time.Duration
	// CopyLinger is how long a source fetch may wait for more records
	// while the copy is flowing (the leader's last answer carried
	// records): the request asks copyMinBytes and waits at most this, so
	// a trickle of small batches comes back many to an answer instead of
	// one answer per batch (fetcher.go). It adds at most this to the
	// copy's lag; idle and urgent polls do not linger. Default 5ms;
	// negative turns it off.
	CopyLinger time.Duration
	// RetryBackoff is the pause before a partition retries after a
	// transient error. Default 1s.
	RetryBackoff time.Duration

	// RetentionWarning is the retention risk below which a partition is
	// reported at risk (Status, metric, a warning log line): the estimated
	// time until the source's retention deletes the oldest record not yet
	// copied (lag.go). Default 1h.
	RetentionWarning time.Duration
	// StatsInterval is how often rates and retention risks are
	// recomputed. Default 10s.
	StatsInterval time.Duration

	// TransactionalIDPrefix, when set, makes each partition's copy a
	// transactional producer with transactional.id prefix+"<topic>-<p>",
	// fenced by the broker when another instance takes the partition over
	// (txncopy.go). Empty (one instance): the idempotent copy.
	TransactionalIDPrefix string

	// Owns, when set, says whether this instance copies a partition
	// (several instances: the membership's owner of the partition).
	// Partitions it does not own are not copied and have no map here;
	// Reassign applies a change of its answers. nil: every partition.
	Owns func(topic string, partition int32) bool

	// NoSplice turns the spliced copy off (fetchsplice.go): every batch
	// passes through memory, as over TLS. For comparisons and tests.
	NoSplice bool

	// Hooks are for crash tests; leave zero in production.
	Hooks Hooks
}

// Hooks let tests stop the copy at chosen points.
type Hooks struct {
	// AfterProduce runs after the target acknowledged a batch and before
	// the offset map records it. Returning true makes the partition stop
	// right there, without updating or persisting its map, as if the
	// process had been killed.
	AfterProduce func(topic string, partition int32) (crash bool)
	// BeforeSend runs before each batch is sent to the target (in
	// fenced mode after the transaction is open): a test blocks in it to
	// pause the copy as SIGSTOP would.
	BeforeSend func(topic string, partition int32)
}

// Replicator copies source partitions to the target batch for batch and
// keeps the exact offset map of each. Start it once; Stop it once.
type Replicator struct {
	opts    Options
	log     hclog.Logger
	src     *kgo.Client
	tgt     *kgo.Client
	srcAdm  *kadm.Client
	tgtAdm  *kadm.Client
	ownSrc  bool
	ownTgt  bool
	metrics *metrics
	// pipes hold spliced batch bodies between the source and the target
	// socket (fetchsplice.go); Max is replicatorPipes.
	pipes pipes.Pool

	mu        sync.Mutex // guards the fields below
	parts     map[topicPartition]*partition
	topicErrs map[string]error
	cancel    context.CancelFunc
	runCtx    context.Context      // the partitions' context, set by Start
	runs      map[string]*topicRun // per topic, for StopTopic
	// starting are the topics an AddTopic is setting up (metadata,
	// target topic creation: round trips, slow over TLS and SASL): a
	// second AddTopic of one of them must not start a second set of
	// partition copies, which would write every batch twice.
	starting  map[string]bool
	fetchers  map[int32]*leaderFetcher  // shared source fetches, by leader (fetcher.go)
	retention map[string]topicRetention // source topics' retention settings (lag.go)
	ends      map[string]sourceEnds     // source end offsets for interrupted partitions (refreshHWM)
	// writes counts the offsets produced into each target partition; kept
	// across StopTopic (a topic's copy stops and starts again with flips),
	// so its counts only grow (Writes).
	writes map[topicPartition]*Writes

	wg sync.WaitGroup // partition goroutines

	reassignMu sync.Mutex // one Reassign at a time (owners.go)

	pmu    sync.Mutex             // guards pconns and uconns
	pconns map[int32]*produceConn // the copy's produce connections, by target broker (produceconn.go)
	// uconns are the urgent partitions' produce connections (a drain
	// waits on them: Urge), by target broker: their last
	// batches do not queue behind every other partition's on pconns.
	uconns map[int32]*produceConn
}

type topicPartition struct {
	topic     string
	partition int32
}

// PartitionStatus is one partition's replication state, for /status and
// `kproxy status`. Offsets are source (virtual) offsets unless named Target.
type PartitionStatus struct {
	Topic     string
	Partition int32 // -1 for a topic-level error
	// SourceHWM is the source high watermark seen by the last fetch.
	SourceHWM int64
	// CopiedThrough is the next source offset to copy (the map's
	// SourceEnd): every offset below it is on the target or a gap.
	CopiedThrough int64
	// TargetEnd is the target end offset as far as the replicator knows.
	TargetEnd int64
	// LagRecords is SourceHWM - CopiedThrough (markers count as records).
	LagRecords int64
	// LagMillis is how long the partition has been behind: 0 when caught
	// up, else the time since it was last caught up (or since start).
	LagMillis int64
	// LagBytes estimates the source bytes of the lag (LagRecords × the
	// average source bytes per offset seen so far; 0 before any batch).
	LagBytes int64
	// RecordLagMillis is the age of the oldest record not yet copied (its
	// timestamp, estimated; 0 when caught up or unknown).
	RecordLagMillis int64
	// ProduceRecordsPerSec and CopyRecordsPerSec are the source's produce
	// rate and the copy's rate over the last StatsInterval.
	ProduceRecordsPerSec, CopyRecordsPerSec float64
	// CatchUpMillis estimates when the copy catches up (the initial sync's
	// ETA): 0 caught up, -1 not catching up at the current rates.
	CatchUpMillis int64
	// RetentionRiskMillis estimates the time until the source's retention
	// deletes the oldest record not yet copied (data loss); -1 when nothing
	// is at risk. RetentionAtRisk is true below Options.RetentionWarning.
	RetentionRiskMillis int64
	RetentionAtRisk     bool
	// Err is the last error; Fatal means the partition stopped for good
	// (foreign writer, truncated source, topic mismatch) until restart.
	Err   string
	Fatal bool
	// Fenced means another instance took the partition's copy over and
	// the target refused this instance's write (txncopy.go): this
	// instance no longer copies it.
	Fenced bool
}

// metadataMaxCache bounds how long the clients answer metadata lookups from
// their cache (kgo's default is 5 s). A topic the replicator just created
// on the target was cached as unknown by the check before; with the default
// every new topic waited 5 s before its partitions could start, one topic
// after the other (the cutover benchmark's 20 topics took 100 s to set up).
var metadataMaxCache = kgo.MetadataMinAge(100 * time.Millisecond)

// New checks the options and builds clients; it starts nothing.
func New(o Options) (*Replicator, error) {
	if o.StateDir == "" {
		return nil, errors.New("replicator: StateDir is required: the offset maps must survive a restart")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.FetchMaxBytes <= 0 {
		o.FetchMaxBytes = 50 << 20
	}
	if o.PartitionMaxBytes <= 0 {
		o.PartitionMaxBytes = 1 << 20
	}
	if o.FetchMaxWait <= 0 {
		o.FetchMaxWait = 500 * time.Millisecond
	}
	if o.IdleFetchWait <= 0 {
		o.IdleFetchWait = 10 * time.Second
	}
	o.IdleFetchWait = max(o.IdleFetchWait, o.FetchMaxWait)
	switch {
	case o.CopyLinger == 0:
		o.CopyLinger = defaultCopyLinger
	case o.CopyLinger < 0:
		o.CopyLinger = 0
	}
	o.CopyLinger = min(o.CopyLinger, o.FetchMaxWait)
	if o.RetentionWarning <= 0 {
		o.RetentionWarning = time.Hour
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 10 * time.Second
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = time.Second
	}
	r := &Replicator{opts: o, log: o.Logger, src: o.Source, tgt: o.Target,
		parts: map[topicPartition]*partition{}, topicErrs: map[string]error{}}
	r.pipes.Max = replicatorPipes
	var err error
	if r.src == nil {
		if r.src, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(o.SourceBrokers...), metadataMaxCache}, o.SourceOpts...)...); err != nil {
			return nil, fmt.Errorf("replicator: source client: %w", err)
		}
		r.ownSrc = true
	}
	if r.tgt == nil {
		if r.tgt, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(o.TargetBrokers...), metadataMaxCache}, o.TargetOpts...)...); err != nil {
			r.closeClients()
			return nil, fmt.Errorf("replicator: target client: %w", err)
		}
		r.ownTgt = true
	}
	r.srcAdm, r.tgtAdm = kadm.NewClient(r.src), kadm.NewClient(r.tgt)
	if r.metrics, err = newMetrics(o.Registerer); err != nil {
		r.closeClients()
		return nil, err
	}
	return r, nil
}

func (r *Replicator) closeClients() {
	if r.ownSrc && r.src != nil {
		r.src.Close()
	}
	if r.ownTgt && r.tgt != nil {
		r.tgt.Close()
	}
}

// Start prepares every topic (creating or checking it on the target) and
// starts one copy goroutine per partition. Topic problems are reported in
// Status, not returned; Start returns an error only if ctx ends first.
// The goroutines stop on Stop, not when ctx ends.
func (r *Replicator) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.cancel, r.runCtx = cancel, runCtx
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.monitor(runCtx)
	}()
	for _, topic := range r.opts.Topics {
		if err := r.AddTopic(ctx, topic); err != nil {
			return err
		}
	}
	return nil
}

// AddTopic starts copying one more topic (after Start), as Start does for
// Options.Topics: a cutover adds the topic it flipped to the copy running
// the other way without stopping that copy's other topics. Topic problems
// are reported in Status and TopicErr; AddTopic returns an error only if ctx
// ends first.
func (r *Replicator) AddTopic(ctx context.Context, topic string) error {
	return r.AddTopics(ctx, []string{topic})
}

// AddTopics is AddTopic for several topics, set up together (setupTopics):
// one metadata request per cluster, one DescribeConfigs and one CreateTopics
// for the topics the target lacks, and one wait for them, where a topic at a
// time made those round trips per topic (start-up took 560 s for 1,000
// topics).
func (r *Replicator) AddTopics(ctx context.Context, topics []string) error {
	r.mu.Lock()
	runCtx := r.runCtx
	var claimed []string
	for _, topic := range topics {
		_, running := r.runs[topic]
		busy := running || r.starting[topic] || slices.Contains(claimed, topic)
		if runCtx != nil && !busy {
			if r.starting == nil {
				r.starting = map[string]bool{}
			}
			r.starting[topic] = true
			claimed = append(claimed, topic)
		}
		delete(r.topicErrs, topic)
	}
	r.mu.Unlock()
	if runCtx == nil {
		return errors.New("replicator: AddTopic before Start")
	}
	if len(claimed) == 0 {
		return nil
	}
	defer func() {
		r.mu.Lock()
		for _, topic := range claimed {
			delete(r.starting, topic)
		}
		r.mu.Unlock()
	}()
	setups := r.setupTopics(ctx, claimed)
	if ctx.Err() != nil {
		return fmt.Errorf("replicator: starting: %w", ctx.Err())
	}
	for _, topic := range claimed {
		su := setups[topic]
		if su.err != nil {
			r.log.Error("topic will not be replicated", "topic", topic, "error", su.err)
			r.mu.Lock()
			r.topicErrs[topic] = su.err
			r.mu.Unlock()
			continue
		}
		r.startTopic(runCtx, topic, su.n)
	}
	return nil
}

// startTopic starts a set-up topic's partitions.
func (r *Replicator) startTopic(runCtx context.Context, topic string, n int32) {
	tctx, tcancel := context.WithCancel(runCtx)
	run := &topicRun{ctx: tctx, cancel: tcancel, n: n}
	r.mu.Lock()
	if r.runs == nil {
		r.runs = map[string]*topicRun{}
	}
	r.runs[topic] = run
	var started []*partition
	for i := int32(0); i < n; i++ {
		if r.owns(topic, i) {
			started = append(started, r.addPartitionLocked(run, topic, i))
		}
	}
	r.mu.Unlock()
	for _, p := range started {
		r.launch(run, p)
	}
}

// owns says whether this instance copies partition i of topic (Options.Owns).
func (r *Replicator) owns(topic string, i int32) bool {
	return r.opts.Owns == nil || r.opts.Owns(topic, i)
}

// addPartitionLocked registers partition i of a running topic; the caller
// starts it with launch once r.mu is released. r.mu is held.
func (r *Replicator) addPartitionLocked(run *topicRun, topic string, i int32) *partition {
	p := r.newPartition(topic, i)
	p.ctx, p.cancel = context.WithCancel(run.ctx)
	p.done = make(chan struct{})
	r.parts[topicPartition{topic, i}] = p
	r.wg.Add(1)
	run.wg.Add(1)
	return p
}

// launch starts a registered partition's goroutine.
func (r *Replicator) launch(run *topicRun, p *partition) {
	go func() {
		defer r.wg.Done()
		defer run.wg.Done()
		defer close(p.done)
		r.runPartition(p.ctx, p)
	}()
}

// Stop stops every partition (an in-flight produce is allowed to finish and
// is recorded), persists the maps and closes owned clients.
func (r *Replicator) Stop() {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
	r.closeProduceConns()
	r.closeClients()
	r.pipes.Close() // every copy loop has given its pipes back
}

// Status returns every partition's state, sorted by topic and partition.
func (r *Replicator) Status() []PartitionStatus {
	r.mu.Lock()
	var out []PartitionStatus
	for t, err := range r.topicErrs {
		out = append(out, PartitionStatus{Topic: t, Partition: -1, Err: err.Error(), Fatal: true})
	}
	parts := make([]*partition, 0, len(r.parts))
	for _, p := range r.parts {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	for _, p := range parts {
		out = append(out, p.status())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// TopicErr is the reason a topic is not replicated at all (for example a
// partition count mismatch on the target), or nil. A flip of that topic
// must be refused.
func (r *Replicator) TopicErr(topic string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.topicErrs[topic]
}

// Map returns the live offset map of a partition (read-only: it has no
// exported mutators), or nil if the partition is unknown or not set up yet.
func (r *Replicator) Map(topic string, partition int32) *OffsetMap {
	if p := r.lookup(topic, partition); p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if errors.As(p.fatal, new(*FencedError)) {
			// Another instance copies it now: this map stopped growing,
			// and no instance translates with a map that stopped.
			return nil
		}
		return p.m
	}
	return nil
}

// CopiedThrough is the next source log offset a partition's copy will read
// (every offset below it is on the target or a gap), -1 if unknown.
func (r *Replicator) CopiedThrough(topic string, partition int32) int64 {
	if m := r.Map(topic, partition); m != nil {
		return copiedThrough(m)
	}
	return -1
}

// copiedThrough is the next source log offset to copy (the map's SourceEnd
// in the copy's source offsets).
func copiedThrough(m *OffsetMap) int64 { return m.SourceEnd() - m.Meta().SourceShift }

// WaitCopied blocks until every source offset below sourceEnd is on the
// target or a gap (the cutover's drain condition), ctx ends, or the
// partition stops with a fatal error. It does not make the partition
// urgent: a caller that wants the copy's own lane holds Urge around it, as
// the cutover does (control's replicationPort). An urgent copy skips the
// map save at each catch-up, and a waiter that released its urgency on an
// idle partition would leave the map on disk behind the copy until the
// next records or long poll (kproxy verify read it so: TestVerifyParallelRun).
func (r *Replicator) WaitCopied(ctx context.Context, topic string, partition int32, sourceEnd int64) error {
	p := r.lookup(topic, partition)
	if p == nil {
		if err := r.TopicErr(topic); err != nil {
			return fmt.Errorf("replicator: %s: %w", topic, err)
		}
		return fmt.Errorf("replicator: %s/%d is not replicated", topic, partition)
	}
	for {
		p.mu.Lock()
		m, fatal, wake := p.m, p.fatal, p.wake
		p.mu.Unlock()
		if m != nil && copiedThrough(m) >= sourceEnd {
			return nil
		}
		if fatal != nil {
			return fmt.Errorf("replicator: %s/%d: %w", topic, partition, fatal)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// Urge makes every partition of topic copied here urgent until release is
// called: a cutover is about to hold the topic (its approach) or holds it,
// and waits for the copy (WaitCopied). An urgent partition's copy has a
// lane of its own: its fetches go on the fetcher's side connection with a
// short poll (urgentFetchWait) instead of in the shared session request,
// whose answer carries every other busy partition's records, and its
// batches go on a produce connection of their own instead of queueing
// behind every other partition's (fetcher.go, copyPartition). Release is
// idempotent.
func (r *Replicator) Urge(topic string) (release func()) {
	r.mu.Lock()
	var ps []*partition
	for tp, p := range r.parts {
		if tp.topic == topic {
			ps = append(ps, p)
		}
	}
	r.mu.Unlock()
	leaders := map[int32]bool{}
	for _, p := range ps {
		p.urge()
		if l := p.tgtLeader.Load(); l > 0 {
			leaders[l-1] = true
		}
	}
	r.dialUrgentLanes(leaders)
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, p := range ps {
				p.unurge()
			}
		})
	}
}

// dialUrgentLanes dials, in the background, the urgent produce connection
// to each of the target brokers that lead an urged topic's partitions, so
// that the first urgent batch does not wait for a dial: a cutover urges
// its topic at the approach, and a partition whose copy is caught up sends
// its first urgent batch in the hold itself. A dial that fails is dialed
// again by the copy when it needs the connection.
func (r *Replicator) dialUrgentLanes(leaders map[int32]bool) {
	r.mu.Lock()
	ctx := r.runCtx
	r.mu.Unlock()
	if ctx == nil {
		return
	}
	for b := range leaders {
		go func() {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, _ = r.produceConnFor(dctx, b, true)
		}()
	}
}

// Writes counts, in offsets, what the copy produced into one target
// partition: Sent before each produce, Settled once it is answered or has
// failed. Every offset the copy appended is in Sent; everything in Settled
// was appended or never will be (the bypass check in control relies on it
// when the copy writes back into the source).
type Writes struct {
	Sent, Settled atomic.Int64
}

// Writes returns the copy's write counts for a target partition, nil if it
// never wrote there.
func (r *Replicator) Writes(topic string, partition int32) *Writes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes[topicPartition{topic, partition}]
}

// writesForLocked returns (creating) a partition's write counts; r.mu is
// held (newPartition runs under it).
func (r *Replicator) writesForLocked(topic string, partition int32) *Writes {
	k := topicPartition{topic, partition}
	w := r.writes[k]
	if w == nil {
		if r.writes == nil {
			r.writes = map[topicPartition]*Writes{}
		}
		w = &Writes{}
		r.writes[k] = w
	}
	return w
}

func (r *Replicator) lookup(topic string, partition int32) *partition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.parts[topicPartition{topic, partition}]
}

// copiedConfigs are the source topic configs a target topic inherits.
// message.timestamp.type is handled apart: see setupTopic.
var copiedConfigs = []string{"cleanup.policy", "retention.ms", "retention.bytes", "max.message.bytes"}

// topicSetup is a topic's partition count once set up, or why not.
type topicSetup struct {
	n   int32
	err error
}

// setupTopics creates each target topic like the source one, or checks the
// existing one, and returns the partition counts.
func (r *Replicator) setupTopics(ctx context.Context, topics []string) map[string]topicSetup {
	out := make(map[string]topicSetup, len(topics))
	fail := func(err error, ts ...string) {
		for _, t := range ts {
			out[t] = topicSetup{err: err}
		}
	}
	sd, err := r.srcAdm.ListTopics(ctx, topics...)
	if err != nil {
		fail(fmt.Errorf("source metadata: %w", err), topics...)
		return out
	}
	td, err := r.tgtAdm.ListTopics(ctx, topics...)
	if err != nil {
		fail(fmt.Errorf("target metadata: %w", err), topics...)
		return out
	}
	var missing []string
	for _, topic := range topics {
		s, ok := sd[topic]
		if !ok {
			s.Err = kerr.UnknownTopicOrPartition
		}
		if s.Err != nil {
			fail(fmt.Errorf("source topic: %w", s.Err), topic)
			continue
		}
		n := int32(len(s.Partitions))
		t, ok := td[topic]
		if !ok {
			t.Err = kerr.UnknownTopicOrPartition
		}
		switch {
		case t.Err == nil:
			if got := int32(len(t.Partitions)); got != n {
				fail(fmt.Errorf("target topic has %d partitions, source has %d: offsets cannot be mapped partition by partition; recreate the target topic with %d partitions", got, n, n), topic)
				continue
			}
			out[topic] = topicSetup{n: n}
		case errors.Is(t.Err, kerr.UnknownTopicOrPartition):
			out[topic] = topicSetup{n: n}
			missing = append(missing, topic)
		default:
			fail(fmt.Errorf("target topic: %w", t.Err), topic)
		}
	}
	if len(missing) == 0 {
		return out
	}
	rc, err := r.srcAdm.DescribeTopicConfigs(ctx, missing...)
	if err != nil {
		fail(fmt.Errorf("source configs: %w", err), missing...)
		return out
	}
	// One CreateTopics per partition count and config set (one for
	// topics created alike on the source, the common case).
	type createGroup struct {
		n       int32
		configs map[string]*string
		topics  []string
	}
	groups := map[string]*createGroup{}
	var order []string
	for _, topic := range missing {
		c, err := rc.On(topic, nil)
		if err != nil {
			fail(fmt.Errorf("source configs: %w", err), topic)
			continue
		}
		configs := map[string]*string{"compression.type": kadm.StringPtr("producer")}
		for _, kv := range c.Configs {
			for _, k := range copiedConfigs {
				if kv.Key == k && kv.Value != nil {
					configs[k] = kv.Value
				}
			}
		}
		// The target always keeps the source's timestamps as CreateTime:
		// batches with LogAppendTime are rebuilt with the source's append
		// time in each record (batch.go), so a LogAppendTime target would
		// replace them with its own clock.
		configs["message.timestamp.type"] = kadm.StringPtr("CreateTime")
		n := out[topic].n
		key := fmt.Sprint(n)
		for _, k := range slices.Sorted(maps.Keys(configs)) {
			key += "\x00" + k + "=" + *configs[k]
		}
		g := groups[key]
		if g == nil {
			g = &createGroup{n: n, configs: configs}
			groups[key] = g
			order = append(order, key)
		}
		g.topics = append(g.topics, topic)
	}
	var created []string
	for _, key := range order {
		g := groups[key]
		resp, err := r.tgtAdm.CreateTopics(ctx, g.n, -1, g.configs, g.topics...)
		if err != nil {
			fail(fmt.Errorf("creating target topic: %w", err), g.topics...)
			continue
		}
		for _, topic := range g.topics {
			if cr, ok := resp[topic]; ok && cr.Err != nil && !errors.Is(cr.Err, kerr.TopicAlreadyExists) {
				fail(fmt.Errorf("creating target topic: %w", cr.Err), topic)
				continue
			}
			r.log.Info("created target topic", "topic", topic, "partitions", g.n)
			created = append(created, topic)
		}
	}
	// Metadata lags creation for a moment, and a leader takes its
	// partitions a moment after metadata names it: wait until the new
	// topics' end offsets answer, so the partitions do not start with a
	// round of UNKNOWN_TOPIC_OR_PARTITION or NOT_LEADER_FOR_PARTITION
	// retries (10,000 partitions retrying every second kept the target
	// broker busy answering them). One request per wait for the whole batch.
	// The metadata request also replaces what the client cached from the
	// check before the creation (the topics unknown), which each
	// partition's leader lookup would otherwise read.
	for i := 0; i < 50 && len(created) > 0; i++ {
		_, err := r.tgtAdm.ListTopics(ctx, created...)
		var ends kadm.ListedOffsets
		if err == nil {
			ends, err = r.tgtAdm.ListEndOffsets(ctx, created...)
		}
		if err == nil {
			left := created[:0]
			for _, topic := range created {
				ps, ok := ends[topic]
				good := ok && int32(len(ps)) == out[topic].n
				for _, o := range ps {
					good = good && o.Err == nil
				}
				if !good {
					left = append(left, topic)
				}
			}
			created = left
			if len(created) == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(100 * time.Millisecond):
		}
	}
	return out
}

// spliceOn says whether the copy may splice batch bodies: not turned off,
// and the target is plain TCP (a source connection over TLS cannot
// splice either; fetchConn sees that itself). Over TLS every byte passes
// through user space anyway.
func (r *Replicator) spliceOn() bool {
	tc, _ := r.tgt.OptValue(kgo.DialTLSConfig).(*tls.Config)
	return !r.opts.NoSplice && tc == nil
}

// metrics are the replicator's Prometheus series.
type metrics struct {
	records *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	lag     *prometheus.GaugeVec
	lagMs   *prometheus.GaugeVec
	errs    *prometheus.CounterVec
	lagB    *prometheus.GaugeVec
	risk    *prometheus.GaugeVec
	catchUp *prometheus.GaugeVec
	// sessionResets counts source fetch sessions the broker lost.
	sessionResets prometheus.Counter
	// mapBytes is the memory of every partition's offset map.
	mapBytes prometheus.Gauge
	// fenced counts partition copies the target fenced (txncopy.go).
	fenced prometheus.Counter
	// mapSaves counts offset map saves, each a write and an fsync
	// (mapsaver.go).
	mapSaves prometheus.Counter
	// splicedBatches and splicedBytes count the batches whose bodies
	// went socket to socket (fetchsplice.go).
	splicedBatches, splicedBytes prometheus.Counter
	// produceRequests and produceBatches count the copy's Produce
	// requests and the batches in them (produceconn.go merges the
	// batches of several partitions into one request).
	produceRequests, produceBatches prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	l := []string{"topic", "partition"}
	m := &metrics{
		records:         prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "copied_records_total", Help: "Records copied to the target."}, l),
		bytes:           prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "copied_bytes_total", Help: "Batch bytes produced to the target."}, l),
		lag:             prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "lag_records", Help: "Source high watermark minus the next source offset to copy."}, l),
		lagMs:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "lag_milliseconds", Help: "Time since the partition was last caught up; 0 when caught up."}, l),
		errs:            prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "errors_total", Help: "Partition copy errors (each is followed by a retry unless fatal)."}, l),
		lagB:            prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "lag_bytes", Help: "Estimated source bytes not copied yet."}, l),
		risk:            prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "retention_risk_seconds", Help: "Estimated time until the source's retention deletes the oldest record not copied yet (+Inf: none at risk)."}, l),
		catchUp:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "catch_up_seconds", Help: "Estimated time until the copy catches up with the source (the initial sync's ETA) at the current produce and copy rates: 0 caught up, -1 not catching up or no estimate yet."}, l),
		sessionResets:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "fetch_session_resets_total", Help: "Source fetch sessions the broker lost (restart, eviction); each is followed by a full fetch."}),
		fenced:          prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "fenced_total", Help: "Partition copies this instance stopped because the target fenced its transactional producer: another instance took the partition over."}),
		splicedBatches:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "spliced_batches_total", Help: "Batches copied with their body spliced from the source socket to the target socket (never in kproxy's memory)."}),
		splicedBytes:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "spliced_bytes_total", Help: "Bytes of the batches counted by spliced_batches_total."}),
		produceRequests: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "produce_requests_total", Help: "Produce requests the copy sent to the target (one holds a batch of each of several partitions)."}),
		produceBatches:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "produce_batches_total", Help: "Batches in the Produce requests counted by produce_requests_total."}),
		mapBytes:        prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "offset_map_bytes", Help: "Memory of every replicated partition's offset map (runs, packed), updated every stats interval."}),
		mapSaves:        prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kproxy", Subsystem: "replicator", Name: "offset_map_saves_total", Help: "Offset map saves to the state directory (each a write and an fsync)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.records, m.bytes, m.lag, m.lagMs, m.errs, m.lagB, m.risk, m.catchUp, m.sessionResets, m.mapBytes, m.fenced, m.splicedBatches, m.splicedBytes, m.mapSaves, m.produceRequests, m.produceBatches} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("replicator: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// newPartition builds a partition's copy state; r.mu is held.
func (r *Replicator) newPartition(topic string, i int32) *partition {
	lv := []string{topic, strconv.Itoa(int(i))}
	p := &partition{
		topic: topic, partition: i, log: r.log.With("topic", topic, "partition", i),
		records: r.metrics.records.WithLabelValues(lv...), bytes: r.metrics.bytes.WithLabelValues(lv...),
		lag: r.metrics.lag.WithLabelValues(lv...), lagMs: r.metrics.lagMs.WithLabelValues(lv...),
		errs:     r.metrics.errs.WithLabelValues(lv...),
		lagBytes: r.metrics.lagB.WithLabelValues(lv...), riskGauge: r.metrics.risk.WithLabelValues(lv...),
		catchUp: r.metrics.catchUp.WithLabelValues(lv...),
		writes:  r.writesForLocked(topic, i),
		wake:    make(chan struct{}), behindSince: time.Now(),
	}
	p.riskGauge.Set(math.Inf(1))
	p.catchUp.Set(-1)
	return p
}

// topicRun is one topic's partition goroutines.
type topicRun struct {
	ctx    context.Context // the partitions' (AddPartitions starts more)
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// n is the topic's partition count, copied here or not (Options.Owns);
	// guarded by Replicator.mu.
	n int32
}

// StopTopic stops copying one topic (its cutover flipped it) and waits
// until its partitions have stopped and saved their maps; the other topics
// keep copying. It returns the final maps by partition and forgets the
// topic (Status, Map); AddTopic starts it again from the maps on disk.
func (r *Replicator) StopTopic(topic string) map[int32]*OffsetMap {
	maps, _ := r.SealTopic(topic)
	return maps
}

// SealTopic is StopTopic, with an error when a partition's final map is
// not known to be on disk (its last save failed): a flip must not commit
// on it.
func (r *Replicator) SealTopic(topic string) (map[int32]*OffsetMap, error) {
	r.mu.Lock()
	run := r.runs[topic]
	delete(r.runs, topic)
	r.mu.Unlock()
	if run != nil {
		run.cancel()
		run.wg.Wait()
	}
	out := map[int32]*OffsetMap{}
	var serr error
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range r.parts {
		if k.topic != topic {
			continue
		}
		p.mu.Lock()
		if p.m != nil {
			out[k.partition] = p.m
		}
		if p.saveErr != nil && serr == nil {
			serr = fmt.Errorf("replicator: the offset map of %s/%d is not saved: %w", topic, k.partition, p.saveErr)
		}
		p.mu.Unlock()
		delete(r.parts, k)
	}
	delete(r.topicErrs, topic)
	return out, serr
}
