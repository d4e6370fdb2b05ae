package proxy

// Idempotent producers' upstream sessions survive a restart of kproxy.
//
// A client keeps its virtual PID and its sequence numbers across a kproxy
// restart and resends the batches whose answers it lost. If the restarted
// kproxy mapped that virtual PID to a new upstream session, the broker could
// not recognise a resent batch it already appended, and the record would be
// written twice. So every upstream session kproxy opens for an idempotent
// producer, and every topic move (which switches a topic to new sessions,
// ident_pid.go), is appended to state_dir/producer-sessions.jsonl and
// fsynced before a batch uses it; a restart loads the file (and rewrites it
// compacted), and a resent batch goes to the same upstream session, where
// the broker's duplicate check drops it.
//
// Brokers forget an idle producer after producer.id.expiration.ms (a day by
// default), and kproxy forgets a session idle for limits.producer_idle
// (state_expiry.go): the file is then rewritten without it. Each line
// records when its session was last used (at its append, and at each
// rewrite), so a restart does not start every session's idle time over.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/statefile"
)

// pidRecord is one line of the sessions file: an upstream session (Cluster
// set) or a topic move (Moved set).
type pidRecord struct {
	VPID    int64  `json:"v,omitempty"`
	VEpoch  int16  `json:"ve,omitempty"`
	Cluster string `json:"c,omitempty"`
	Topic   string `json:"t,omitempty"`
	Moves   uint64 `json:"m,omitempty"`
	PID     int64  `json:"p,omitempty"`
	Epoch   int16  `json:"e,omitempty"`
	Moved   string `json:"moved,omitempty"`
	// Used is when the session was last used, in Unix seconds (at its
	// append, or at the last rewrite); 0 in files from before expiry.
	Used int64 `json:"u,omitempty"`
	// OldHome (a topic) marks the producer state a cutover's drain noted
	// on the topic's home Cluster for move Moves: Producers are
	// (partition, upstream producer id, epoch, last sequence)
	// (ident_pid_resend.go).
	OldHome   string     `json:"oh,omitempty"`
	Producers [][4]int64 `json:"ps,omitempty"`
}

// pidStore appends session records to the sessions file.
type pidStore struct {
	path string
	// mu serializes appends and rewrites, before producerIDs.mu
	// (lockStore).
	mu sync.Mutex
	f  *statefile.AppendFile
	// lines counts the file's lines; a rewrite is due when it is well
	// above the live sessions (after forgets and expiry).
	lines int
}

const pidStoreFile = "producer-sessions.jsonl"

// openPIDStore loads the sessions file of dir into p, rewrites it compacted
// and opens it for appending. A torn last line (a crash mid-append) is
// skipped with a log line; any other unreadable line stops start-up, naming
// the file and line.
func openPIDStore(dir string, p *producerIDs, log hclog.Logger) (*pidStore, error) {
	path := filepath.Join(dir, pidStoreFile)
	if err := loadPIDRecords(path, p, log); err != nil {
		return nil, err
	}
	if err := statefile.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("producer sessions: %w", err)
	}
	st := &pidStore{path: path}
	p.mu.Lock()
	recs := p.snapshotLocked()
	p.mu.Unlock()
	if err := st.replace(recs); err != nil {
		return nil, err
	}
	return st, nil
}

// snapshotLocked copies the table's sessions and moves as the records of
// the file's compacted content; p.mu is held. Encoding them is left to
// replace, outside p.mu: batches of known producers look sessions up under
// p.mu and should not wait for JSON.
func (p *producerIDs) snapshotLocked() []pidRecord {
	recs := make([]pidRecord, 0, len(p.moved)+len(p.m))
	for t, n := range p.moved {
		recs = append(recs, pidRecord{Moved: t, Moves: n})
	}
	for t, snap := range p.oldHomes {
		if snap.moves >= p.moved[t] {
			recs = append(recs, snap.record(t))
		}
	}
	for k, u := range p.m {
		r := pidRecord{VPID: k.vpid, VEpoch: k.vepoch, Cluster: k.cluster, Topic: k.topic, Moves: k.moves, PID: u.pid, Epoch: u.epoch}
		if t, ok := p.used[k]; ok {
			r.Used = t.Unix()
		}
		recs = append(recs, r)
	}
	return recs
}

