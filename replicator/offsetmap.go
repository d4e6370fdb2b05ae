package replicator

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"unsafe"

	"github.com/kproxy/kproxy/statefile"
)

// OffsetMap is the exact map between one source partition's offsets (the
// virtual offsets clients see) and the offsets of the same records in the
// target partition.
//
// The source log has gaps the target log does not: transaction markers,
// aborted records and compacted-away records never reach the target, while
// the replicator writes the target contiguously. So the map is a list of
// runs, each a stretch of consecutive source offsets copied to consecutive
// target offsets. A partition without gaps is a single run; every gap costs
// one run.
//
// Representation and why: a run is a source start and a target start; its
// length is implied by the next run's target start (or the target end),
// because target offsets are contiguous. Runs are stored in blocks of
// blockRuns (runBlock): the first run in full, the others as deltas from the
// run before (source start, target start), each delta array packed at the
// smallest byte width (1, 2, 4 or 8) its largest delta needs. The newest
// runs (up to blockRuns+1) stay in a plain slice, the tail, so appending and
// coalescing never touch a packed block. A marker every 10 records or a
// compacted topic needs 1-byte deltas: about 2.4 B per gap in memory (was 16
// B as a slice of int64 pairs; BenchmarkOffsetMap) and 2-4 B per gap on disk
// (varint deltas, see Save). Both lookups are the same: a binary search over
// the block heads (by source or by target start: both increase) and a scan
// of at most blockRuns-1 deltas, or a binary search of the tail. DESIGN.md
// suggests a roaring bitmap of gap positions with rank queries; blocks need
// no dependency, answer both directions with the same search, and stay exact
// when the target does not start at offset 0.
//
// Coverage: source offsets [SourceStart, SourceEnd) map to target offsets
// [TargetStart, TargetEnd). SourceEnd is the next source offset the
// replicator will copy; TargetEnd is the target's end offset as far as the
// replicator knows.
//
// An OffsetMap is safe for concurrent use: the replicator appends while the
// proxy queries. Mutators are unexported; Map() hands out the live map as a
// read-only view.
type OffsetMap struct {
	mu sync.RWMutex // guards the fields below

	meta    MapMeta
	srcBase int64 // first source offset covered
	tgtBase int64 // target offset of the first copied record
	// The runs, sorted by src and by tgt (the first has tgt == tgtBase):
	// the packed blocks, then the tail. The tail holds the newest runs and
	// is non-empty once a record was copied.
	blocks  []runBlock
	packed  []byte // the blocks' deltas
	tail    []run
	nextSrc int64 // SourceEnd: next source offset to copy
	tgtEnd  int64 // TargetEnd without the target gaps (see tgaps)

	// tgaps are the target's own gaps: offsets of the target log that hold
	// no copied record (the markers of a transactional copy's commits, and
	// records of a fenced copy's aborted transactions: replication.go's
	// fenced mode). Everything above (tgtBase, tgtEnd, the runs' tgt) counts
	// target offsets without them, "compact" offsets, so the runs keep
	// their contiguous-target representation; the exported methods turn
	// compact offsets into the target's (realOf, compactOf). Without target
	// gaps (every idempotent copy) both are the same.
	tgaps []tgap

	// jr records what add and advance did since the map was last
	// persisted, for the delta file (mapjournal.go).
	jr journal
}

// run is a stretch of consecutive source offsets copied to consecutive
// target offsets. Its length is the next run's tgt (or tgtEnd) minus tgt.
type run struct {
	src, tgt int64
}

// tgap is a stretch of target offsets with no copied record, lying before
// the record at compact offset at (or before TargetEnd when at is the
// compact end); cum is the size of this gap and every gap before it.
type tgap struct {
	at, cum int64
}

// gapsUpTo is the size of the target gaps before compact offset c and
// before the record at c. Callers hold mu.
func (m *OffsetMap) gapsUpTo(c int64) int64 {
	i := sort.Search(len(m.tgaps), func(i int) bool { return m.tgaps[i].at > c })
	if i == 0 {
		return 0
	}
	return m.tgaps[i-1].cum
}

// realOf is the target offset of compact offset c. Callers hold mu.
func (m *OffsetMap) realOf(c int64) int64 { return c + m.gapsUpTo(c) }

