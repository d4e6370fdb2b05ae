package proxy

// Batches resent across a move of their topic (decision 008).
//
// A moved topic gives its idempotent producers fresh upstream sessions on
// the new home (ident_pid.go), and a fresh session takes any first
// sequence. So a batch the old home appended but whose answer the client
// never got (kproxy killed while the produce was in flight, or an upstream
// connection lost after the append) and that the client resends after the
// flip would be appended again on the new home: the copy already brought
// the old home's append there. A broker would answer such a resend as a
// duplicate; kproxy must too.
//
// The rule, per (moved topic, move, partition) and per producer that had an
// upstream session on the old home for it (the session of the previous
// move, persisted in producer-sessions.jsonl, so it survives a restart):
//   - the cutover's drain notes the old home's producer state (the last
//     sequence each upstream producer id appended to each partition,
//     DescribeProducers) at the end offsets it freezes: it reads the ends,
//     the producers, and the ends again, and takes the state only if no
//     record landed in between (control/cutover.go, drainInFlight). That
//     is the state of exactly the records the copy brings to the new home.
//     It is persisted with the sessions (producer-sessions.jsonl) before
//     the flip, so a restart after the flip still has it. A write that
//     lands on the old home after the freeze (a killed kproxy's request
//     still on the wire: a zombie) is not in it, and its resend goes to
//     the new home, where the virtual log continues.
//   - a batch of that producer whose sequences are all at or below the old
//     last sequence is already on the old home: it goes to the old home,
//     on the old session, whose broker answers it as the duplicate it is,
//     with the offset it was appended at (the last five batches of a
//     producer are kept for that, and a client has at most five in
//     flight). The answer's offset is translated through the old home's
//     map (offsetsPlan), like any produce answer from there. It cannot be
//     appended twice there: its sequence is behind the session's.
//   - the first batch beyond it, while the producer has no session on the
//     new home yet, must start at the old last sequence + 1, as it would
//     on a session that continued: anything else is
//     OUT_OF_ORDER_SEQUENCE_NUMBER (an earlier batch is still to come, and
//     the client resends in order). From then on the new home's session
//     carries the sequence and its broker checks it.
//   - a batch that straddles the old last sequence cannot come from a
//     client (batches are resent whole): OUT_OF_ORDER_SEQUENCE_NUMBER.
// Transactional producers need none of this: a cutover waits for their
// open transactions to end on the old home (WaitTxnIdle), and a transaction
// open when kproxy dies is lost with kproxy's transaction table; the client
// re-initializes, which aborts it (txn_producers.go).

