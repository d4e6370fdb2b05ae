package control

// Bypass detection: which source topics grow by records kproxy did not
// write. An application still pointed at the source cluster (not
// repointed to kproxy) writes there directly; after the cutover its
// records are never seen by the topic's new home, so an operator must know
// before flipping and before removing the source.
//
// Every monitor.bypass_interval the check reads, per source partition of
// every topic with its own counters (proxy/topic_stats.go):
//
//	pre  = offsets kproxy's produces have settled (answered, acked or not)
//	     + acks=0 offsets sent before the previous check
//	     + offsets the copy back has settled
//	     + transactional batches settled, once the partition had no open
//	       transaction (last stable offset = end): each may have one marker
//	E    = the source's end offset (high watermark)
//	post = offsets kproxy and the copy back ever sent, plus every
//	       transactional batch sent (its possible marker)
//
// in that order. With several instances (config control:) each instance
// sees only what it produced, which is everything produced through kproxy
// to the partitions it leads (the others refuse those produces); so each
// compares only the partitions it led through the whole window, and a
// window across a membership change (ViewGeneration moved) is not compared:
// its growth may have come through another instance.
//
// Every offset kproxy appended by the time E is read is in
// post (it is counted before it is sent), and everything counted in pre was
// appended before E was read or never will be (it was answered first). So
// kproxy's own growth between two checks is at most post(now) - pre(then),
// and
//
//	unexplained = (E(now) - E(then)) - (post(now) - pre(then))
//
// is a lower bound of the records others wrote: a positive value is
// reported, nothing is carried over. It errs towards missing a bypass, never
// towards blaming one: produces in flight, idempotent retries the broker
// de-duplicates, failed produces and open transactions all widen kproxy's
// allowance for one window only. The tolerance is therefore zero, with
// three exceptions that can over-report, all rare: an acks=0 produce the
// broker appends more than one interval after kproxy sent it, a produce the
// broker appends after kproxy gave up on its answer (the upstream
// connection failed), and a source topic deleted and re-created with as
// many or more records between two checks (an end that moved backwards
// starts a new baseline instead).

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
)

// bypassLogEvery rate-limits the warning per topic.
const bypassLogEvery = 5 * time.Minute

// BypassStatus is the /status section on writers that bypass kproxy.
type BypassStatus struct {
	// Interval is monitor.bypass_interval ("0s": the check is off).
	Interval string `json:"interval"`
	// Checked is when the source's end offsets were last compared.
	Checked time.Time `json:"checked,omitzero"`
	// Watched counts the source topics compared.
	Watched int `json:"watched"`
	// Error is why the last check failed, if it did.
	Error string `json:"error,omitempty"`
	// Topics are the source topics that grew by records kproxy did not
	// write, since kproxy started.
	Topics []BypassTopic `json:"topics"`
}

// BypassTopic is one source topic written around kproxy.
type BypassTopic struct {
	Topic string `json:"topic"`
	// Records is the sum of unexplained growth (offsets) since start.
	Records int64 `json:"records"`
	// LastRecords is the unexplained growth of the last window that had
	// any, LastSeen when that window ended.
	LastRecords int64     `json:"last_records"`
	LastSeen    time.Time `json:"last_seen"`
}

// bypassPart is one source partition's baseline.
type bypassPart struct {
	gen     uint64 // the membership view generation at the last check
	end     int64  // E at the last check
	pre     int64  // kproxy's settled offsets then (lower bound of its appends by end)
	markers int64  // transactional batches whose marker is known to be in the log
	unacked int64  // acks=0 offsets counted at the last check (settled at the next)
}

// bypassWatch runs the check; the controller's monitor goroutine calls it.
type bypassWatch struct {
	log    hclog.Logger
	srv    *proxy.Server
	repl   *replication
	admins *clusterAdmins
	metric *prometheus.CounterVec

	mu      sync.Mutex // guards the fields below
	parts   map[tpKey]*bypassPart
	topics  map[string]*BypassTopic
	logged  map[string]time.Time
	watched map[string]bool // topics whose metric child exists
	// compared: topics with at least one window compared (a baseline
	// and a later check), so "nothing seen" is a measurement.
	compared map[string]bool
	checked  time.Time
	err      string
	count    int
}