// compactOf is the compact offset of the target record at or after target
// offset t: a gap maps to the record after it. Callers hold mu.
func (m *OffsetMap) compactOf(t int64) int64 {
	// The last gap starting at or before t.
	i := sort.Search(len(m.tgaps), func(i int) bool {
		g := m.tgaps[i]
		return g.at+g.cum-m.gapSize(i) > t
	})
	if i == 0 {
		return t
	}
	g := m.tgaps[i-1]
	if t < g.at+g.cum {
		return g.at // inside the gap
	}
	return t - g.cum
}

// InTargetGap says whether target offset t is in a target gap: a commit
// marker of the copy's transaction or a fenced owner's aborted record,
// which has no virtual offset (the fetch path drops such batches).
func (m *OffsetMap) InTargetGap(t int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.tgaps) == 0 {
		return false
	}
	i := sort.Search(len(m.tgaps), func(i int) bool {
		g := m.tgaps[i]
		return g.at+g.cum-m.gapSize(i) > t
	})
	return i > 0 && t < m.tgaps[i-1].at+m.tgaps[i-1].cum
}

// gapSize is the size of gap i. Callers hold mu.
func (m *OffsetMap) gapSize(i int) int64 {
	if i == 0 {
		return m.tgaps[0].cum
	}
	return m.tgaps[i].cum - m.tgaps[i-1].cum
}

// totalGaps is the size of every target gap. Callers hold mu.
func (m *OffsetMap) totalGaps() int64 {
	if len(m.tgaps) == 0 {
		return 0
	}
	return m.tgaps[len(m.tgaps)-1].cum
}

// blockRuns is the number of runs in a packed block: a lookup scans at most
// blockRuns-1 deltas; a block head costs 24 bytes, 0.4 per run.
const blockRuns = 64

// runBlock is blockRuns runs: the first in full, then blockRuns-1 source
// deltas of sw bytes and blockRuns-1 target deltas of tw bytes (little
// endian) at packed[off:].
type runBlock struct {
	src, tgt int64
	off      uint32
	sw, tw   uint8
}

// deltaWidth is the byte width that holds every delta up to max.
func deltaWidth(max int64) uint8 {
	switch {
	case max < 1<<8:
		return 1
	case max < 1<<16:
		return 2
	case max < 1<<32:
		return 4
	}
	return 8
}

func loadDelta(p []byte, w uint8) int64 {
	switch w {
	case 1:
		return int64(p[0])
	case 2:
		return int64(binary.LittleEndian.Uint16(p))
	case 4:
		return int64(binary.LittleEndian.Uint32(p))
	}
	return int64(binary.LittleEndian.Uint64(p))
}

