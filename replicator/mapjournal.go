package replicator

// Incremental persistence of offset maps (issue 10 item 5). Rewriting a
// partition's whole map file with two fsyncs (file and directory) at every
// save costs O(runs) bytes per save: a transactional topic's map of a
// million offsets is ~270 KB, written again every second while the copy is
// behind. Instead, what add and advance did since the last save (a few
// bytes per batch) is appended to a delta file next to the snapshot,
// <partition>.offsetmap.delta, with one fsync; once the delta file outgrows
// the snapshot (or 64 KiB), the next save writes a fresh snapshot and
// empties the delta file, so the bytes written stay proportional to the
// changes, amortised.
//
// Delta file: "KPOMAPD" version(byte=1), then records, each
//
//	len(payload) (uvarint) payload crc32c(payload) (uint32 big endian)
//	payload: startSrc startTgt nops nops×(gap n) endSrc   (uvarints)
//
// A record replays onto the map whose SourceEnd and TargetEnd are startSrc
// and startTgt: for each op, src += gap, add(src, TargetEnd, n), src += n;
// then advance(endSrc). An op with n 0 is a target gap of gap offsets
// (skipTarget: a transactional copy's marker), which an older kproxy
// refuses as a corrupt record rather than misreads. Records that end at or before the snapshot's end
// (written before the snapshot replaced them, and not yet emptied when the
// process died) are skipped. A record cut short at the end of the file (a
// crash mid-append) is ignored; any other bad record, or a record that does
// not start where the map ends, fails the load: the map is never guessed.
//
// The snapshot format is unchanged (version 2), so a state directory
// written before this change loads as it is (no delta file).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

const deltaMagic = "KPOMAPD\x01"

// journal is what the map's adds did since the last save. Only the copy
// loop mutates a map, and it also saves it, so the journal needs no lock
// of its own beyond the map's.
type journal struct {
	on                 bool // a save started it; clones and decoded maps have none until saved
	startSrc, startTgt int64
	last               int64 // source end of the last add (or startSrc)
	nops               int
	ops                []byte
	trimmed            bool // trimBelow ran: only a snapshot can say so
}

func (j *journal) add(src, n int64) {
	if !j.on {
		return
	}
	j.ops = binary.AppendUvarint(j.ops, uint64(src-j.last))
	j.ops = binary.AppendUvarint(j.ops, uint64(n))
	j.last = src + n
	j.nops++
}

// skip records a target gap of g offsets (an op with n 0).
func (j *journal) skip(g int64) {
	if !j.on {
		return
	}
	j.ops = binary.AppendUvarint(j.ops, uint64(g))
	j.ops = binary.AppendUvarint(j.ops, 0)
	j.nops++
}

func (j journal) clone() journal {
	j.ops = append([]byte(nil), j.ops...)
	return j
}

// restartJournal starts a new journal at the map's end. Callers hold mu.
func (m *OffsetMap) restartJournal() {
	m.jr = journal{on: true, startSrc: m.nextSrc, startTgt: m.tgtEnd + m.totalGaps(), last: m.nextSrc, ops: m.jr.ops[:0]}
}

// takeDelta returns the delta record of what changed since the last save
// (nil if nothing did) and restarts the journal; full is true when only a
// snapshot can persist the change (no journal yet, or a trim).
func (m *OffsetMap) takeDelta(rec []byte) (out []byte, full bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.jr.on || m.jr.trimmed {
		return rec, true
	}
	if m.jr.nops == 0 && m.nextSrc == m.jr.startSrc {
		return rec, false
	}
	var p []byte
	p = binary.AppendUvarint(p, uint64(m.jr.startSrc))
	p = binary.AppendUvarint(p, uint64(m.jr.startTgt))
	p = binary.AppendUvarint(p, uint64(m.jr.nops))
	p = append(p, m.jr.ops...)
	p = binary.AppendUvarint(p, uint64(m.nextSrc))
	rec = binary.AppendUvarint(rec, uint64(len(p)))
	rec = append(rec, p...)
	rec = binary.BigEndian.AppendUint32(rec, crc32.Checksum(p, castagnoli))
	m.restartJournal()
	return rec, false
}

// snapshot encodes the whole map and restarts the journal at its end.
func (m *OffsetMap) snapshot() []byte {
	b := m.AppendBinary(nil)
	m.mu.Lock()
	m.restartJournal()
	m.mu.Unlock()
	return b
}

func deltaPath(dir, topic string, partition int32) string {
	return mapPath(dir, topic, partition) + ".delta"
}

// minDeltaCompact is the delta file size below which a save never
// rewrites the snapshot (small maps: a snapshot is as cheap as a delta).
// A variable for tests.
var minDeltaCompact int64 = 64 << 10

