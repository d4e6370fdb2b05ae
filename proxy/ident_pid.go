package proxy

// Producer ids: every producer gets a virtual PID from kproxy, so one
// producer can write to topics on both clusters and keep writing across a
// route change. kproxy answers every InitProducerId itself; a client never
// holds an upstream PID.
//
// Idempotent producers (no transactional.id): kproxy obtains an upstream PID
// per (virtual PID, virtual epoch, cluster) lazily, on the first batch for
// that cluster, and rewrites the batch header's ProducerID and ProducerEpoch
// (bytes 43-52, under the CRC; CRC-32C over bytes 21.. is recomputed, the
// records are never decompressed). Sequence numbers pass through: a broker
// accepts any first sequence from a PID it has no state for, so a producer
// that moves to the other cluster mid-stream continues its sequence there.
// A topic that moved (a cutover; moveTopic) gets its own upstream sessions
// from then on, per move: after a rollback the producer comes back to a
// cluster whose old session still expects the sequence where the topic left
// it, and a fresh session is the only one that accepts the continuation.
// A batch resent across the move that the old home already has is sent
// there instead, and answered as a duplicate (ident_pid_resend.go).
// With several instances (config control:) every instance writes a given
// key with the same upstream session, chosen through the control topic, so
// a partition's sequence state stays with the broker when the partition
// moves between instances (ident_pid_share.go).
//
// Transactional producers: one virtual session per transactional.id, with
// one upstream session per cluster, and a transaction on one cluster at a
// time (txn_producers.go). Their batches (attribute bit 4) are translated by
// looking the virtual PID up in that table, never by its bits, and their
// base sequence (bytes 53-56) is rebased onto the upstream session.
//
// Telling virtual from upstream PIDs: by where a PID comes from, not by its
// value. A PID in a client's request is virtual (kproxy issued it), a PID in
// an upstream answer is upstream, and the code never asks a PID which side
// it is on. An earlier version tested bit 62 on every batch and passed
// transactional (upstream) PIDs through; kfake allocates random 63-bit PIDs,
// so half of its PIDs have bit 62 set and were taken for virtual ones. Now:
//   - a transactional batch's PID must be in the transactional table
//     (INVALID_PRODUCER_ID_MAPPING otherwise, and the client re-initializes);
//   - an idempotent batch's PID is virtual when it carries bit 62: virtual
//     PIDs are still generated with bit 62 set and 62 random bits below it,
//     so a PID issued before a restart or by another instance is recognised
//     without shared state (its upstream sessions are rebuilt lazily), and
//     real brokers, which allocate upward from 0 in blocks of 1000, never
//     reach 2^62. Even an upstream PID >= 2^62 that reached a client some
//     other way would only be mapped to a fresh upstream session, which is
//     harmless for an idempotent producer.
// A set of issued PIDs was rejected: it would forget every idempotent
// producer on a restart, which today survives one.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/batchcrc"
)

const virtualPIDBit = int64(1) << 62

// isVirtualPID says whether a PID in an idempotent client batch or
// InitProducerId request was issued by kproxy (see the file comment). Never
// ask it about a PID from an upstream answer.
func isVirtualPID(pid int64) bool { return pid >= 0 && pid&virtualPIDBit != 0 }

// batchTransactional is bit 4 of a v2 record batch's attributes.
const batchTransactional = 0x10

type pidKey struct {
	vpid    int64
	vepoch  int16
	cluster string
	// topic and moves are set for a topic that moved (moveTopic): its
	// sessions are its own, one per move.
	topic string
	moves uint64
}

type upstreamPID struct {
	pid   int64
	epoch int16
}

