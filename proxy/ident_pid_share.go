package proxy

// Idempotent producers' upstream sessions shared by every instance
// (config `control:`, docs/ha.md "Producer sessions move with the
// partition").
//
// Sequence numbers pass through kproxy unchanged (ident_pid.go), so the
// broker keeps an idempotent producer's sequence state per partition under
// the upstream session kproxy writes with. With several instances, a
// partition moves when the membership changes, and its new owner must
// write with the same upstream session as the old one: then the broker
// answers the client exactly as a real new leader would, with
// OUT_OF_ORDER_SEQUENCE_NUMBER for a batch n+1 that arrives before n (a
// librdkafka producer pipelines 5 batches per partition and lost n when a
// fresh session took n+1) and DUPLICATE_SEQUENCE_NUMBER for a batch the
// old owner wrote but never answered. A broker does not bind a producer id
// to a connection, so any instance can write with any session.
//
// So with a SessionShare each (virtual PID, virtual epoch, cluster, topic
// move) gets one upstream session for the whole virtual cluster: the first
// instance that needs it obtains one (InitProducerId) and proposes it; the
// proposal first in the share's order wins everywhere, and an instance
// whose proposal lost uses the winner and abandons its own (an upstream
// idempotent session that never wrote costs the broker nothing). Lookups
// are local reads: after a session's first batch on an instance its
// batches cost what they cost with one instance.
//
// Without a share (one instance) nothing here runs.

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// SharedSession names one idempotent producer's upstream session in a
// SessionShare: the virtual producer, its epoch, the cluster, and, for a
// topic that moved, the topic and its move count (ident_pid.go, pidKey).
type SharedSession struct {
	VPID    int64
	VEpoch  int16
	Cluster string
	Topic   string
	Moves   uint64
}

// SessionShare is the table of upstream sessions every instance reads
// (control/sessions.go keeps it in the control topic).
type SessionShare interface {
	// Session is the session chosen for k, if one is known here: a
	// local read, no I/O.
	Session(k SharedSession) (pid int64, epoch int16, ok bool)
	// Propose offers a session this instance just obtained for k and
	// returns the one chosen (the first proposal), once known here. An
	// error means nothing is known: the caller must not write with
	// either.
	Propose(ctx context.Context, k SharedSession, pid int64, epoch int16) (int64, int16, error)
	// Forget says this instance let k's session expire (idle for
	// limits.producer_idle); it must not block.
	Forget(k SharedSession)
}

// proposeTimeout bounds the wait for the share when a session is chosen:
// a produce request waits for it, and a client's request timeout is 30 s
// by default.
const proposeTimeout = 5 * time.Second

func (k pidKey) shared() SharedSession {
	return SharedSession{VPID: k.vpid, VEpoch: k.vepoch, Cluster: k.cluster, Topic: k.topic, Moves: k.moves}
}

// ShareProducerSessions makes idempotent producers' upstream sessions come
// from sh; called once, before clients are accepted. Sessions restored from
// state_dir that sh does not hold as they are are dropped: another
// instance may have chosen another one for the same producer meanwhile.
func (s *Server) ShareProducerSessions(sh SessionShare) {
	p := &s.pids
	p.mu.Lock()
	defer p.mu.Unlock()
	p.share = sh
	// Move counts restored from state_dir are this instance's own (its
	// gained partitions counted as moves before sessions were shared,
	// instances.go), so they would key the same producer's session
	// differently on each instance. Every instance starts from none; the
	// coordinated flips then set each replicated topic's count from the
	// control topic (SetTopicMoves, control/coordflip.go), at start and
	// at each flip, so all instances key alike.
	clear(p.moved)
	p.oldHomes, p.resends = nil, nil
	for k, u := range p.m {
		if pid, epoch, ok := sh.Session(k.shared()); !ok || pid != u.pid || epoch != u.epoch {
			delete(p.m, k)
			delete(p.used, k)
		}
	}
}

// sharedSession returns the session the share holds for k, obtaining and
// proposing one (obtain) if it has none; k's init lock is held.
func (p *producerIDs) sharedSession(sh SessionShare, k pidKey, obtain func() (upstreamPID, int16)) (upstreamPID, int16) {
	if pid, epoch, ok := sh.Session(k.shared()); ok {
		return upstreamPID{pid, epoch}, 0
	}
	u, code := obtain()
	if code != 0 {
		return u, code
	}
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	pid, epoch, err := sh.Propose(ctx, k.shared(), u.pid, u.epoch)
	if err != nil {
		// Never a session of this instance's own: another instance may
		// have chosen one, and writing with a second would let the
		// broker take any sequence again. Retriable: the client comes
		// back once the share answers.
		return u, kerr.NotLeaderForPartition.Code
	}
	return upstreamPID{pid, epoch}, 0
}

// forgetShared tells the share about sessions expired here; p.mu is held.
func (p *producerIDs) forgetShared(k pidKey) {
	if p.share != nil {
		p.share.Forget(k.shared())
	}
}