func appendDelta(b []byte, v int64, w uint8) []byte {
	switch w {
	case 1:
		return append(b, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(b, uint16(v))
	case 4:
		return binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return binary.LittleEndian.AppendUint64(b, uint64(v))
}

// pushRun appends a run (starting after every run so far) and packs the
// oldest tail runs into a block once the tail holds more than blockRuns:
// the last tail run's length may still grow (coalescing), a packed run's
// never does.
func (m *OffsetMap) pushRun(r run) {
	m.tail = append(m.tail, r)
	if len(m.tail) <= blockRuns {
		return
	}
	rs := m.tail[:blockRuns]
	var maxS, maxT int64
	for i := 1; i < len(rs); i++ {
		maxS = max(maxS, rs[i].src-rs[i-1].src)
		maxT = max(maxT, rs[i].tgt-rs[i-1].tgt)
	}
	b := runBlock{src: rs[0].src, tgt: rs[0].tgt, off: uint32(len(m.packed)), sw: deltaWidth(maxS), tw: deltaWidth(maxT)}
	for i := 1; i < len(rs); i++ {
		m.packed = appendDelta(m.packed, rs[i].src-rs[i-1].src, b.sw)
	}
	for i := 1; i < len(rs); i++ {
		m.packed = appendDelta(m.packed, rs[i].tgt-rs[i-1].tgt, b.tw)
	}
	m.blocks = append(m.blocks, b)
	m.tail = m.tail[:copy(m.tail, m.tail[blockRuns:])]
}

// blockEnd is the target start of the run after block i. Callers hold mu.
func (m *OffsetMap) blockEnd(i int) int64 {
	if i+1 < len(m.blocks) {
		return m.blocks[i+1].tgt
	}
	return m.tail[0].tgt
}

// blockToTarget is ToTarget within block i (blocks[i].src <= src).
func (m *OffsetMap) blockToTarget(i int, src int64) int64 {
	b := &m.blocks[i]
	sd := m.packed[b.off:]
	td := sd[int(b.sw)*(blockRuns-1):]
	// k = the run holding src (or the gap after it) within the block.
	k, ds := prefixWithin(sd, b.sw, src-b.src)
	s, t := b.src+ds, b.tgt+prefixSum(td, b.tw, k)
	n := m.blockEnd(i) - t // the block's last run
	if k < blockRuns-1 {
		n = loadDelta(td[k*int(b.tw):], b.tw)
	}
	return t + min(src-s, n)
}

// blockToSource is ToSource within block i (blocks[i].tgt <= tgt, and tgt
// before the next block).
func (m *OffsetMap) blockToSource(i int, tgt int64) int64 {
	b := &m.blocks[i]
	sd := m.packed[b.off:]
	td := sd[int(b.sw)*(blockRuns-1):]
	k, dt := prefixWithin(td, b.tw, tgt-b.tgt)
	return b.src + prefixSum(sd, b.sw, k) + (tgt - (b.tgt + dt))
}

// prefixWithin returns the largest k <= blockRuns-1 whose first k deltas
// (width w) sum to at most limit, and that sum.
func prefixWithin(d []byte, w uint8, limit int64) (k int, sum int64) {
	const n = blockRuns - 1
	if w == 1 { // the common case, kept to a tight loop
		d = d[:n]
		for k < n {
			v := int64(d[k])
			if sum+v > limit {
				break
			}
			sum += v
			k++
		}
		return k, sum
	}
	for k < n {
		v := loadDelta(d[k*int(w):], w)
		if sum+v > limit {
			break
		}
		sum += v
		k++
	}
	return k, sum
}

// prefixSum is the sum of the first k deltas (width w).
func prefixSum(d []byte, w uint8, k int) int64 {
	var sum int64
	if w == 1 {
		for _, v := range d[:k] {
			sum += int64(v)
		}
		return sum
	}
	for j := 0; j < k; j++ {
		sum += loadDelta(d[j*int(w):], w)
	}
	return sum
}

// forEachRun calls fn with every run and its length, in order. Callers
// hold mu.
func (m *OffsetMap) forEachRun(fn func(src, tgt, n int64)) {
	for i := range m.blocks {
		b := &m.blocks[i]
		sd := m.packed[b.off:]
		td := sd[int(b.sw)*(blockRuns-1):]
		s, t := b.src, b.tgt
		for k := 0; k < blockRuns-1; k++ {
			dt := loadDelta(td[k*int(b.tw):], b.tw)
			fn(s, t, dt)
			s, t = s+loadDelta(sd[k*int(b.sw):], b.sw), t+dt
		}
		fn(s, t, m.blockEnd(i)-t)
	}
	for i, r := range m.tail {
		fn(r.src, r.tgt, m.tailLen(i))
	}
}

// MapMeta identifies the partition pair a map belongs to, so that a map
// loaded from disk is never applied to a recreated topic.
type MapMeta struct {
	Topic         string
	Partition     int32
	SourceTopicID [16]byte
	TargetTopicID [16]byte
	// SourceShift turns the copying replicator's source log offsets into
	// the map's source side (virtual offsets): virtual = offset + shift.
	// It is 0 for a topic's first copy (the source's offsets are the
	// virtual ones). After a cutover the other cluster is the topic's home
	// and the copy runs the other way; the new home's records continue the
	// virtual offsets at a fixed distance from its own (flipped.go).
	SourceShift int64
}

// NewOffsetMap returns an empty map whose first source offset is srcStart
// and whose first target record will land at tgtStart.
func NewOffsetMap(meta MapMeta, srcStart, tgtStart int64) *OffsetMap {
	return &OffsetMap{meta: meta, srcBase: srcStart, tgtBase: tgtStart, nextSrc: srcStart, tgtEnd: tgtStart}
}

// Meta returns the partition pair this map belongs to.
func (m *OffsetMap) Meta() MapMeta {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.meta
}

// ToTarget returns the target offset of the record at source offset src.
// A source offset on a gap (marker, aborted or compacted record) maps to the
// target offset of the next real record; SourceEnd maps to TargetEnd. ok is
// false for offsets before SourceStart or after SourceEnd (not copied yet).
func (m *OffsetMap) ToTarget(src int64) (tgt int64, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if src < m.srcBase || src > m.nextSrc {
		return 0, false
	}
	return m.realOf(m.compactToTarget(src)), true
}

// compactToTarget is ToTarget in compact target offsets. Callers hold mu;
// src is covered.
func (m *OffsetMap) compactToTarget(src int64) int64 {
	if len(m.tail) == 0 || src < m.firstSrc() {
		// A gap before the first copied record (or no records at all).
		return m.tgtBase
	}
	if src < m.tail[0].src {
		i := sort.Search(len(m.blocks), func(i int) bool { return m.blocks[i].src > src })
		return m.blockToTarget(i-1, src)
	}
	// i = number of tail runs starting at or before src (>= 1).
	i := sort.Search(len(m.tail), func(i int) bool { return m.tail[i].src > src })
	r := m.tail[i-1]
	// Inside the run: exact. After it (a gap): the next run's start, which
	// is r.tgt+n because compact target offsets are contiguous.
	return r.tgt + min(src-r.src, m.tailLen(i-1))
}

// firstSrc is the first run's source start. Callers hold mu; there is a
// run.
func (m *OffsetMap) firstSrc() int64 {
	if len(m.blocks) > 0 {
		return m.blocks[0].src
	}
	return m.tail[0].src
}

// ToSource returns the source offset of the record at target offset tgt;
// TargetEnd maps to SourceEnd, and an offset in a target gap (a marker of
// the copy's own transactions) to the source offset of the next copied
// record. ok is false outside [TargetStart, TargetEnd].
func (m *OffsetMap) ToSource(tgt int64) (src int64, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if tgt < m.tgtBase || tgt > m.tgtEnd+m.totalGaps() {
		return 0, false
	}
	tgt = m.compactOf(tgt)
	if tgt >= m.tgtEnd {
		return m.nextSrc, true
	}
	// There is a run: tgtBase <= tgt < tgtEnd.
	if tgt < m.tail[0].tgt {
		i := sort.Search(len(m.blocks), func(i int) bool { return m.blocks[i].tgt > tgt })
		return m.blockToSource(i-1, tgt), true // i >= 1: blocks[0].tgt == tgtBase
	}
	i := sort.Search(len(m.tail), func(i int) bool { return m.tail[i].tgt > tgt })
	r := m.tail[i-1]
	return r.src + (tgt - r.tgt), true
}

// SourceStart is the first source offset the map covers.
func (m *OffsetMap) SourceStart() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.srcBase
}

// SourceEnd is the next source offset to copy: every source offset below it
// is either on the target or a gap.
func (m *OffsetMap) SourceEnd() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.nextSrc
}