// producerIDs maps virtual producer sessions to upstream ones.
type producerIDs struct {
	mu sync.Mutex // guards the fields below (and txnProducer's state)
	m  map[pidKey]upstreamPID

	// Transactional producers (txn_producers.go), created on first use.
	txns    map[string]*txnProducer // by transactional.id
	txnPIDs map[int64]*txnProducer  // by virtual PID
	// txnChanged is closed (and cleared) when an open transaction ends, begins, or
	// drops a topic; WaitTxnIdle waits on it.
	txnChanged chan struct{}

	// moved counts each topic's cutovers (moveTopic).
	moved map[string]uint64
	// used is when each session of m was last used, for expiry after
	// idle (limits.producer_idle; state_expiry.go); now reads the clock
	// (tests set it), nil meaning time.Now.
	used map[pidKey]time.Time
	idle time.Duration
	now  func() time.Time
	// store persists sessions and moves (nil without state_dir); with
	// share it is this instance's cache of the shared sessions it used.
	store *pidStore
	// share holds the sessions every instance uses (config control:,
	// ident_pid_share.go); nil when this instance serves alone.
	share SessionShare
	// initLocks serializes opening one upstream idempotent session per
	// key (producer, cluster): first batches of other producers, or to the
	// other cluster, do not wait for it (keyed_lock.go).
	initLocks keyedLock[pidKey]
	// oldHomes is, per topic, the producer state its last drain noted on
	// the home it left (or is about to leave), and resends the same by
	// partition with what batches since made of it, for batches resent
	// across the move (ident_pid_resend.go).
	oldHomes map[string]oldHomeSnapshot
	resends  map[resendKey]*oldHome
}

// moveTopic gives topic's idempotent producers fresh upstream sessions.
func (p *producerIDs) moveTopic(topic string) {
	defer p.lockStore()()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.moved == nil {
		p.moved = map[string]uint64{}
	}
	p.moved[topic]++
	if snap, ok := p.oldHomes[topic]; ok && snap.moves != p.moved[topic] {
		// Noted for another move (a drain that did not flip, then a
		// flip without a note): not this move's old home.
		p.setOldHomeLocked(topic, oldHomeSnapshot{})
	}
	// Under mu, so a session of the new move is never written before
	// the move itself. A failure only weakens restarts: log it.
	_ = p.store.appendLocked(pidRecord{Moved: topic, Moves: p.moved[topic]})
}

// SetTopicMoves sets how many times topic moved between clusters to n, the
// count every instance agrees on (control/coordflip.go: the control topic's
// flips decided flipped). With shared producer sessions
// (ident_pid_share.go) the count is part of a session's key: an instance
// that restarted or joined after a flip would otherwise key the topic's
// producers from its own count, differently from the others, and a
// partition moving to it would meet a session with another sequence state.
func (s *Server) SetTopicMoves(topic string, n uint64) {
	p := &s.pids
	defer p.lockStore()()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.moved[topic] == n {
		return
	}
	if p.moved == nil {
		p.moved = map[string]uint64{}
	}
	p.moved[topic] = n
	_ = p.store.appendLocked(pidRecord{Moved: topic, Moves: n})
}

// TopicMoves is how many times topic moved between clusters here.
func (s *Server) TopicMoves(topic string) uint64 {
	s.pids.mu.Lock()
	defer s.pids.mu.Unlock()
	return s.pids.moved[topic]
}

// touchLocked records that session k was used at now; p.mu is held.
func (p *producerIDs) touchLocked(k pidKey, now time.Time) {
	if p.used == nil {
		p.used = map[pidKey]time.Time{}
	}
	p.used[k] = now
}

func newVirtualPID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return virtualPIDBit | int64(binary.BigEndian.Uint64(b[:])&(uint64(virtualPIDBit)-1))
}

// upstream returns the upstream session for a virtual one on cluster,
// initializing it with InitProducerId on any broker of the cluster.
func (rc *reqCtx) upstreamPID(cluster, topic string, vpid int64, vepoch int16) (upstreamPID, int16) {
	s := rc.srv()
	k := pidKey{vpid: vpid, vepoch: vepoch, cluster: cluster}
	s.pids.mu.Lock()
	if n := s.pids.moved[topic]; n > 0 {
		k.topic, k.moves = topic, n
	}
	u, ok := s.pids.m[k]
	if ok {
		s.pids.touchLocked(k, s.pids.clock())
	}
	s.pids.mu.Unlock()
	if ok {
		return u, 0
	}
	// One session per key, also when two first batches race: the one
	// persisted is the one used (ident_pid_store.go).
	defer s.pids.initLocks.lock(k)()
	s.pids.mu.Lock()
	u, ok = s.pids.m[k]
	s.pids.mu.Unlock()
	if ok {
		return u, 0
	}
	var code int16
	if sh := s.pids.sharer(); sh != nil {
		// Several instances: the session every instance uses
		// (ident_pid_share.go).
		u, code = s.pids.sharedSession(sh, k, func() (upstreamPID, int16) { return rc.newUpstreamSession(cluster) })
		if code == kerr.NotLeaderForPartition.Code {
			rc.cc.log.Warn("producer session not settled with the other instances (control topic); the batch is refused, retriable", "cluster", cluster)
		}
	} else {
		u, code = rc.newUpstreamSession(cluster)
	}
	if code != 0 {
		return u, code
	}
	// Durable before any batch uses it: after a restart a resent batch
	// must reach the same session (ident_pid_store.go).
	unlock := s.pids.lockStore()
	now := s.pids.clock()
	if err := s.pids.store.appendLocked(pidRecord{VPID: k.vpid, VEpoch: k.vepoch, Cluster: k.cluster, Topic: k.topic, Moves: k.moves, PID: u.pid, Epoch: u.epoch, Used: now.Unix()}); err != nil {
		rc.cc.log.Warn("producer session not saved; a kproxy restart could duplicate this producer's resent batches", "error", err)
	}
	s.pids.mu.Lock()
	s.pids.m[k] = u
	s.pids.touchLocked(k, now)
	s.pids.mu.Unlock()
	unlock()
	return u, 0
}