func newBypassWatch(log hclog.Logger, srv *proxy.Server, repl *replication, admins *clusterAdmins, reg prometheus.Registerer) *bypassWatch {
	b := &bypassWatch{log: log, srv: srv, repl: repl, admins: admins,
		metric: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kproxy_bypass_records_total",
			Help: "Offsets that appeared on a source topic kproxy serves without kproxy writing them (its clients' produces, the copy back): a writer that bypasses kproxy. A lower bound."}, []string{"topic"}),
		parts: map[tpKey]*bypassPart{}, topics: map[string]*BypassTopic{}, logged: map[string]time.Time{}, watched: map[string]bool{}, compared: map[string]bool{}}
	if reg != nil {
		reg.MustRegister(b.metric)
	}
	return b
}

// partCounts reads one partition's counters: settled (pre, without
// markers and acks=0), txnSettled, and sent (post, markers included).
type partCounts struct {
	settled, txnSettled, unacked, sent int64
}

func (b *bypassWatch) readCounts(topic string, copyBack func(string, int32) (int64, int64), partitions []int32, post bool) map[int32]partCounts {
	ws := b.srv.SourceWrites(topic)
	out := make(map[int32]partCounts, len(partitions))
	for _, p := range partitions {
		var c partCounts
		if int(p) < len(ws) && ws[p] != nil {
			w := ws[p]
			if post {
				c.unacked = w.Unacked.Load()
				c.sent = w.Sent.Load() + w.TxnSent.Load()
			} else {
				c.settled = w.Settled.Load()
				c.txnSettled = w.TxnSettled.Load()
			}
		}
		if copyBack != nil {
			sent, settled := copyBack(topic, p)
			if post {
				c.sent += sent
			} else {
				c.settled += settled
			}
		}
		out[p] = c
	}
	return out
}

// check compares the source's end offsets of topics with what kproxy
// wrote there since the last check.
func (b *bypassWatch) check(ctx context.Context, cfg *config.Config, topics []string) {
	b.mu.Lock()
	b.count = len(topics)
	b.mu.Unlock()
	if cfg.Clusters.Source == nil || len(topics) == 0 {
		b.mu.Lock()
		b.checked, b.err = time.Now(), "" // nothing to compare: a clean check
		b.mu.Unlock()
		return
	}
	adm, err := b.admins.get(cfg, proxy.Source)
	if err != nil {
		b.fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// Which partitions: the ones the source listed last time, and the new
	// ones get a baseline from this check's answer.
	b.mu.Lock()
	known := map[string][]int32{}
	for k := range b.parts {
		known[k.topic] = append(known[k.topic], k.partition)
	}
	b.mu.Unlock()
	var copyBack func(string, int32) (int64, int64)
	if r := b.repl.copyInto(proxy.Source); r != nil {
		copyBack = func(topic string, p int32) (int64, int64) {
			if w := r.Writes(topic, p); w != nil {
				// Settled read first: pre is read before post.
				settled := w.Settled.Load()
				return w.Sent.Load(), settled
			}
			return 0, 0
		}
	}
	// With several instances: which partitions this one leads, and the
	// view generation before the counts are read.
	leads, gen := b.repl.owns, b.srv.ViewGeneration
	gen0 := gen()
	pre := map[string]map[int32]partCounts{}
	for _, t := range topics {
		pre[t] = b.readCounts(t, copyBack, known[t], false)
	}
	// The last stable offsets first, then the ends: an LSO equal to the
	// end read after it means no transaction was open when the LSO was
	// read, so the markers of every transactional batch settled before it
	// are below that end.
	stable, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		b.fail(err)
		return
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		b.fail(err)
		return
	}
	now := time.Now()
	gen1 := gen()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checked, b.err = now, ""
	for _, t := range topics {
		var parts []int32
		for p, o := range ends[t] { // a topic the source lacks has only an error entry
			if o.Err == nil {
				parts = append(parts, p)
			}
		}
		post := b.readCounts(t, copyBack, parts, true)
		var unexplained int64
		for _, p := range parts {
			e, _ := ends.Lookup(t, p)
			k := tpKey{t, p}
			prev := b.parts[k]
			c := post[p]
			// Zero when the partition was not read before E (first
			// seen): still a lower bound of kproxy's appends.
			pc := pre[t][p]
			led := leads == nil || (prev != nil && prev.gen == gen0 && gen0 == gen1 && leads(t, p))
			if prev != nil && e.Offset >= prev.end && led {
				b.compared[t] = true
				if u := (e.Offset - prev.end) - (c.sent - prev.pre); u > 0 {
					unexplained += u
				}
			}
			next := &bypassPart{gen: gen1, end: e.Offset, unacked: c.unacked}
			unacked := int64(0)
			if prev != nil {
				next.markers, unacked = prev.markers, prev.unacked
			}
			if s, ok := stable.Lookup(t, p); ok && s.Err == nil && s.Offset == e.Offset {
				next.markers = max(next.markers, pc.txnSettled)
			}
			next.pre = pc.settled + unacked + next.markers
			b.parts[k] = next
		}
		if unexplained > 0 {
			b.report(t, unexplained, now)
		}
	}
}

