package verify

// A sampled verify: the last records of one partition compared through a
// live offset map, for the sampled_verify gate of `kproxy plan` and
// cutover.require. It runs the same comparison as `kproxy verify`
// (compareRange) over a short range, so a gate costs a few fetches per
// partition, not a read of both logs.

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/replicator"
)

// SampleResult is one partition's sampled verify.
type SampleResult struct {
	// Records is how many committed source records were compared.
	Records int64
	// OK is true when every one is on the target where the map says,
	// equal in key, value, headers and timestamp, and the target range
	// holds nothing else.
	OK bool
	// Problem is the first difference or the reason the sample could not
	// be read ("" when OK).
	Problem string
}

// Sample compares the last n source offsets below the map's source end of
// one partition with their copies on the target. from and to are clients
// of the cluster copied from and the one copied to; m is the copy's map
// (its source side may be virtual offsets: MapMeta.SourceShift). Offsets
// below the source log's start (retention) are left out; a copy that lost
// records the source still has fails.
func Sample(ctx context.Context, from, to *kgo.Client, m *replicator.OffsetMap, n int) SampleResult {
	meta := m.Meta()
	pr := &partitionReport{Topic: meta.Topic, Partition: meta.Partition, Result: verifyOK}
	fail := func(format string, args ...any) SampleResult {
		return SampleResult{Records: pr.Records, Problem: fmt.Sprintf(format, args...)}
	}
	src, err := newVerifySide("source", from, nil)
	if err != nil {
		return fail("%v", err)
	}
	tgt, err := newVerifySide("target", to, nil)
	if err != nil {
		return fail("%v", err)
	}
	shift := meta.SourceShift
	// One snapshot of the map's ends: the copy may go on meanwhile.
	se, te := m.SourceEnd()-shift, m.TargetEnd()
	srcFrom := max(se-int64(n), m.SourceStart()-shift)
	srcStart, _, err := src.logBounds(ctx, meta.Topic, meta.Partition)
	if err != nil {
		return fail("%v", err)
	}
	srcFrom = max(srcFrom, srcStart)
	if srcFrom >= se {
		return SampleResult{OK: true} // nothing copied that is still on the source
	}
	tgtFrom, _ := m.ToTarget(srcFrom + shift)
	tgtStart, _, err := tgt.logBounds(ctx, meta.Topic, meta.Partition)
	if err != nil {
		return fail("%v", err)
	}
	if tgtStart > tgtFrom {
		// The source still has these records and the copy does not: a
		// reader moved onto the copy would miss them.
		back, _ := m.ToSource(min(tgtStart, te))
		return fail("the copy's log starts at offset %d: the copies of offsets %d to %d are gone from it (deleted records or retention) while the cluster copied from still has them", tgtStart, srcFrom, back-shift-1)
	}
	compareRange(ctx, src, tgt, m, shift, pr, srcFrom, se, tgtFrom, te)
	if pr.Result != verifyOK {
		return SampleResult{Records: pr.Records, Problem: pr.Difference}
	}
	return SampleResult{Records: pr.Records, OK: true}
}
