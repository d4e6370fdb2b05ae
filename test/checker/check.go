package checker

import (
	"fmt"
	"sort"
	"strings"
)

// TP is a topic-partition.
type TP struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

func (tp TP) String() string { return fmt.Sprintf("%s[%d]", tp.Topic, tp.Partition) }

// Options tune what Check treats as an anomaly.
type Options struct {
	// ExpectAll says the consumers were expected to read every acked record
	// (they ran to completion). Only then are acked-but-unconsumed records
	// counted as lost.
	ExpectAll bool
	// AllowRedelivery tolerates the same offset being consumed more than
	// once (at-least-once delivery, e.g. after a consumer crash). Redeliveries
	// are still counted, but do not make the report fail.
	AllowRedelivery bool
	// RequireAcked makes consumed records at offsets nobody acked an anomaly
	// (e.g. "the second consume run must see only the new records"). Without
	// it they are only counted (Unacked).
	RequireAcked bool
	// MaxExamples bounds Report.Examples; 0 means 20, negative means none.
	MaxExamples int
}

// Counts are the anomaly counters of a partition or of the whole history.
type Counts struct {
	// Acked is the number of distinct acknowledged records.
	Acked int `json:"acked"`
	// Consumed is the number of consume events, redeliveries included.
	Consumed int `json:"consumed"`
	// Lost: acked records that were not consumed, neither at their acked
	// offset nor (by value) anywhere else. Only counted with ExpectAll.
	Lost int `json:"lost"`
	// Redelivered: extra deliveries of an offset already consumed by the
	// group (consumed n times counts n-1).
	Redelivered int `json:"redelivered"`
	// DuplicateValues: extra positions at which one value was consumed
	// (the same record written at two offsets, e.g. a non-idempotent retry).
	DuplicateValues int `json:"duplicate_values"`
	// Gaps: acked offsets not consumed although they lie between the lowest
	// and highest consumed offset of their partition.
	Gaps int `json:"gaps"`
	// OutOfOrder: consume events whose offset was not greater than the
	// previous one of the same consumer, stream, partition and rebalance epoch.
	OutOfOrder int `json:"out_of_order"`
	// Inconsistent: offsets at which two different values were observed
	// (acked or consumed), Jepsen style.
	Inconsistent int `json:"inconsistent"`
	// Mismatched: offsets at which a consumed value differs from the value
	// acked at that offset.
	Mismatched int `json:"mismatched"`
	// Moved: acked records whose value was consumed, but only at a different
	// partition/offset than the one acked (offset translation bugs).
	Moved int `json:"moved"`
	// Unacked: distinct consumed offsets nobody acked. Informational unless
	// RequireAcked.
	Unacked int `json:"unacked"`
}

// Duplicated is Redelivered + DuplicateValues.
func (c Counts) Duplicated() int { return c.Redelivered + c.DuplicateValues }

func (c *Counts) add(o Counts) {
	c.Acked += o.Acked
	c.Consumed += o.Consumed
	c.Lost += o.Lost
	c.Redelivered += o.Redelivered
	c.DuplicateValues += o.DuplicateValues
	c.Gaps += o.Gaps
	c.OutOfOrder += o.OutOfOrder
	c.Inconsistent += o.Inconsistent
	c.Mismatched += o.Mismatched
	c.Moved += o.Moved
	c.Unacked += o.Unacked
}

// PartitionReport is the verdict for one topic-partition.
type PartitionReport struct {
	TP
	Counts
}

// Report is the result of Check.
type Report struct {
	Counts
	Options    Options           `json:"-"`
	Partitions []PartitionReport `json:"partitions"`
	// Examples describes the first anomalies found, for humans.
	Examples []string `json:"examples,omitempty"`
}

// OK reports whether the history has no anomaly under the options used.
func (r Report) OK() bool {
	c := r.Counts
	if r.Options.ExpectAll && c.Lost > 0 {
		return false
	}
	if c.Redelivered > 0 && !r.Options.AllowRedelivery {
		return false
	}
	if r.Options.RequireAcked && c.Unacked > 0 {
		return false
	}
	return c.DuplicateValues == 0 && c.Gaps == 0 && c.OutOfOrder == 0 &&
		c.Inconsistent == 0 && c.Mismatched == 0 && c.Moved == 0
}