// report records and announces unexplained growth of a topic. Callers hold mu.
func (b *bypassWatch) report(topic string, n int64, now time.Time) {
	bt := b.topics[topic]
	if bt == nil {
		bt = &BypassTopic{Topic: topic}
		b.topics[topic] = bt
	}
	bt.Records += n
	bt.LastRecords, bt.LastSeen = n, now
	b.metric.WithLabelValues(topic).Add(float64(n))
	if now.Sub(b.logged[topic]) >= bypassLogEvery {
		b.logged[topic] = now
		b.log.Warn("records appeared on a source topic that kproxy did not write: an application writes to the source cluster directly; find it (kproxy clients lists who uses kproxy) and repoint it to kproxy before the cutover",
			"topic", topic, "records", n, "records_total", bt.Records)
	}
}

func (b *bypassWatch) fail(err error) {
	b.mu.Lock()
	b.err = err.Error()
	b.mu.Unlock()
	b.log.Debug("bypass check failed", "error", err)
}

// watch makes the topics' metric series exist (at 0).
func (b *bypassWatch) watch(topics []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range topics {
		if !b.watched[t] {
			b.watched[t] = true
			b.metric.WithLabelValues(t)
		}
	}
}

func (b *bypassWatch) status(interval time.Duration) BypassStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := BypassStatus{Interval: interval.String(), Checked: b.checked, Watched: b.count, Error: b.err, Topics: []BypassTopic{}}
	for _, t := range b.topics {
		st.Topics = append(st.Topics, *t)
	}
	sort.Slice(st.Topics, func(i, j int) bool { return st.Topics[i].Topic < st.Topics[j].Topic })
	return st
}

// wasCompared says whether a topic has had at least one window compared.
func (b *bypassWatch) wasCompared(topic string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.compared[topic]
}

// statsTopics is the topics with their own counters: the ones the config
// names exactly, the replicated ones and the ones clients have used,
// without Kafka's internal topics.
func statsTopics(cfg *config.Config, known, replicated []string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(t string) {
		if t != "" && !internalTopic(t) && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	names := make([]string, 0, len(cfg.Routes.Topics))
	for name := range cfg.Routes.Topics {
		if !config.IsGlob(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, t := range names {
		add(t)
	}
	for _, t := range replicated {
		add(t)
	}
	for _, t := range known {
		add(t)
	}
	return out
}
