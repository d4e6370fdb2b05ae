package control

// Idempotent producers' upstream sessions, shared by every instance through
// the control topic (proxy/ident_pid_share.go says why; docs/ha.md
// "Producer sessions move with the partition").
//
// Records: key session/<vpid>/<vepoch>/<cluster>/<topic>/<moves>/<pid>,
// value sessionRecord. Every proposal has its own key (the upstream
// producer id it offers ends it), so none is ever overwritten, and the
// session chosen for a producer is the proposal with the lowest offset
// among the live ones of its prefix: every instance follows the topic in
// the same order, and compaction keeps each key's offset, so all agree,
// also an instance that starts later. Two instances that propose at once
// both read back the other's record before their own answer returns if it
// came first (put waits until its own record was read), so the loser
// learns at once that it lost; it then tombstones its proposal.
//
// Garbage: a session's records are tombstoned by the instance that
// proposed the chosen one when its own idle expiry forgets the session
// (limits.producer_idle, 7 days by default, without a batch through that
// instance). A producer still writing through other instances keeps its
// session there (their tables are not emptied by a tombstone); only a
// partition that moves to an instance that never used the session after
// the tombstone gets a fresh one (the gap docs/ha.md describes). Losing
// proposals are tombstoned by their proposer at once; one a crash left
// behind goes with the chosen one's records.
//
// Unreachable control topic: a proposal that is not read back within
// proxy's proposeTimeout fails, and the batch is refused retriably; no
// instance ever falls back to a session of its own.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/secure"
)

const sessionPrefix = "session/"

// sessionRecord is one proposal's value.
type sessionRecord struct {
	PID   int64     `json:"pid"`
	Epoch int16     `json:"epoch"`
	By    string    `json:"by"` // the proposing instance
	At    time.Time `json:"at"`
}

// proposal is a live proposal as the index holds it.
type proposal struct {
	offset int64
	rec    sessionRecord
}

// sharedSessions is the proxy's SessionShare on the control topic.
type sharedSessions struct {
	log  hclog.Logger
	self string
	st   *stateTopic
	// ctx ends background tombstones at close; wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex // guards byPrefix; taken under st.mu by the watch
	// byPrefix is, per session (key prefix up to the pid), its live
	// proposals by key.
	byPrefix map[string]map[string]proposal
}

var _ proxy.SessionShare = (*sharedSessions)(nil)

func newSharedSessions(log hclog.Logger, self string, st *stateTopic) *sharedSessions {
	ss := &sharedSessions{log: log, self: self, st: st, byPrefix: map[string]map[string]proposal{}}
	ss.ctx, ss.cancel = context.WithCancel(context.Background())
	st.watch(sessionPrefix, ss.apply)
	return ss
}

// sessionKeyPrefix is the key of k's proposals without their pid.
func sessionKeyPrefix(k proxy.SharedSession) string {
	return sessionPrefix + strconv.FormatInt(k.VPID, 10) + "/" + strconv.Itoa(int(k.VEpoch)) + "/" + k.Cluster + "/" + k.Topic + "/" + strconv.FormatUint(k.Moves, 10) + "/"
}

// apply indexes one record of the topic (stateTopic.watch).
func (ss *sharedSessions) apply(key string, val json.RawMessage, offset int64) {
	i := strings.LastIndexByte(key, '/')
	prefix := key[:i+1]
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if val == nil {
		if ps := ss.byPrefix[prefix]; ps != nil {
			delete(ps, key)
			if len(ps) == 0 {
				delete(ss.byPrefix, prefix)
			}
		}
		return
	}
	var r sessionRecord
	if err := json.Unmarshal(val, &r); err != nil {
		ss.log.Warn("control topic: unreadable producer session record skipped", "key", key, "error", err)
		return
	}
	ps := ss.byPrefix[prefix]
	if ps == nil {
		ps = map[string]proposal{}
		ss.byPrefix[prefix] = ps
	}
	if _, ok := ps[key]; ok {
		// The same proposal again: instances chose by its first
		// offset, and it keeps it. (Proposals are written once, by
		// an idempotent producer; this is a guard, not a path.)
		return
	}
	ps[key] = proposal{offset: offset, rec: r}
}

// chosen is the first live proposal of prefix.
func (ss *sharedSessions) chosen(prefix string) (sessionRecord, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var best proposal
	found := false
	for _, p := range ss.byPrefix[prefix] {
		if !found || p.offset < best.offset {
			best, found = p, true
		}
	}
	return best.rec, found
}

func (ss *sharedSessions) Session(k proxy.SharedSession) (int64, int16, bool) {
	r, ok := ss.chosen(sessionKeyPrefix(k))
	return r.PID, r.Epoch, ok
}

func (ss *sharedSessions) Propose(ctx context.Context, k proxy.SharedSession, pid int64, epoch int16) (int64, int16, error) {
	prefix := sessionKeyPrefix(k)
	key := prefix + strconv.FormatInt(pid, 10)
	if err := ss.st.put(ctx, stateRecord{Key: key, Value: sessionRecord{PID: pid, Epoch: epoch, By: ss.self, At: time.Now().UTC()}}); err != nil {
		return 0, 0, err
	}
	r, ok := ss.chosen(prefix)
	if !ok {
		// Tombstoned between its write and now: an expiry elsewhere
		// raced a producer coming back. Retriable.
		return 0, 0, fmt.Errorf("producer session %s: no proposal left after ours", prefix)
	}
	if r.PID != pid {
		ss.log.Debug("another instance chose this producer's session first; ours is abandoned", "session", prefix, "ours", pid, "chosen", r.PID)
		ss.background(stateRecord{Key: key})
	}
	return r.PID, r.Epoch, nil
}

func (ss *sharedSessions) Forget(k proxy.SharedSession) {
	prefix := sessionKeyPrefix(k)
	r, ok := ss.chosen(prefix)
	if !ok || r.By != ss.self {
		return
	}
	ss.mu.Lock()
	var recs []stateRecord
	for key := range ss.byPrefix[prefix] {
		recs = append(recs, stateRecord{Key: key})
	}
	ss.mu.Unlock()
	ss.background(recs...)
}

// background writes recs (tombstones) without making anyone wait; a
// failure leaves garbage, never a wrong session, so it is only logged.
func (ss *sharedSessions) background(recs ...stateRecord) {
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		ctx, cancel := context.WithTimeout(ss.ctx, 30*time.Second)
		defer cancel()
		if err := ss.st.put(ctx, recs...); err != nil {
			ss.log.Warn("control topic: producer session records not tombstoned (garbage left, harmless)", "error", err)
		}
	}()
}

// openSharedSessions opens the control topic for the producer sessions.
// It is a follower of its own, beside the coordinated flips' (coordflip.go,
// not enabled yet): one follower for both is a later simplification.
func openSharedSessions(ctx context.Context, cfg *config.Config, log hclog.Logger) (*sharedSessions, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := openStateTopic(octx, log.Named("state"), StateTopicName(cfg.ClusterID), func(o ...kgo.Opt) (*kgo.Client, error) {
		return secure.Client(cfg, cfg.Control.Cluster, o...)
	})
	if err != nil {
		return nil, fmt.Errorf("producer sessions: %w", err)
	}
	return newSharedSessions(log.Named("sessions"), cfg.Instance.ID, st), nil
}

// close stops background writes and closes the topic; after the proxy
// closed (its produce path proposes). A nil ss (no control:) is a no-op.
func (ss *sharedSessions) close() {
	if ss == nil {
		return
	}
	ss.cancel()
	ss.wg.Wait()
	ss.st.Close()
}
