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
//   - kproxy learns the old home's producer state of the partition once,
//     with DescribeProducers on the old home (the last sequence each
//     upstream producer id appended there). Nothing of the topic is written
//     on the old home by a client any more, so that state is final.
//   - a batch of that producer whose sequences are all at or below the old
//     last sequence is already on the old home: it goes to the old home,
//     on the old session, whose broker answers it as the duplicate it is,
//     with the offset it was appended at (the last five batches of a
//     producer are kept for that, and a client has at most five in
//     flight). The answer's offset is translated through the old home's
//     map (offsetsPlan), like any produce answer from there. It cannot be
//     appended twice there: its sequence is behind the session's.
//   - the first batch beyond it must start at the old last sequence + 1,
//     as it would on a session that continued: anything else is
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
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// resendCheckGrace bounds how long the old home's producer state is waited
// for (produce answered with a retriable error meanwhile) before the check
// is skipped for the partition: a dead old home must not stop the new home
// from taking writes for longer than that.
const resendCheckGrace = 30 * time.Second

// resendKey names one partition of one move of a topic.
type resendKey struct {
	topic     string
	moves     uint64
	partition int32
}

// oldHome is the old home's producer state of one partition of a moved
// topic, read once (DescribeProducers).
type oldHome struct {
	loaded      bool
	failedSince time.Time // first failed read, while not loaded
	last        map[int64]*oldProducer
}

// oldProducer is one upstream producer's state on the old home.
type oldProducer struct {
	epoch   int16
	lastSeq int32
	// continued: a batch beyond lastSeq went to the new home; the new
	// home's session carries the sequence from there.
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
func (rc *reqCtx) routeResend(cluster, topic string, partition int32, records []byte) (to string, rewritten bool, code int16) {
	to = cluster
	if len(records) < 61 || records[16] != 2 {
		return
	}
	if n := int(int32(binary.BigEndian.Uint32(records[8:]))) + 12; n != len(records) {
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
	p.mu.Unlock()
	if !ok {
		return
	}
	if st == nil || !st.loaded {
		if code = rc.loadOldHome(old, rk); code != 0 {
			return
		}
	}
	p.mu.Lock()
	st = p.resends[rk]
	var op *oldProducer
	if st != nil {
		op = st.last[u.pid]
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
		putProducer(records, u)
		return old, true, 0
	}
	return
}

// putProducer writes an upstream session into a v2 batch header and
// recomputes the CRC (bytes 21.. of the batch).
func putProducer(b []byte, u upstreamPID) {
	binary.BigEndian.PutUint64(b[43:], uint64(u.pid))
	binary.BigEndian.PutUint16(b[51:], uint16(u.epoch))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
}

// loadOldHome reads the old home's producer state of a moved partition
// (DescribeProducers, as kproxy) into p.resends, once per key. A failed
// read answers retriable errors for up to resendCheckGrace, then skips the
// check for the partition with a warning (a cluster down for good must not
// keep the new home from taking writes); a cluster that does not know
// DescribeProducers (before Kafka 2.8) skips it at once.
func (rc *reqCtx) loadOldHome(old string, rk resendKey) int16 {
	s := rc.srv()
	p := &s.pids
	defer p.resendLocks.lock(rk)()
	p.mu.Lock()
	st := p.resends[rk]
	if st == nil {
		st = &oldHome{}
		if p.resends == nil {
			p.resends = map[resendKey]*oldHome{}
		}
		p.resends[rk] = st
	}
	loaded := st.loaded
	p.mu.Unlock()
	if loaded {
		return 0
	}
	last, err := rc.describeOldHome(old, rk)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		st.loaded, st.last = true, last
		return 0
	}
	now := time.Now()
	if st.failedSince.IsZero() {
		st.failedSince = now
	}
	if errors.Is(err, errNoDescribeProducers) || now.Sub(st.failedSince) >= resendCheckGrace {
		st.loaded = true
		s.countResend("unchecked")
		rc.cc.log.Warn("the old home's producer state could not be read; batches resent across this move are not checked for duplicates",
			"topic", rk.topic, "partition", rk.partition, "old_home", old, "error", err)
		return 0
	}
	rc.cc.log.Debug("reading the old home's producer state failed; answering a retriable error", "topic", rk.topic, "partition", rk.partition, "old_home", old, "error", err)
	return kerr.NotLeaderForPartition.Code
}

// errNoDescribeProducers: the old home predates DescribeProducers (Kafka
// 2.8), so its producer state cannot be read.
var errNoDescribeProducers = errors.New("the cluster does not support DescribeProducers (Kafka 2.8+)")

// countResend counts one outcome of the rule (nil metrics in unit tests).
func (s *Server) countResend(outcome string) {
	if s.metrics != nil {
		s.metrics.resends.WithLabelValues(outcome).Inc()
	}
}

// describeOldHome asks the old home's partition leader for its producers'
// state (the last sequence per producer id).
func (rc *reqCtx) describeOldHome(old string, rk resendKey) (map[int64]*oldProducer, error) {
	uc, err := rc.clusterFor(old)
	if err != nil {
		return nil, err
	}
	if vs := uc.apiVersions(); vs != nil {
		if _, ok := vs[kmsg.DescribeProducers.Int16()]; !ok {
			return nil, fmt.Errorf("the %s: %w", old, errNoDescribeProducers)
		}
	}
	req := kmsg.NewPtrDescribeProducersRequest()
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = rk.topic, []int32{rk.partition}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, uc.cl)
	if err != nil {
		return nil, err
	}
	for _, t := range resp.Topics {
		for _, pp := range t.Partitions {
			if t.Topic != rk.topic || pp.Partition != rk.partition {
				continue
			}
			if pp.ErrorCode == kerr.UnknownTopicOrPartition.Code {
				return map[int64]*oldProducer{}, nil // nothing there to resend
			}
			if err := kerr.ErrorForCode(pp.ErrorCode); err != nil {
				return nil, err
			}
			last := make(map[int64]*oldProducer, len(pp.ActiveProducers))
			for _, ap := range pp.ActiveProducers {
				last[ap.ProducerID] = &oldProducer{epoch: int16(ap.ProducerEpoch), lastSeq: ap.LastSequence}
			}
			return last, nil
		}
	}
	return nil, fmt.Errorf("the %s left %s/%d out of its DescribeProducers answer", old, rk.topic, rk.partition)
}
