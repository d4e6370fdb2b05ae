package replicator

// Lag in records, bytes and time, and the retention risk: how long until
// the source's retention deletes the oldest record the copy has not read
// yet. That deletion is data loss in a migration (the partition then stops
// with a FatalError at its next reconcile), so the replicator estimates it
// per partition from the source topic's retention.ms / retention.bytes and
// the observed produce rate, exports it, and warns below
// Options.RetentionWarning.
//
// Estimates, not measurements: bytes are records × the average source batch
// bytes per offset seen so far; the oldest uncopied record's timestamp is the
// first timestamp of the next batch to copy (once fetched) or the last copied
// batch's max timestamp (a lower bound: the estimate errs early); deletion is
// segment-based on the broker, so real deletion comes at or after the
// estimate.

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// topicRetention is what deletes records on a source topic.
type topicRetention struct {
	deletes bool  // cleanup.policy includes delete
	ms      int64 // retention.ms; <0 none
	bytes   int64 // retention.bytes (per partition); <0 none
}

// rateState is a partition's produce and copy rates, updated by the monitor.
type rateState struct {
	at                    time.Time
	hwm, copied           int64
	produceRate, copyRate float64 // records/s
}

// retentionRisk is how long until retention deletes the oldest uncopied
// record, and ok false when nothing is at risk (caught up, no deleting
// policy, no limit that applies).
func retentionRisk(now time.Time, lagRecords, lagBytes int64, oldestUncopied time.Time, ret topicRetention, produceBytesPerSec float64) (time.Duration, bool) {
	if lagRecords <= 0 || !ret.deletes {
		return 0, false
	}
	risk, ok := time.Duration(math.MaxInt64), false
	if ret.ms >= 0 && !oldestUncopied.IsZero() {
		risk, ok = max(oldestUncopied.Add(time.Duration(ret.ms)*time.Millisecond).Sub(now), 0), true
	}
	if ret.bytes >= 0 {
		// The log keeps about the newest retention.bytes; the uncopied
		// records are the newest lagBytes and grow at the produce rate.
		headroom := ret.bytes - lagBytes
		switch {
		case headroom <= 0:
			risk, ok = 0, true
		case produceBytesPerSec > 0:
			risk, ok = min(risk, time.Duration(float64(headroom)/produceBytesPerSec*float64(time.Second))), true
		}
	}
	return risk, ok
}

// noteAnswer records, before copying, what a fetch answer says about the
// source: bytes per offset for the lag estimate and the timestamp of the
// next record to copy.
func (p *partition) noteAnswer(batches [][]byte, from int64) {
	var nbytes, noffsets, nextTs int64
	for _, b := range batches {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		nbytes += int64(h.length) + 12 // a spliced batch has only its head in b
		noffsets += int64(h.lastOffsetDelta) + 1
		if nextTs == 0 && h.lastOffset() >= from && h.attributes&attrControl == 0 {
			nextTs = h.firstTimestamp
			if h.attributes&attrLogAppendTime != 0 {
				nextTs = h.maxTimestamp
			}
		}
	}
	p.mu.Lock()
	p.seenBytes += nbytes
	p.seenOffsets += noffsets
	if nextTs > 0 {
		p.nextTs = nextTs
	}
	p.mu.Unlock()
}

// noteCopied records the max timestamp of the last batch copied: a lower
// bound of the next record's.
func (p *partition) noteCopied(maxTs int64) {
	p.mu.Lock()
	p.nextTs = maxTs
	p.mu.Unlock()
}

// lagBytesLocked estimates the uncopied bytes. Callers hold mu.
func (p *partition) lagBytesLocked(lagRecords int64) int64 {
	if p.seenOffsets == 0 {
		return 0
	}
	return int64(float64(lagRecords) * float64(p.seenBytes) / float64(p.seenOffsets))
}

// TopicStatus sums a topic's partitions.
type TopicStatus struct {
	Topic      string
	Partitions int
	LagRecords int64
	LagBytes   int64
	// LagMillis and RecordLagMillis are the largest of the partitions'.
	LagMillis, RecordLagMillis int64
	// RetentionRiskMillis is the smallest of the partitions' (-1: none).
	RetentionRiskMillis int64
	// RetentionAtRisk: some partition is below Options.RetentionWarning.
	RetentionAtRisk bool
	// CatchUpMillis is the largest partition estimate (-1: some partition
	// is not catching up, or no estimate yet; 0: caught up).
	CatchUpMillis int64
	Errors        int
}

