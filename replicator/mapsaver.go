package replicator

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// catchUpSaveGap is the least time between two saves of a copy session's
// map made because the copy caught up with the source. A copy of a
// trickle (a producer with linger 0 at 5,000 records/s: a batch per
// record) catches up at nearly every answer, and saving at each was an
// fsync per source batch: 44% of the replicator's CPU in that load
// (pprof), and a wait before the next fetch. A catch-up within the gap is
// saved when it ends instead (a timer), so an idle copy's map still
// reaches the disk at most this long after its last change.
const catchUpSaveGap = 100 * time.Millisecond

// mapSaver decides when a copy session persists its offset map, and runs
// the deferred catch-up saves. The copy loop owns the map (mu held) except
// while it waits for the source (idle), so a deferred save, which takes
// mu, only ever runs between two answers, never beside a map update or the
// loop's own save.
type mapSaver struct {
	dir   string
	p     *partition
	m     *OffsetMap
	saves prometheus.Counter

	mu      sync.Mutex // held by the copy loop except while it fetches
	unsaved bool       // the map changed since its last save
	savedAt time.Time
	timer   *time.Timer
	ended   bool // the session ended: no deferred save any more
}

func newMapSaver(dir string, p *partition, m *OffsetMap, saves prometheus.Counter) *mapSaver {
	// As if saved a catch-up gap ago: the session's first catch-up is
	// saved at once, a copy behind the source first after about
	// mapSaveInterval.
	s := &mapSaver{dir: dir, p: p, m: m, saves: saves, savedAt: time.Now().Add(-catchUpSaveGap)}
	s.mu.Lock()
	return s
}

// idle lets a deferred save run while the loop waits for the source;
// busy takes the map back for the next answer.
func (s *mapSaver) idle() { s.mu.Unlock() }
func (s *mapSaver) busy() { s.mu.Lock() }

// changed notes a change of the map that is not on disk yet (mu held).
func (s *mapSaver) changed() { s.unsaved = true }

// after the loop handled an answer (mu held): saves the map when it is
// due, or arms the deferred save of a catch-up within catchUpSaveGap of the
// last save. A busy copy is saved at least every mapSaveInterval; the
// target log is the checkpoint, so a map saved late only means a longer
// recoverTail after a crash, never a wrong map.
func (s *mapSaver) after(caughtUp bool) error {
	if !s.unsaved {
		return nil
	}
	since := time.Since(s.savedAt)
	switch {
	case since >= mapSaveInterval, caughtUp && since >= catchUpSaveGap:
		return s.save()
	case caughtUp && s.timer == nil:
		s.timer = time.AfterFunc(catchUpSaveGap-since, s.deferred)
	}
	return nil
}

// deferred is the timer's save: it runs once the loop is idle. A failure
// is noted (SealTopic reports it) and the loop's next save tries again.
func (s *mapSaver) deferred() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if s.ended || !s.unsaved {
		return
	}
	_ = s.save()
}

// save persists the map now (mu held).
func (s *mapSaver) save() error {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	_, err := persistMap(s.dir, s.m)
	s.saves.Inc()
	s.p.noteSaved(err)
	if err != nil {
		return err
	}
	s.unsaved, s.savedAt = false, time.Now()
	return nil
}

// end stops the deferred saves (mu held) and, with final, saves what is
// left: the session ended (Stop, StopTopic, an error; not a simulated
// crash). The caller releases mu.
func (s *mapSaver) end(final bool) error {
	s.ended = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if final && s.unsaved {
		return s.save()
	}
	return nil
}