// String is a one-line verdict, e.g.
// "acked 3000, consumed 3000, lost 0, duplicated 0, gaps 0, out of order 0, inconsistent 0, mismatched 0: OK".
func (r Report) String() string {
	c := r.Counts
	lost := fmt.Sprint(c.Lost)
	if !r.Options.ExpectAll {
		lost = "n/a"
	}
	s := fmt.Sprintf("acked %d, consumed %d, lost %s, duplicated %d, gaps %d, out of order %d, inconsistent %d, mismatched %d",
		c.Acked, c.Consumed, lost, c.Duplicated(), c.Gaps, c.OutOfOrder, c.Inconsistent, c.Mismatched)
	if c.Moved > 0 {
		s += fmt.Sprintf(", moved %d", c.Moved)
	}
	if c.Unacked > 0 {
		s += fmt.Sprintf(", unacked %d", c.Unacked)
	}
	if r.OK() {
		return s + ": OK"
	}
	return s + ": FAIL"
}

// Details is a multi-line breakdown: the verdict, a line per partition and the
// example anomalies.
func (r Report) Details() string {
	var b strings.Builder
	b.WriteString(r.String())
	b.WriteByte('\n')
	for _, p := range r.Partitions {
		fmt.Fprintf(&b, "  %-30s acked %d consumed %d lost %d redelivered %d dup-values %d gaps %d out-of-order %d inconsistent %d mismatched %d moved %d unacked %d\n",
			p.TP.String(), p.Acked, p.Consumed, p.Lost, p.Redelivered, p.DuplicateValues, p.Gaps,
			p.OutOfOrder, p.Inconsistent, p.Mismatched, p.Moved, p.Unacked)
	}
	for _, e := range r.Examples {
		b.WriteString("  ! ")
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.String()
}

type pos struct {
	tp  TP
	off int64
}

type consumerKey struct {
	client, consumer, stream string
	epoch                    int
	tp                       TP
}

// Check analyses a history. acks are the records acknowledged to producers;
// consumed are the records one consumer group received, in the order each
// consumer received them (interleaving between consumers does not matter).
func Check(acks []Ack, consumed []Consumed, opts Options) Report {
	max := opts.MaxExamples
	if max == 0 {
		max = 20
	}
	var examples []string
	note := func(format string, args ...any) {
		if len(examples) < max {
			examples = append(examples, fmt.Sprintf(format, args...))
		}
	}

	parts := map[TP]*Counts{}
	pc := func(tp TP) *Counts {
		c := parts[tp]
		if c == nil {
			c = &Counts{}
			parts[tp] = c
		}
		return c
	}

	// Acks: offset -> distinct values, value -> acked positions.
	ackVals := map[pos][]string{}
	var ackOrder []pos
	for _, a := range acks {
		p := pos{TP{a.Topic, a.Partition}, a.Offset}
		vs, seen := ackVals[p]
		if !seen {
			ackOrder = append(ackOrder, p)
		}
		if !contains(vs, a.Value) {
			ackVals[p] = append(vs, a.Value)
			pc(p.tp).Acked++
		}
	}

	// Consumed: deliveries per offset, distinct values per offset, positions
	// per value, ordering per consumer.
	deliveries := map[pos]int{}
	consVals := map[pos][]string{}
	valuePos := map[string][]pos{} // topic\x00value -> distinct consumed positions
	last := map[consumerKey]int64{}
	for _, c := range consumed {
		tp := TP{c.Topic, c.Partition}
		p := pos{tp, c.Offset}
		cnt := pc(tp)
		cnt.Consumed++
		deliveries[p]++
		if deliveries[p] > 1 {
			cnt.Redelivered++
			note("redelivered: %s offset %d consumed %d times (latest by %s/%s)", tp, c.Offset, deliveries[p], c.Client, c.Consumer)
		}
		if vs := consVals[p]; !contains(vs, c.Value) {
			consVals[p] = append(vs, c.Value)
		}
		if c.Value != "" {
			vk := c.Topic + "\x00" + c.Value
			if ps := valuePos[vk]; !containsPos(ps, p) {
				valuePos[vk] = append(ps, p)
				if len(ps) > 0 {
					cnt.DuplicateValues++
					note("duplicate value: %q consumed at %s offset %d and at %s offset %d", c.Value, ps[0].tp, ps[0].off, tp, c.Offset)
				}
			}
		}
		k := consumerKey{c.Client, c.Consumer, c.Stream, c.Epoch, tp}
		if prev, ok := last[k]; ok && c.Offset <= prev {
			cnt.OutOfOrder++
			note("out of order: %s/%s read %s offset %d after offset %d", c.Client, c.Consumer, tp, c.Offset, prev)
		}
		last[k] = c.Offset
	}

	// Inconsistent: distinct values at one offset across acks and consumes.
	allPos := map[pos]bool{}
	for p := range ackVals {
		allPos[p] = true
	}
	for p := range consVals {
		allPos[p] = true
	}
	for _, p := range sortedPos(allPos) {
		var vs []string
		for _, v := range ackVals[p] {
			if !contains(vs, v) {
				vs = append(vs, v)
			}
		}
		for _, v := range consVals[p] {
			if !contains(vs, v) {
				vs = append(vs, v)
			}
		}
		if len(vs) > 1 {
			pc(p.tp).Inconsistent++
			note("inconsistent: %s offset %d has values %q", p.tp, p.off, vs)
		}
		acked, isAcked := ackVals[p]
		cv := consVals[p]
		if isAcked && len(cv) > 0 {
			for _, v := range cv {
				if !contains(acked, v) {
					pc(p.tp).Mismatched++
					note("mismatched: %s offset %d acked %q but consumed %q", p.tp, p.off, acked, v)
					break
				}
			}
		}
		if !isAcked && len(cv) > 0 {
			pc(p.tp).Unacked++
			if opts.RequireAcked {
				note("unacked: %s offset %d consumed (%q) but never acked", p.tp, p.off, cv)
			}
		}
	}

	// Lost and moved, per acked record.
	for _, p := range ackOrder {
		for _, v := range ackVals[p] {
			if contains(consVals[p], v) {
				continue
			}
			var elsewhere []pos
			if v != "" {
				elsewhere = valuePos[p.tp.Topic+"\x00"+v]
			}
			switch {
			case len(elsewhere) > 0:
				pc(p.tp).Moved++
				note("moved: %q acked at %s offset %d but consumed at %s offset %d", v, p.tp, p.off, elsewhere[0].tp, elsewhere[0].off)
			case opts.ExpectAll:
				pc(p.tp).Lost++
				note("lost: %q acked at %s offset %d never consumed", v, p.tp, p.off)
			}
		}
	}

	// Gaps: acked offsets strictly inside the consumed range but not consumed.
	type span struct{ lo, hi int64 }
	ranges := map[TP]*span{}
	for p := range deliveries {
		s := ranges[p.tp]
		if s == nil {
			ranges[p.tp] = &span{p.off, p.off}
			continue
		}
		if p.off < s.lo {
			s.lo = p.off
		}
		if p.off > s.hi {
			s.hi = p.off
		}
	}
	gapPos := map[pos]bool{}
	for p := range ackVals {
		if s := ranges[p.tp]; s != nil && p.off > s.lo && p.off < s.hi && deliveries[p] == 0 {
			gapPos[p] = true
		}
	}
	for _, p := range sortedPos(gapPos) {
		pc(p.tp).Gaps++
		note("gap: %s offset %d acked but skipped (consumed range %d..%d)", p.tp, p.off, ranges[p.tp].lo, ranges[p.tp].hi)
	}

	r := Report{Options: opts}
	tps := make([]TP, 0, len(parts))
	for tp := range parts {
		tps = append(tps, tp)
	}
	sort.Slice(tps, func(i, j int) bool { return tpLess(tps[i], tps[j]) })
	for _, tp := range tps {
		c := *parts[tp]
		r.Partitions = append(r.Partitions, PartitionReport{TP: tp, Counts: c})
		r.Counts.add(c)
	}
	if max > 0 {
		r.Examples = examples
	}
	return r
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func containsPos(ps []pos, p pos) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

func tpLess(a, b TP) bool {
	if a.Topic != b.Topic {
		return a.Topic < b.Topic
	}
	return a.Partition < b.Partition
}

func sortedPos(m map[pos]bool) []pos {
	ps := make([]pos, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].tp != ps[j].tp {
			return tpLess(ps[i].tp, ps[j].tp)
		}
		return ps[i].off < ps[j].off
	})
	return ps
}