// persistMap saves what changed in m since its last save: a delta record
// appended to the delta file, or a fresh snapshot when the delta file has
// outgrown the snapshot or the change needs one. It returns the bytes
// written (the benchmark's measure).
func persistMap(dir string, m *OffsetMap) (int, error) {
	meta := m.Meta()
	rec, full := m.takeDelta(nil)
	if !full && len(rec) == 0 {
		return 0, nil
	}
	if !full {
		// takeDelta restarted the journal: a failure before the record is
		// on disk leaves only a snapshot able to persist what it held.
		lost := func(err error) (int, error) {
			m.mu.Lock()
			m.jr.on = false
			m.mu.Unlock()
			return 0, fmt.Errorf("offset map: %w", err)
		}
		dp := deltaPath(dir, meta.Topic, meta.Partition)
		f, err := os.OpenFile(dp, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return lost(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return lost(err)
		}
		snap, serr := os.Stat(mapPath(dir, meta.Topic, meta.Partition))
		if serr == nil && st.Size()+int64(len(rec)) <= max(snap.Size(), minDeltaCompact) {
			if st.Size() == 0 {
				rec = append([]byte(deltaMagic), rec...)
			}
			_, err := f.Write(rec)
			if err == nil {
				err = f.Sync()
			}
			if err != nil {
				// Cut a partial record back, so that it is not followed by
				// the next one (it would be a bad record in the middle).
				_ = f.Truncate(st.Size())
				// The journal was restarted: only a snapshot can now
				// persist what the lost record held.
				m.mu.Lock()
				m.jr.on = false
				m.mu.Unlock()
				return 0, fmt.Errorf("offset map: appending to %s: %w", dp, err)
			}
			return len(rec), nil
		}
	}
	return saveMapFile(dir, m)
}

// saveMapFile persists m as a fresh snapshot, atomically (a temporary file,
// fsync, rename, directory fsync), then empties its delta file: a crash in
// between leaves deltas the snapshot already holds, which loading skips.
func saveMapFile(dir string, m *OffsetMap) (int, error) {
	meta := m.Meta()
	b := m.snapshot()
	if err := writeFileAtomic(mapPath(dir, meta.Topic, meta.Partition), b); err != nil {
		m.mu.Lock()
		m.jr.on = false // the next save must be a snapshot again
		m.mu.Unlock()
		return 0, err
	}
	if err := os.Truncate(deltaPath(dir, meta.Topic, meta.Partition), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return len(b), fmt.Errorf("offset map: emptying the delta file: %w", err)
	}
	return len(b), nil
}

// replayDeltas applies the delta file at path (if any) to m, loaded from
// its snapshot.
func replayDeltas(path string, m *OffsetMap) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("offset map: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("offset map: reading %s: %w", path, err)
	}
	if len(b) == 0 {
		return nil
	}
	if len(b) < len(deltaMagic) {
		return nil // a torn first append
	}
	if string(b[:len(deltaMagic)]) != deltaMagic {
		return fmt.Errorf("offset map: %s is not a delta file: %w", path, ErrCorruptMap)
	}
	b = b[len(deltaMagic):]
	for i := 0; len(b) > 0; i++ {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l+4 {
			return nil // cut short at the end: a crash mid-append
		}
		p := b[n : n+int(l)]
		if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[n+int(l):]) {
			return fmt.Errorf("offset map: %s: record %d fails its checksum: %w", path, i, ErrCorruptMap)
		}
		b = b[n+int(l)+4:]
		if err := m.replay(p); err != nil {
			return fmt.Errorf("offset map: %s: record %d: %w", path, i, err)
		}
	}
	return nil
}

// replay applies one delta payload (see the file comment).
func (m *OffsetMap) replay(p []byte) error {
	d := decoder{b: p}
	startSrc, startTgt, nops := int64(d.uvarint()), int64(d.uvarint()), d.uvarint()
	if d.err == nil && nops > uint64(len(d.b)) {
		d.err = ErrCorruptMap
	}
	type op struct{ gap, n int64 }
	ops := make([]op, 0, nops)
	for i := uint64(0); i < nops && d.err == nil; i++ {
		ops = append(ops, op{int64(d.uvarint()), int64(d.uvarint())})
	}
	endSrc := int64(d.uvarint())
	if d.err != nil || len(d.b) != 0 {
		return ErrCorruptMap
	}
	srcEnd, tgtEnd := m.SourceEnd(), m.TargetEnd()
	switch {
	case startSrc == srcEnd && startTgt == tgtEnd:
	case endSrc <= srcEnd && startTgt <= tgtEnd:
		return nil // already in the snapshot
	default:
		return fmt.Errorf("it starts at source %d target %d, but the map ends at %d/%d: a delta is missing: %w", startSrc, startTgt, srcEnd, tgtEnd, ErrCorruptMap)
	}
	src := startSrc
	for _, o := range ops {
		if o.n == 0 {
			if o.gap <= 0 {
				return ErrCorruptMap
			}
			m.skipTarget(m.TargetEnd() + o.gap)
			continue
		}
		src += o.gap
		if err := m.add(src, m.TargetEnd(), o.n); err != nil {
			return fmt.Errorf("%v: %w", err, ErrCorruptMap)
		}
		src += o.n
	}
	if endSrc < src {
		return ErrCorruptMap
	}
	m.advance(endSrc)
	return nil
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func uvarint(b []byte) (uint64, int) { return binary.Uvarint(b) }