// newUpstreamSession opens an upstream idempotent session on cluster.
func (rc *reqCtx) newUpstreamSession(cluster string) (upstreamPID, int16) {
	uc, err := rc.clusterFor(cluster)
	if err != nil {
		return upstreamPID{}, kerr.UnknownServerError.Code
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionTimeoutMillis = -1
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := rc.initProducerID(ctx, uc, req)
	if err != nil {
		rc.cc.log.Warn("upstream InitProducerId failed", "cluster", cluster, "error", err)
		return upstreamPID{}, kerr.NotLeaderForPartition.Code
	}
	if resp.ErrorCode != 0 {
		return upstreamPID{}, resp.ErrorCode
	}
	return upstreamPID{resp.ProducerID, resp.ProducerEpoch}, 0
}

// sharer is the session share (nil: this instance serves alone).
func (p *producerIDs) sharer() SessionShare {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.share
}

// rewriteProducerID translates a produce partition's record batches from a
// virtual PID to cluster's upstream PID, in place. It returns a Kafka error
// code for the partition, or 0. Transactional batches need their partition
// (rewriteProducerIDAt); without it they are refused with INVALID_TXN_STATE.
func (rc *reqCtx) rewriteProducerID(cluster string, records []byte) int16 {
	return rc.rewriteProducerIDAt(cluster, txnPartition{partition: -1}, records)
}

// rewriteProducerIDAt is rewriteProducerID for a known partition, where
// transactional batches also get their sequence rebased onto the upstream
// session (txn_producers.go, rebaseSequenceLocked).
func (rc *reqCtx) rewriteProducerIDAt(cluster string, tp txnPartition, records []byte) int16 {
	return rc.rewriteProducerIDs(cluster, tp, records, false)
}

// rewriteProducerIDs is rewriteProducerIDAt; sparse says records is a
// spliced section's batch headers only, 61 bytes each, each header's
// length the batch's true length (produce_splice.go).
func (rc *reqCtx) rewriteProducerIDs(cluster string, tp txnPartition, records []byte, sparse bool) int16 {
	for len(records) >= 61 {
		n := int(int32(binary.BigEndian.Uint32(records[8:]))) + 12
		step := n
		if sparse {
			step = 61
		}
		if n < 61 || step > len(records) {
			return kerr.CorruptMessage.Code
		}
		b := records[:step]
		records = records[step:]
		if b[16] != 2 {
			continue // legacy message sets carry no producer id
		}
		vpid := int64(binary.BigEndian.Uint64(b[43:]))
		vepoch := int16(binary.BigEndian.Uint16(b[51:]))
		var before [producerFieldsEnd - 21]byte // the CRC-covered header up to the patch's end
		copy(before[:], b[21:producerFieldsEnd])
		switch {
		case binary.BigEndian.Uint16(b[21:])&batchTransactional != 0 && rc.srv().txnDirect():
			continue // the broker's own session (txn_instances.go): unchanged
		case binary.BigEndian.Uint16(b[21:])&batchTransactional != 0:
			seq := int32(binary.BigEndian.Uint32(b[53:]))
			u, useq, code := rc.srv().pids.txnUpstream(vpid, vepoch, cluster, tp, seq)
			if code != 0 {
				return code
			}
			binary.BigEndian.PutUint64(b[43:], uint64(u.pid))
			binary.BigEndian.PutUint16(b[51:], uint16(u.epoch))
			binary.BigEndian.PutUint32(b[53:], uint32(useq))
		case isVirtualPID(vpid):
			u, code := rc.upstreamPID(cluster, tp.topic, vpid, vepoch)
			if code != 0 {
				return code
			}
			binary.BigEndian.PutUint64(b[43:], uint64(u.pid))
			binary.BigEndian.PutUint16(b[51:], uint16(u.epoch))
		default:
			continue // no producer id (-1), or not one of ours: unchanged
		}
		patchCRCLen(b, before[:], n)
	}
	return 0
}

// producerFieldsEnd is where a v2 batch header's producer id, epoch and
// base sequence (bytes 43-56) end.
const producerFieldsEnd = 57

// patchCRCLen sets the CRC of a v2 batch whose producer fields were patched,
// derived from its old CRC and the patch (before: its bytes 21 to
// producerFieldsEnd before the patch), not read again from its records:
// the batch's bytes are read once less, and a batch the client sent
// corrupt stays corrupt, for the broker to refuse (internal/batchcrc).
// n is the batch's length: b may hold only its header (a spliced
// section's, produce_splice.go).
func patchCRCLen(b, before []byte, n int) {
	old := binary.BigEndian.Uint32(b[17:])
	binary.BigEndian.PutUint32(b[17:], batchcrc.Patched(old, before, b[21:producerFieldsEnd], n-21))
}

// initVirtualProducer answers InitProducerId for an idempotent producer:
// a new virtual PID, or the same PID with the next epoch when the client
// asks to bump (KIP-360, v3+).
//
// A bump keeps the old epoch's upstream sessions (and its batches whose
// answer was lost, produce_unanswered.go): the new epoch gets fresh ones
// anyway (sessions are keyed by epoch), and the client still resends,
// under the old epoch and sequences, every batch it may have written
// (franz-go bumps the whole client's epoch when one partition's batch is
// refused with OUT_OF_ORDER_SEQUENCE_NUMBER, and resends its other
// partitions' unanswered batches as they were). A broker de-duplicates
// those, since it learns the new epoch per partition only from a write;
// on a fresh upstream session the broker appended them a second time
// (the fault test's draining phase: 5 records written twice). Old
// sessions leave with idle expiry (state_expiry.go).
func (s *Server) initVirtualProducer(req *kmsg.InitProducerIDRequest) *kmsg.InitProducerIDResponse {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	if req.ProducerID >= 0 && isVirtualPID(req.ProducerID) && req.ProducerEpoch >= 0 && req.ProducerEpoch < 32767 {
		resp.ProducerID, resp.ProducerEpoch = req.ProducerID, req.ProducerEpoch+1
		return resp
	}
	if req.ProducerID >= 0 && !isVirtualPID(req.ProducerID) {
		resp.ErrorCode = kerr.InvalidProducerIDMapping.Code
		return resp
	}
	// A first init, or the epoch is exhausted: a new PID (the old one's
	// sessions stay, as above).
	resp.ProducerID, resp.ProducerEpoch = newVirtualPID(), 0
	return resp
}

// initProducerID sends an InitProducerId kproxy makes for a client: with
// kproxy's own identity through the cluster's client, or, when the
// cluster passes identities through, as the client on its own connection
// (to the transaction's coordinator for a transactional id), so the
// broker authorizes the client (transactional id WRITE, idempotent write).
func (rc *reqCtx) initProducerID(ctx context.Context, uc *upstreamCluster, req *kmsg.InitProducerIDRequest) (*kmsg.InitProducerIDResponse, error) {
	if rc.srv().dialer.sec[uc.name].Passthrough == nil {
		return req.RequestWith(ctx, uc.cl)
	}
	// The newest version both kmsg and every broker of the cluster speak.
	if vr, ok := uc.apiVersions()[req.Key()]; ok {
		req.Version = min(vr.max, req.MaxVersion())
	}
	var r kmsg.Response
	if req.TransactionalID != nil {
		r = rc.forwardCoordinator(uc.name, 1, *req.TransactionalID, req)
	} else {
		r = rc.forwardAny(uc.name, req)
	}
	resp, _ := r.(*kmsg.InitProducerIDResponse)
	if resp == nil {
		return nil, fmt.Errorf("cluster %s: InitProducerId as the client failed", uc.name)
	}
	return resp, nil
}