// replace writes recs as the whole file (statefile.WriteAtomic: the old
// content or the new survive a crash, never a mix) and reopens it for
// appending. st.mu is held, or st is not shared yet.
func (st *pidStore) replace(recs []pidRecord) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("producer sessions: %w", err)
		}
	}
	if err := statefile.WriteAtomic(st.path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("producer sessions: %w", err)
	}
	f, err := statefile.OpenAppend(st.path, 0o644)
	if err != nil {
		return fmt.Errorf("producer sessions: %w", err)
	}
	if st.f != nil {
		st.f.Close()
	}
	st.f, st.lines = f, len(recs)
	return nil
}

func loadPIDRecords(path string, p *producerIDs, log hclog.Logger) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[pidKey]upstreamPID{}
	}
	if p.used == nil {
		p.used = map[pidKey]time.Time{}
	}
	// A line's time is when its session was used at the last rewrite
	// (or its append): a session used since, up to a crash, looks older
	// than it is. Taking no time earlier than a quarter of producer_idle
	// before now bounds that: a session is never forgotten sooner than
	// three quarters of producer_idle after its last use.
	now := p.clock()
	floor := now.Add(-p.idle / 4)
	if p.moved == nil {
		p.moved = map[string]uint64{}
	}
	torn, err := statefile.ReadLines(path, func(b []byte) error {
		var r pidRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if r.OldHome != "" {
			snap, err := oldHomeOf(r)
			if err != nil {
				return err
			}
			p.setOldHomeLocked(r.OldHome, snap)
			return nil
		}
		if r.Moved != "" {
			p.moved[r.Moved] = max(p.moved[r.Moved], r.Moves)
			return nil
		}
		if r.Cluster != Source && r.Cluster != Target {
			// "{}" or "null" decode without an error; kproxy never
			// writes a session without its cluster.
			return fmt.Errorf("neither a topic move nor a session on source or target: %.80q", b)
		}
		k := pidKey{vpid: r.VPID, vepoch: r.VEpoch, cluster: r.Cluster, topic: r.Topic, moves: r.Moves}
		p.m[k] = upstreamPID{pid: r.PID, epoch: r.Epoch}
		used := now
		if r.Used != 0 && p.idle > 0 {
			used = time.Unix(r.Used, 0)
			if used.Before(floor) {
				used = floor
			}
		}
		p.used[k] = used
		return nil
	})
	if err != nil {
		// A damaged line in the middle lost sessions kproxy cannot guess:
		// serving on would send resent batches to new sessions, and the
		// broker would append them twice.
		return fmt.Errorf("producer sessions: %w", err)
	}
	if torn > 0 {
		log.Warn("producer sessions: skipping a torn last line (a crash mid-append leaves one)", "file", path, "line", torn)
	}
	return nil
}

// appendLocked writes one record and syncs it; a failed append leaves the
// file as it was (statefile.AppendFile). st.mu is held (lockStore).
func (st *pidStore) appendLocked(r pidRecord) error {
	if st == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := st.f.Append(b); err != nil {
		return err
	}
	st.lines++
	return nil
}

// lockStore takes the store's lock, before p.mu: an append and the table
// change it records happen under it, so a rewrite (which holds it while it
// snapshots the table) never drops a session that was appended but not yet
// in the table. Lookups take only p.mu and never wait for an fsync. A nil
// store (no state_dir) has nothing to lock.
func (p *producerIDs) lockStore() (unlock func()) {
	if st := p.store; st != nil {
		st.mu.Lock()
		return st.mu.Unlock
	}
	return func() {}
}

func (st *pidStore) close() {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.f.Close()
}