// Topics sums partition statuses (Status) per topic, sorted by name.
func Topics(parts []PartitionStatus) []TopicStatus {
	by := map[string]*TopicStatus{}
	for _, s := range parts {
		t := by[s.Topic]
		if t == nil {
			t = &TopicStatus{Topic: s.Topic, RetentionRiskMillis: -1}
			by[s.Topic] = t
		}
		if s.Err != "" {
			t.Errors++
		}
		if s.Partition < 0 {
			continue
		}
		t.Partitions++
		t.LagRecords += s.LagRecords
		t.LagBytes += s.LagBytes
		t.LagMillis = max(t.LagMillis, s.LagMillis)
		t.RecordLagMillis = max(t.RecordLagMillis, s.RecordLagMillis)
		if s.RetentionRiskMillis >= 0 && (t.RetentionRiskMillis < 0 || s.RetentionRiskMillis < t.RetentionRiskMillis) {
			t.RetentionRiskMillis = s.RetentionRiskMillis
		}
		t.RetentionAtRisk = t.RetentionAtRisk || s.RetentionAtRisk
		if t.CatchUpMillis >= 0 {
			if s.CatchUpMillis < 0 {
				t.CatchUpMillis = -1
			} else {
				t.CatchUpMillis = max(t.CatchUpMillis, s.CatchUpMillis)
			}
		}
	}
	out := make([]TopicStatus, 0, len(by))
	for _, t := range by {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// configRefresh is how often the monitor rereads the source topics'
// retention settings.
const configRefresh = 5 * time.Minute

// monitor updates rates, retention risks and their metrics every
// Options.StatsInterval until ctx ends.
func (r *Replicator) monitor(ctx context.Context) {
	t := time.NewTicker(r.opts.StatsInterval)
	defer t.Stop()
	var configsAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		parts := make([]*partition, 0, len(r.parts))
		missing := false
		for k, p := range r.parts {
			parts = append(parts, p)
			if _, ok := r.retention[k.topic]; !ok {
				missing = true
			}
		}
		r.mu.Unlock()
		if missing || time.Since(configsAt) > configRefresh {
			r.loadRetention(ctx, parts)
			configsAt = time.Now()
		}
		now := time.Now()
		for _, p := range parts {
			r.mu.Lock()
			ret, ok := r.retention[p.topic]
			r.mu.Unlock()
			if !ok {
				ret = topicRetention{ms: -1, bytes: -1}
			}
			p.updateRisk(now, ret, r.opts.RetentionWarning)
		}
		mem := 0
		for _, p := range parts {
			p.mu.Lock()
			if p.m != nil {
				mem += p.m.MemoryBytes()
			}
			p.mu.Unlock()
		}
		r.metrics.mapBytes.Set(float64(mem))
	}
}

// loadRetention reads the retention settings of the partitions' topics from
// the source.
func (r *Replicator) loadRetention(ctx context.Context, parts []*partition) {
	seen := map[string]bool{}
	var topics []string
	for _, p := range parts {
		if !seen[p.topic] {
			seen[p.topic] = true
			topics = append(topics, p.topic)
		}
	}
	if len(topics) == 0 {
		return
	}
	rc, err := r.srcAdm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		r.log.Warn("cannot read the source topics' retention settings; retention risk unknown", "error", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retention == nil {
		r.retention = map[string]topicRetention{}
	}
	for _, c := range rc {
		if c.Err != nil {
			continue
		}
		r.retention[c.Name] = parseRetention(c.Configs)
	}
}

func parseRetention(cs []kadm.Config) topicRetention {
	ret := topicRetention{deletes: true, ms: -1, bytes: -1}
	for _, c := range cs {
		if c.Value == nil {
			continue
		}
		v := *c.Value
		switch c.Key {
		case "cleanup.policy":
			ret.deletes = false
			for _, p := range strings.Split(v, ",") {
				if strings.TrimSpace(p) == "delete" {
					ret.deletes = true
				}
			}
		case "retention.ms":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				ret.ms = n
			}
		case "retention.bytes":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				ret.bytes = n
			}
		}
	}
	return ret
}

// updateRisk recomputes the partition's rates and retention risk, sets
// their metrics and logs a crossing of the warning threshold.
func (p *partition) updateRisk(now time.Time, ret topicRetention, warn time.Duration) {
	p.mu.Lock()
	copied := int64(-1)
	if p.m != nil {
		copied = p.m.SourceEnd()
	}
	rs := &p.rates
	if copied >= 0 && !rs.at.IsZero() {
		if dt := now.Sub(rs.at).Seconds(); dt > 0 {
			rs.produceRate = float64(max(p.hwm-rs.hwm, 0)) / dt
			rs.copyRate = float64(max(copied-rs.copied, 0)) / dt
		}
	}
	rs.at, rs.hwm, rs.copied = now, p.hwm, copied
	lagRecords := int64(0)
	if copied >= 0 {
		lagRecords = max(p.hwm-copied, 0)
	}
	lagBytes := p.lagBytesLocked(lagRecords)
	var oldest time.Time
	if p.nextTs > 0 {
		oldest = time.UnixMilli(p.nextTs)
	}
	bytesPerOffset := 0.0
	if p.seenOffsets > 0 {
		bytesPerOffset = float64(p.seenBytes) / float64(p.seenOffsets)
	}
	risk, atRisk := retentionRisk(now, lagRecords, lagBytes, oldest, ret, rs.produceRate*bytesPerOffset)
	p.risk, p.riskKnown = risk, atRisk
	wasWarned := p.riskWarned
	p.riskWarned = atRisk && risk < warn
	eta := catchUpMillis(lagRecords, *rs)
	p.mu.Unlock()

	p.lagBytes.Set(float64(lagBytes))
	if eta >= 0 {
		p.catchUp.Set(float64(eta) / 1000)
	} else {
		p.catchUp.Set(-1)
	}
	if atRisk {
		p.riskGauge.Set(risk.Seconds())
	} else {
		p.riskGauge.Set(math.Inf(1))
	}
	switch {
	case p.riskWarned && !wasWarned:
		p.log.Warn("source retention may delete records the copy has not read yet: data loss for the migration unless the copy catches up or the source retention is raised",
			"estimate", risk.Round(time.Second), "lag_records", lagRecords, "lag_bytes", lagBytes,
			"retention_ms", ret.ms, "retention_bytes", ret.bytes, "produce_records_per_s", int64(rs.produceRate), "copy_records_per_s", int64(rs.copyRate))
	case !p.riskWarned && wasWarned:
		p.log.Info("retention risk cleared", "lag_records", lagRecords)
	}
}