import (
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// resendKey names one partition of one move of a topic.
type resendKey struct {
	topic     string
	moves     uint64
	partition int32
}

// oldHome is the old home's producer state of one partition of a moved
// topic at the flip point (the drain's DescribeProducers), by upstream
// producer id.
type oldHome struct {
	last map[int64]*oldProducer
}

// ProducerState is one upstream producer's state on a partition: its
// epoch and the last sequence it appended.
type ProducerState struct {
	ID           int64
	Epoch        int16
	LastSequence int32
}

// oldHomeSnapshot is what a drain noted for a topic's next move.
type oldHomeSnapshot struct {
	moves uint64 // the move it is for
	from  string // the old home
	parts map[int32][]ProducerState
}

// oldProducer is one upstream producer's state on the old home.
type oldProducer struct {
	epoch   int16
	lastSeq int32
	// continued: a batch beyond lastSeq went to the new home (in this
	// process, or its session there exists); the new home's session
	// carries the sequence from there.
	continued bool
}

// resendVerdict is where a moved producer's batch goes.
type resendVerdict int

const (
	resendNew      resendVerdict = iota // not on the old home: the new home
	resendWritten                       // already on the old home: answered from there
	resendOutOfSeq                      // OUT_OF_ORDER_SEQUENCE_NUMBER
)

// judgeResend applies the rule (file comment) to a batch of sequences
// [first, first+n) from upstream session u's producer, given its state on
// the old home (nil: none). It marks op continued when the batch is the
// first beyond it. p.mu is held.
func judgeResend(op *oldProducer, u upstreamPID, first, n int32) resendVerdict {
	if op == nil || op.epoch != u.epoch || n <= 0 {
		return resendNew
	}
	last := int64(first) + int64(n) - 1
	switch {
	case last <= int64(op.lastSeq):
		return resendWritten
	case int64(first) <= int64(op.lastSeq):
		return resendOutOfSeq
	case op.continued:
		return resendNew
	case int64(first) != int64(op.lastSeq)+1:
		return resendOutOfSeq
	}
	op.continued = true
	return resendNew
}

// previousSessionLocked is the upstream session a producer wrote topic with
// on its old home before the topic's last move, if any: the cluster, the
// partition's key, and the session. p.mu is held.
func (p *producerIDs) previousSessionLocked(vpid int64, vepoch int16, cluster, topic string, partition int32) (string, resendKey, upstreamPID, bool) {
	moves := p.moved[topic]
	if moves == 0 {
		return "", resendKey{}, upstreamPID{}, false
	}
	old := Source
	if cluster == Source {
		old = Target
	}
	k := pidKey{vpid: vpid, vepoch: vepoch, cluster: old}
	if moves > 1 {
		k.topic, k.moves = topic, moves-1
	}
	u, ok := p.m[k]
	return old, resendKey{topic: topic, moves: moves, partition: partition}, u, ok
}

// routeResend decides where an idempotent batch for topic's partition,
// about to go to cluster, goes (the rule in the file comment). It returns
// the cluster to send it to and, when that is the old home, rewritten true:
// the batch already carries the old session's PID and epoch.
// sparse says records is a spliced section's batch headers only
// (produce_splice.go).
func (rc *reqCtx) routeResend(cluster, topic string, partition int32, records []byte, sparse bool) (to string, rewritten bool, code int16) {
	to = cluster
	if len(records) < 61 || records[16] != 2 {
		return
	}
	whole := int(int32(binary.BigEndian.Uint32(records[8:]))) + 12
	if sparse && len(records) != 61 || !sparse && whole != len(records) {
		return // not one batch: the broker refuses it
	}
	vpid := int64(binary.BigEndian.Uint64(records[43:]))
	if binary.BigEndian.Uint16(records[21:])&batchTransactional != 0 || !isVirtualPID(vpid) {
		return
	}
	vepoch := int16(binary.BigEndian.Uint16(records[51:]))
	first := int32(binary.BigEndian.Uint32(records[53:]))
	n := int32(binary.BigEndian.Uint32(records[57:]))
	s := rc.srv()
	p := &s.pids
	p.mu.Lock()
	old, rk, u, ok := p.previousSessionLocked(vpid, vepoch, cluster, topic, partition)
	st := p.resends[rk]
	if !ok || st == nil || p.oldHomes[topic].from != old {
		p.mu.Unlock()
		return // no session on the old home, or no state noted for the move
	}
	op := st.last[u.pid]
	if op != nil && !op.continued {
		// A session on the new home exists already (another
		// partition's batch, or before a restart): the producer went on
		// there, and its broker checks the sequence from now on.
		_, op.continued = p.m[pidKey{vpid: vpid, vepoch: vepoch, cluster: cluster, topic: topic, moves: rk.moves}]
	}
	v := judgeResend(op, u, first, n)
	p.mu.Unlock()
	switch v {
	case resendOutOfSeq:
		s.countResend("out_of_order")
		return cluster, false, kerr.OutOfOrderSequenceNumber.Code
	case resendWritten:
		s.countResend("old_home")
		rc.cc.log.Info("a batch resent after its topic moved is already on the old home; the old home answers it as a duplicate",
			"topic", topic, "partition", partition, "old_home", old, "first_sequence", first, "records", n)
		putProducerLen(records, u, whole)
		return old, true, 0
	}
	return
}

// putProducerLen writes an upstream session into a v2 batch header and
// patches its CRC (patchCRCLen).
// n is the batch's length: b may hold only its header.
func putProducerLen(b []byte, u upstreamPID, n int) {
	var before [producerFieldsEnd - 21]byte
	copy(before[:], b[21:producerFieldsEnd])
	binary.BigEndian.PutUint64(b[43:], uint64(u.pid))
	binary.BigEndian.PutUint16(b[51:], uint16(u.epoch))
	patchCRCLen(b, before[:], n)
}

// KeepOldHomeProducers records the producer state of topic's partitions on
// its home from at the end offsets a cutover's drain froze, for the move
// that drain leads to (the next one); nil parts clears it (the state could
// not be read: resends across that move are not checked). It is persisted
// before it returns: a flip after a failed save would lose it at a restart.
func (s *Server) KeepOldHomeProducers(topic, from string, parts map[int32][]ProducerState) error {
	p := &s.pids
	defer p.lockStore()()
	p.mu.Lock()
	snap := oldHomeSnapshot{moves: p.moved[topic] + 1, from: from, parts: parts}
	p.mu.Unlock()
	if parts != nil {
		if err := p.store.appendLocked(snap.record(topic)); err != nil {
			return fmt.Errorf("producer sessions: saving the old home's producer state of %s: %w", topic, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setOldHomeLocked(topic, snap)
	return nil
}

// setOldHomeLocked installs a snapshot for its move, replacing any other
// of the topic. p.mu is held.
func (p *producerIDs) setOldHomeLocked(topic string, snap oldHomeSnapshot) {
	for k := range p.resends {
		if k.topic == topic {
			delete(p.resends, k)
		}
	}
	if p.oldHomes == nil {
		p.oldHomes = map[string]oldHomeSnapshot{}
	}
	if snap.parts == nil {
		delete(p.oldHomes, topic)
		return
	}
	p.oldHomes[topic] = snap
	if p.resends == nil {
		p.resends = map[resendKey]*oldHome{}
	}
	for part, ps := range snap.parts {
		st := &oldHome{last: make(map[int64]*oldProducer, len(ps))}
		for _, s := range ps {
			st.last[s.ID] = &oldProducer{epoch: s.Epoch, lastSeq: s.LastSequence}
		}
		p.resends[resendKey{topic: topic, moves: snap.moves, partition: part}] = st
	}
}

// record is the snapshot as a line of the sessions file.
func (snap oldHomeSnapshot) record(topic string) pidRecord {
	r := pidRecord{OldHome: topic, Cluster: snap.from, Moves: snap.moves, Producers: [][4]int64{}}
	for part, ps := range snap.parts {
		for _, s := range ps {
			r.Producers = append(r.Producers, [4]int64{int64(part), s.ID, int64(s.Epoch), int64(s.LastSequence)})
		}
	}
	return r
}

// oldHomeOf reads a snapshot line back.
func oldHomeOf(r pidRecord) (oldHomeSnapshot, error) {
	snap := oldHomeSnapshot{moves: r.Moves, from: r.Cluster, parts: map[int32][]ProducerState{}}
	if r.Cluster != Source && r.Cluster != Target || r.Moves == 0 {
		return snap, fmt.Errorf("old home state of %q without its cluster or move", r.OldHome)
	}
	for _, t := range r.Producers {
		part := int32(t[0])
		snap.parts[part] = append(snap.parts[part], ProducerState{ID: t[1], Epoch: int16(t[2]), LastSequence: int32(t[3])})
	}
	return snap, nil
}

// countResend counts one outcome of the rule (nil metrics in unit tests).
func (s *Server) countResend(outcome string) {
	if s.metrics != nil {
		s.metrics.resends.WithLabelValues(outcome).Inc()
	}
}