// TargetStart is the first target offset the map covers (the first copied
// record's, or a target gap's before it).
func (m *OffsetMap) TargetStart() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.tgtBase // no target gap lies below tgtBase (trimBelow)
}

// TargetEnd is the target offset the next copied record will get.
func (m *OffsetMap) TargetEnd() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.tgtEnd + m.totalGaps()
}

// TargetGaps is the number of target offsets the map covers that hold no
// copied record (a transactional copy's markers and aborted writes).
func (m *OffsetMap) TargetGaps() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.totalGaps()
}

// Runs is the number of runs (gaps between copied records + 1).
func (m *OffsetMap) Runs() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.blocks)*blockRuns + len(m.tail)
}

// MemoryBytes is the memory the runs use (capacity, not length).
func (m *OffsetMap) MemoryBytes() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return cap(m.blocks)*int(unsafe.Sizeof(runBlock{})) + cap(m.packed) + cap(m.tail)*int(unsafe.Sizeof(run{})) + cap(m.tgaps)*int(unsafe.Sizeof(tgap{}))
}

// tailLen is the length of tail run i. Callers hold mu.
func (m *OffsetMap) tailLen(i int) int64 {
	if i+1 < len(m.tail) {
		return m.tail[i+1].tgt - m.tail[i].tgt
	}
	return m.tgtEnd - m.tail[i].tgt
}

