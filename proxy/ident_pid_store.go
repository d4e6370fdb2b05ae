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
// default); a mapping older than that only costs an OUT_OF_ORDER_SEQUENCE
// answer the client recovers from by bumping its epoch (KIP-360), which
// starts fresh sessions.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"

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
}

// pidStore appends session records to the sessions file.
type pidStore struct {
	f *statefile.AppendFile
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
	var recs []pidRecord
	p.mu.Lock()
	for t, n := range p.moved {
		recs = append(recs, pidRecord{Moved: t, Moves: n})
	}
	for k, u := range p.m {
		recs = append(recs, pidRecord{VPID: k.vpid, VEpoch: k.vepoch, Cluster: k.cluster, Topic: k.topic, Moves: k.moves, PID: u.pid, Epoch: u.epoch})
	}
	p.mu.Unlock()
	if err := statefile.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("producer sessions: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return nil, fmt.Errorf("producer sessions: %w", err)
		}
	}
	if err := statefile.WriteAtomic(path, buf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("producer sessions: %w", err)
	}
	f, err := statefile.OpenAppend(path, 0o644)
	if err != nil {
		return nil, fmt.Errorf("producer sessions: %w", err)
	}
	return &pidStore{f: f}, nil
}

func loadPIDRecords(path string, p *producerIDs, log hclog.Logger) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[pidKey]upstreamPID{}
	}
	if p.moved == nil {
		p.moved = map[string]uint64{}
	}
	torn, err := statefile.ReadLines(path, func(b []byte) error {
		var r pidRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return err
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
		p.m[pidKey{vpid: r.VPID, vepoch: r.VEpoch, cluster: r.Cluster, topic: r.Topic, moves: r.Moves}] = upstreamPID{pid: r.PID, epoch: r.Epoch}
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

// append writes one record and syncs it; a failed append leaves the file
// as it was (statefile.AppendFile).
func (st *pidStore) append(r pidRecord) error {
	if st == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return st.f.Append(b)
}

func (st *pidStore) close() {
	if st == nil {
		return
	}
	st.f.Close()
}
