package proxy

// Reads of a topic's old home are capped at the end offsets a cutover's
// drain froze, until the hold ends (ReleaseProduce: flipped or aborted).
//
// Every acknowledged record lies below the frozen ends, and the flip point
// is there: the virtual log continues on the new home at those ends
// (replicator.FlippedMap). A record that lands on the old home after the
// freeze is a stray: a killed kproxy's produce request still on the wire,
// or a broker handling a request whose connection died. It is not in the
// virtual log. A consumer that read it from the old home before the flip
// had a position past the flip point, which after the flip translates past
// the new home's end: the broker answered OFFSET_OUT_OF_RANGE, and a
// consumer with auto.offset.reset=earliest went back to offset 0 and read
// everything again (the fault test's kproxy kill while holding, in a
// clean-clone make test). Capped, the old home's answers stop at the
// frozen ends (high watermark, last stable offset and list offsets clipped
// to them, later batches dropped; a position past them waits there), so no
// consumer position passes the flip point.
//
// The cap is an offset map ending at the frozen ends: the identity below
// them on a topic's first home (cappedLog), its flipped map on the old home
// of a rollback (cappedMap). So the Fetch, ListOffsets and
// OffsetForLeaderEpoch translation steps (virt_offsets.go) clip as they do
// for a copy that has not caught up, and the streaming Fetch relay stays
// off (a translated answer is buffered).

// fetchCap is a topic's frozen ends on the cluster they were frozen on.
type fetchCap struct {
	cluster string
	ends    map[int32]int64
}

// CapFetch caps reads of topic from cluster at ends (the drain's frozen
// ends) until ReleaseProduce ends the topic's hold.
func (s *Server) CapFetch(topic, cluster string, ends map[int32]int64) {
	s.fetchCaps.Store(topic, &fetchCap{cluster: cluster, ends: ends})
	// After the store: a plan that reads the new generation sees the cap.
	s.capGen.Add(1)
}

// readCap is the frozen end of reads of topic's partition from cluster,
// if any, in the cluster's offsets.
func (s *Server) readCap(cluster, topic string, partition int32) (int64, bool) {
	v, ok := s.fetchCaps.Load(topic)
	if !ok {
		return 0, false
	}
	c := v.(*fetchCap)
	end, ok := c.ends[partition]
	if !ok || c.cluster != cluster {
		return 0, false
	}
	return end, true
}

// capAt is m (nil: the cluster's offsets are the virtual ones) with
// nothing readable at or past the cluster offset end: the old home of a
// flip (m nil) or of a rollback (the flipped map of the first move).
func capAt(m OffsetMap, end int64) OffsetMap {
	if m == nil {
		return cappedLog(end)
	}
	return cappedMap{m: m, end: min(end, m.TargetEnd())}
}

// cappedLog is the identity on a log's offsets below its value, the end a
// drain froze; nothing at or past it is readable.
type cappedLog int64

func (c cappedLog) ToTarget(v int64) (int64, bool) { return v, v < int64(c) }
func (c cappedLog) ToSource(t int64) (int64, bool) { return t, t < int64(c) }
func (c cappedLog) SourceStart() int64             { return 0 }
func (c cappedLog) SourceEnd() int64               { return int64(c) }
func (c cappedLog) TargetStart() int64             { return 0 }
func (c cappedLog) TargetEnd() int64               { return int64(c) }

// cappedMap is m ending at the cluster offset end (at most m's own end).
type cappedMap struct {
	m   OffsetMap
	end int64
}

func (c cappedMap) ToTarget(v int64) (int64, bool) {
	t, ok := c.m.ToTarget(v)
	return t, ok && t < c.end
}

func (c cappedMap) ToSource(t int64) (int64, bool) {
	if t >= c.end {
		return c.SourceEnd(), false
	}
	return c.m.ToSource(t)
}

func (c cappedMap) SourceStart() int64 { return c.m.SourceStart() }
func (c cappedMap) TargetStart() int64 { return c.m.TargetStart() }
func (c cappedMap) TargetEnd() int64   { return c.end }

// SourceEnd is the virtual offset after the last readable record.
func (c cappedMap) SourceEnd() int64 {
	if c.end <= c.m.TargetStart() {
		return c.m.SourceStart()
	}
	v, _ := c.m.ToSource(c.end - 1)
	return v + 1
}

// replanAfterCap plans a partition again for an answer that arrived after a
// cap was set (Server.capGen moved since the request was planned): the plan
// the answer goes through, or a retriable error code when the map it needs
// now is not ready.
//
// A consumer's long poll planned on a topic's home before the drain capped
// it went through the home's map, which is open-ended (the identity on a
// first home, the flipped map on the old home of a rollback). Its answer can
// come after the flip: the copy back's first write into the old home ends
// the poll. Those records are the new home's, at the virtual offsets the
// copy's map gives them (the new home's transaction markers and aborted
// records are not copied, so the two offset spaces part right at the flip
// point), while the home's map put them at the flip point: a consumer read
// them there and again from the new home at their own offsets (a clean-
// clone CI run of the secured rollback test, two librdkafka records in
// every group). Planned again, the answer goes through the map the old home
// has now: capped at the frozen ends while the hold lasts, then the copy's,
// which covers only what the copy has recorded. Both agree with the home's
// map below the flip point, where the request's position was translated.
// The same holds for a ListOffsets or OffsetForLeaderEpoch answer
// (forwardByLeader). Writes are not planned as reads (readsCopy false) and
// are drained before a cap.
func (s *Server) replanAfterCap(topic string, partition int32, pl partPlan) (partPlan, int16) {
	if !pl.readsCopy {
		return pl, 0
	}
	s.metrics.readsReplanned.Inc()
	return s.offsetsPlan(pl.cluster, topic, partition, true)
}