// add records that n records at source offsets src..src+n-1 were written at
// target offsets tgt..tgt+n-1. src must not be below SourceEnd (the offsets
// between are gaps) and tgt must equal TargetEnd: anything else means the
// target was written by someone else.
func (m *OffsetMap) add(src, tgt, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n <= 0 {
		return fmt.Errorf("offset map: adding %d records", n)
	}
	if src < m.nextSrc {
		return fmt.Errorf("offset map: source offset %d is below the copied end %d", src, m.nextSrc)
	}
	if end := m.tgtEnd + m.totalGaps(); tgt != end {
		return fmt.Errorf("offset map: target offset %d is not the expected target end %d", tgt, end)
	}
	tgt = m.tgtEnd // compact
	// Coalesce with the last run when no gap separates them.
	if k := len(m.tail); k == 0 || m.tail[k-1].src+m.tailLen(k-1) != src {
		m.pushRun(run{src: src, tgt: tgt})
	}
	m.jr.add(src, n)
	m.nextSrc = src + n
	m.tgtEnd = tgt + n
	return nil
}

// advance marks source offsets [SourceEnd, next) as gaps.
func (m *OffsetMap) advance(next int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if next > m.nextSrc {
		m.nextSrc = next
	}
}

// skipTarget marks target offsets [TargetEnd, next) as target gaps: they
// hold no copied record (a commit's marker, a fenced writer's aborted
// records).
func (m *OffsetMap) skipTarget(next int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := next - (m.tgtEnd + m.totalGaps())
	if g <= 0 {
		return
	}
	m.jr.skip(g)
	if k := len(m.tgaps); k > 0 && m.tgaps[k-1].at == m.tgtEnd {
		m.tgaps[k-1].cum += g
		return
	}
	m.tgaps = append(m.tgaps, tgap{at: m.tgtEnd, cum: m.totalGaps() + g})
}

// clone returns a deep copy.
func (m *OffsetMap) clone() *OffsetMap {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return &OffsetMap{
		meta: m.meta, srcBase: m.srcBase, tgtBase: m.tgtBase,
		blocks: append([]runBlock(nil), m.blocks...), packed: append([]byte(nil), m.packed...),
		// The tail grows as runs come (an idle partition's map stays a
		// run or two: 10,000 partitions would otherwise hold 10 MB of
		// empty tails).
		tail: append([]run(nil), m.tail...), nextSrc: m.nextSrc, tgtEnd: m.tgtEnd,
		tgaps: append([]tgap(nil), m.tgaps...),
		jr:    m.jr.clone(),
	}
}

// trimBelow drops the map's coverage of source offsets below src (the
// source's log start moved: retention or DeleteRecords deleted them, so no
// client can ask for them; the proxy answers offsets before SourceStart as
// out of range and clips target offsets before TargetStart to it). It
// rebuilds the packed runs, O(runs), so callers trim only when the log
// start moved. It reports whether anything was dropped.
func (m *OffsetMap) trimBelow(src int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	src = min(src, m.nextSrc)
	if src <= m.srcBase {
		return false
	}
	var kept []run
	newTgtBase := m.tgtEnd
	found := false
	m.forEachRun(func(s, t, n int64) {
		switch {
		case s+n <= src: // wholly below: dropped
		case s < src: // the run holding src: its upper part stays
			kept = append(kept, run{src: src, tgt: t + (src - s)})
		default:
			kept = append(kept, run{src: s, tgt: t})
		}
		if !found && s+n > src {
			found, newTgtBase = true, kept[0].tgt
		}
	})
	// The target gaps before the first kept record go too; the compact
	// offsets grow by their size (d), so that each kept record's target
	// offset (compact + the gaps before it) stays what it was.
	d := m.gapsUpTo(newTgtBase)
	i := sort.Search(len(m.tgaps), func(i int) bool { return m.tgaps[i].at > newTgtBase })
	gaps := m.tgaps[:0]
	for _, g := range m.tgaps[i:] {
		gaps = append(gaps, tgap{at: g.at + d, cum: g.cum - d})
	}
	m.tgaps = gaps
	m.blocks, m.packed, m.tail = nil, nil, nil
	for _, r := range kept {
		m.pushRun(run{src: r.src, tgt: r.tgt + d})
	}
	m.srcBase, m.tgtBase, m.tgtEnd = src, newTgtBase+d, m.tgtEnd+d
	m.jr.trimmed = true
	return true
}

// The file format, version 2 (all integers unsigned varints unless noted):
//
//	"KPOMAP" version(byte=2)
//	len(topic) topic partition(int32 big endian) sourceTopicID[16] targetTopicID[16]
//	sourceShift (signed varint; absent in version 1, where it is 0)
//	srcBase tgtBase nruns
//	nruns × (gapBefore len)      gapBefore = run.src - end of previous run (srcBase at first)
//	gapAfter                      nextSrc - end of last run
//	version 3 only: ntgaps, ntgaps × (at - previous at (tgtBase at first), size)
//	crc32c(everything above) (uint32 big endian)
//
// Target offsets are not stored: they follow from tgtBase and the lengths
// (and the target gaps, in compact offsets: see OffsetMap.tgaps). A map
// without target gaps (every idempotent copy) is written as version 2, so
// an older kproxy still reads it.
const (
	mapMagic   = "KPOMAP"
	mapVersion = 3
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Save writes the map in the versioned binary format above.
func (m *OffsetMap) Save(w io.Writer) error {
	_, err := w.Write(m.AppendBinary(nil))
	return err
}

// AppendBinary appends the map's file format to b.
func (m *OffsetMap) AppendBinary(b []byte) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	start := len(b)
	b = append(b, mapMagic...)
	version := byte(2)
	if len(m.tgaps) > 0 {
		version = 3
	}
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(len(m.meta.Topic)))
	b = append(b, m.meta.Topic...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.meta.Partition))
	b = append(b, m.meta.SourceTopicID[:]...)
	b = append(b, m.meta.TargetTopicID[:]...)
	b = binary.AppendVarint(b, m.meta.SourceShift)
	b = binary.AppendUvarint(b, uint64(m.srcBase))
	b = binary.AppendUvarint(b, uint64(m.tgtBase))
	b = binary.AppendUvarint(b, uint64(len(m.blocks)*blockRuns+len(m.tail)))
	prevEnd := m.srcBase
	m.forEachRun(func(src, _, n int64) {
		b = binary.AppendUvarint(b, uint64(src-prevEnd))
		b = binary.AppendUvarint(b, uint64(n))
		prevEnd = src + n
	})
	b = binary.AppendUvarint(b, uint64(m.nextSrc-prevEnd))
	if version == 3 {
		b = binary.AppendUvarint(b, uint64(len(m.tgaps)))
		at := m.tgtBase
		for i, g := range m.tgaps {
			b = binary.AppendUvarint(b, uint64(g.at-at))
			b = binary.AppendUvarint(b, uint64(m.gapSize(i)))
			at = g.at
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// ErrCorruptMap means a persisted offset map failed its checksum or does not
// parse; the replicator refuses to guess and stops the partition.
var ErrCorruptMap = errors.New("the persisted offset map is corrupt (bad checksum or truncated); restore it from a backup or recreate the target partition")

// Load reads a map written by Save.
func Load(r io.Reader) (*OffsetMap, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("offset map: reading: %w", err)
	}
	return decodeMap(b)
}

func decodeMap(b []byte) (*OffsetMap, error) {
	if len(b) < len(mapMagic)+1+4 || string(b[:len(mapMagic)]) != mapMagic {
		return nil, fmt.Errorf("offset map: not an offset map file: %w", ErrCorruptMap)
	}
	version := b[len(mapMagic)]
	if version < 1 || version > mapVersion {
		return nil, fmt.Errorf("offset map: file version %d, this kproxy reads versions 1 to %d", version, mapVersion)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("offset map: checksum mismatch: %w", ErrCorruptMap)
	}
	d := decoder{b: body[len(mapMagic)+1:]}
	m := &OffsetMap{}
	tl := d.uvarint()
	m.meta.Topic = string(d.bytes(int(tl)))
	m.meta.Partition = int32(binary.BigEndian.Uint32(d.bytes(4)))
	copy(m.meta.SourceTopicID[:], d.bytes(16))
	copy(m.meta.TargetTopicID[:], d.bytes(16))
	if version >= 2 {
		m.meta.SourceShift = d.varint()
	}
	m.srcBase = int64(d.uvarint())
	m.tgtBase = int64(d.uvarint())
	nruns := d.uvarint()
	if d.err == nil && nruns > uint64(len(d.b)) { // each run takes at least 2 bytes
		d.err = ErrCorruptMap
	}
	src, tgt := m.srcBase, m.tgtBase
	for i := uint64(0); i < nruns && d.err == nil; i++ {
		gap, n := int64(d.uvarint()), int64(d.uvarint())
		// Offsets stay within maxFileOffset (checked before adding, so a
		// corrupt file's sums never wrap into offsets that go backwards).
		if n <= 0 || (i > 0 && gap <= 0) || gap > maxFileOffset-src || n > maxFileOffset-src-gap || n > maxFileOffset-tgt {
			d.err = ErrCorruptMap
			break
		}
		src += gap
		m.pushRun(run{src: src, tgt: tgt})
		src += n
		tgt += n
	}
	if after := int64(d.uvarint()); after > maxFileOffset-src {
		d.err = ErrCorruptMap
	} else {
		m.nextSrc = src + after
	}
	m.tgtEnd = tgt
	if version >= 3 {
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.b)) { // each gap takes at least 2 bytes
			d.err = ErrCorruptMap
		}
		at, cum := m.tgtBase, int64(0)
		for i := uint64(0); i < n && d.err == nil; i++ {
			da, g := int64(d.uvarint()), int64(d.uvarint())
			// Gaps lie at increasing compact offsets up to the end, and
			// a corrupt file's sums must not wrap.
			if g <= 0 || (i > 0 && da <= 0) || da > m.tgtEnd-at || g > maxFileOffset-cum-m.tgtEnd {
				d.err = ErrCorruptMap
				break
			}
			at += da
			cum += g
			m.tgaps = append(m.tgaps, tgap{at: at, cum: cum})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = ErrCorruptMap
	}
	if d.err != nil {
		return nil, fmt.Errorf("offset map: decoding: %w", ErrCorruptMap)
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > 1<<62 {
		d.err = ErrCorruptMap
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || v > 1<<62 || v < -(1<<62) {
		d.err = ErrCorruptMap
		return 0
	}
	d.b = d.b[n:]
	return v
}

// maxFileOffset bounds every offset a map file may hold: Kafka offsets are
// int64, and the sums of a corrupt file's gaps and lengths must not wrap.
const maxFileOffset = 1 << 62

// bytes returns the next n bytes. Past the end it records the error and
// returns zeros for the fixed-size fields (4 and 16 bytes) that follow, and
// never allocates n: a corrupt length must not cost its size in memory (a
// topic length of 2^61 panicked in makeslice, 2^33 allocated 8 GiB;
// testdata/fuzz/FuzzOffsetMapFile holds both).
func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.err = ErrCorruptMap
		return make([]byte, min(max(n, 0), 16))
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// mapPath is where a partition's map lives under the state directory:
// <dir>/<topic>/<partition>.offsetmap. Kafka topic names are [a-zA-Z0-9._-]
// and never "." or "..", so they are safe path elements.
func mapPath(dir, topic string, partition int32) string {
	return filepath.Join(dir, topic, strconv.Itoa(int(partition))+".offsetmap")
}

// loadMapFile returns the persisted map, or nil and no error if none exists.
func loadMapFile(dir, topic string, partition int32) (*OffsetMap, error) {
	f, err := os.Open(mapPath(dir, topic, partition))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("offset map: %w", err)
	}
	defer f.Close()
	m, err := Load(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if err := replayDeltas(deltaPath(dir, topic, partition), m); err != nil {
		return nil, err
	}
	return m, nil
}

func writeFileAtomic(path string, data []byte) error {
	if err := statefile.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("offset map: creating state directory: %w", err)
	}
	if err := statefile.WriteAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("offset map: %w", err)
	}
	return nil
}
