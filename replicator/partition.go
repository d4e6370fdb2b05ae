package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partition is one copy loop's state. The loop goroutine (runPartition) owns
// the copy; mu guards what Status, Map and WaitCopied read.
type partition struct {
	topic     string
	partition int32
	log       hclog.Logger
	// noSplice: the target refused a spliced batch of this partition as
	// corrupt; its batches are read into memory from then on, so the
	// copy can check them and say which (corruptSourceBatch).
	noSplice atomic.Bool

	// ctx ends the partition's copy alone (Reassign) or with its topic;
	// done is closed when its goroutine has returned (its map saved).
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	records, bytes prometheus.Counter
	writes         *Writes // offsets produced into the target partition (Replicator.Writes)
	lag, lagMs     prometheus.Gauge
	errs           prometheus.Counter
	lagBytes       prometheus.Gauge
	riskGauge      prometheus.Gauge
	catchUp        prometheus.Gauge // seconds until caught up (catchUpMillis)

	mu          sync.Mutex // guards the fields below
	m           *OffsetMap
	hwm         int64
	err         error
	fatal       error         // set once; the loop has stopped
	saveErr     error         // the last map save failed (SealTopic)
	wake        chan struct{} // closed and replaced on progress or fatal error
	behindSince time.Time     // zero while caught up

	// Lag and retention risk (lag.go).
	seenBytes, seenOffsets int64 // source batches seen: bytes per offset
	nextTs                 int64 // unix ms of the next record to copy (estimate), 0 unknown
	rates                  rateState
	risk                   time.Duration
	riskKnown, riskWarned  bool

	// waiters counts Urge holders (a cutover's approach, hold and
	// drain). While there are any, the
	// partition is urgent: the copy polls the source with a short wait
	// on the fetcher's side connection (a caught-up partition's long poll
	// can outlast the last records it must copy, measured: holds of ~110
	// ms at a 100 ms long poll, ~10-20 ms with short polls, and the
	// shared session request's answer carries every busy partition's
	// records), and produces on a connection of its own (Urge).
	waiters atomic.Int32
	// tgtLeader is the target leader of the current copy session plus
	// one (0: none yet), for Urge to dial the urgent lane's connection
	// ahead of the partition's first urgent batch.
	tgtLeader atomic.Int32
	// fetcher is the source fetcher of the current copy session, told
	// when a drain starts waiting so its next request polls short at
	// once rather than after a wait for busy partitions.
	fetcher atomic.Pointer[leaderFetcher]
}

// urgentFetchWait is the source poll while a drain waits on the partition.
const urgentFetchWait = 5 * time.Millisecond

// urge and unurge count a waiter (see waiters) and tell the partition's
// fetcher, whose requests change with it: an urgent want leaves the
// session request for the side loop, and comes back when it is urgent no
// more.
func (p *partition) urge() {
	p.waiters.Add(1)
	p.urgencyChanged()
}

func (p *partition) unurge() {
	p.waiters.Add(-1)
	p.urgencyChanged()
}

func (p *partition) urgencyChanged() {
	if f := p.fetcher.Load(); f != nil {
		f.mu.Lock()
		f.dirty = true
		f.mu.Unlock()
		f.signal()
	}
}

// FatalError stops a partition for good: copying on would lose or
// duplicate data. The message says what the operator must do.
type FatalError struct {
	Topic     string
	Partition int32
	Reason    string
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("replication of %s/%d stopped: %s", e.Topic, e.Partition, e.Reason)
}

func (p *partition) fatalf(format string, args ...any) error {
	return &FatalError{Topic: p.topic, Partition: p.partition, Reason: fmt.Sprintf(format, args...)}
}

// errCrashed is returned when a test hook simulates a kill.
var errCrashed = errors.New("stopped by a test hook simulating a crash")

func (p *partition) status() PartitionStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PartitionStatus{Topic: p.topic, Partition: p.partition, SourceHWM: p.hwm}
	if p.m != nil {
		s.CopiedThrough, s.TargetEnd = p.m.SourceEnd(), p.m.TargetEnd()
		s.LagRecords = max(p.hwm-s.CopiedThrough, 0)
	}
	if !p.behindSince.IsZero() {
		s.LagMillis = time.Since(p.behindSince).Milliseconds()
	}
	s.LagBytes = p.lagBytesLocked(s.LagRecords)
	if s.LagRecords > 0 && p.nextTs > 0 {
		s.RecordLagMillis = max(time.Now().UnixMilli()-p.nextTs, 0)
	}
	// The risk is recomputed every StatsInterval; a copy that caught up
	// since has nothing left for retention to take (the plan's
	// retention_headroom gate read a stale risk for up to 10 s after a
	// catch-up).
	s.RetentionRiskMillis = -1
	if p.riskKnown && s.LagRecords > 0 {
		s.RetentionRiskMillis = p.risk.Milliseconds()
	}
	s.RetentionAtRisk = p.riskWarned && s.LagRecords > 0
	s.ProduceRecordsPerSec, s.CopyRecordsPerSec = p.rates.produceRate, p.rates.copyRate
	s.CatchUpMillis = catchUpMillis(s.LagRecords, p.rates)
	if p.fatal != nil {
		s.Err = p.fatal.Error()
		s.Fenced = errors.As(p.fatal, new(*FencedError))
		s.Fatal = !s.Fenced
	} else if p.err != nil {
		s.Err = p.err.Error()
	}
	return s
}

// catchUpMillis estimates when a copy lagging lagRecords catches up at the
// measured rates: 0 caught up, -1 not catching up (or no rates yet).
func catchUpMillis(lagRecords int64, rs rateState) int64 {
	switch {
	case lagRecords <= 0:
		return 0
	case rs.copyRate > rs.produceRate:
		return int64(float64(lagRecords) / (rs.copyRate - rs.produceRate) * 1000)
	default:
		return -1
	}
}

// progress publishes the map's new end and wakes WaitCopied callers.
func (p *partition) progress(m *OffsetMap, hwm int64) {
	p.mu.Lock()
	p.m = m
	if hwm >= 0 {
		p.hwm = hwm
	}
	end := m.SourceEnd()
	lag := max(p.hwm-end, 0)
	if lag == 0 {
		p.behindSince = time.Time{}
	} else if p.behindSince.IsZero() {
		p.behindSince = time.Now()
	}
	p.err = nil
	close(p.wake)
	p.wake = make(chan struct{})
	lagMs := int64(0)
	if !p.behindSince.IsZero() {
		lagMs = time.Since(p.behindSince).Milliseconds()
	}
	p.mu.Unlock()
	p.lag.Set(float64(lag))
	p.lagMs.Set(float64(lagMs))
}

// noteSaved records the outcome of the map's last save.
func (p *partition) noteSaved(err error) {
	p.mu.Lock()
	p.saveErr = err
	p.mu.Unlock()
}

// observeHWM records a source high watermark seen while the partition had
// nothing to copy (its fetch stays parked).
func (p *partition) observeHWM(hwm int64) {
	p.mu.Lock()
	if hwm <= p.hwm {
		p.mu.Unlock()
		return
	}
	p.hwm = hwm
	lag := int64(0)
	if p.m != nil {
		lag = max(hwm-p.m.SourceEnd(), 0)
	}
	if lag > 0 && p.behindSince.IsZero() {
		p.behindSince = time.Now()
	}
	p.mu.Unlock()
	p.lag.Set(float64(lag))
}

func (p *partition) setErr(err error) {
	p.errs.Inc()
	p.mu.Lock()
	defer p.mu.Unlock()
	var fe *FatalError
	var fd *FencedError
	if errors.As(err, &fe) || errors.Is(err, errCrashed) || errors.As(err, &fd) {
		p.fatal = err
		close(p.wake)
		p.wake = make(chan struct{})
		return
	}
	p.err = err
}

// runPartition is the partition's goroutine: it copies until ctx ends or a
// fatal error. Every transient error (leader moved, broker down, ambiguous
// produce) goes back through setup, whose reconciliation with the target
// log makes the retry exactly-once.
func (r *Replicator) runPartition(ctx context.Context, p *partition) {
	for {
		err := r.copyPartition(ctx, p)
		if ctx.Err() != nil && !errors.Is(err, errCrashed) {
			return
		}
		p.setErr(err)
		var fe *FatalError
		switch {
		case errors.As(err, &fe):
			p.log.Error("replication stopped; fix the cause and restart kproxy", "error", err)
			return
		case errors.Is(err, errCrashed):
			return
		case errors.As(err, new(*FencedError)):
			// Retrying would fence the new owner in turn: this instance
			// copies the partition again only when the membership gives
			// it back (Reassign).
			r.metrics.fenced.Inc()
			p.log.Warn("another instance took over this partition's copy and the target refused this instance's write; this instance stops copying it", "error", err)
			return
		}
		p.log.Warn("replication interrupted, retrying", "error", err)
		r.refreshHWM(ctx, p)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.opts.RetryBackoff):
		}
	}
}

// refreshHWM learns the source's end for an interrupted partition. The end
// is otherwise learnt only from the copy's own fetches, which stop while
// the target is down: the lag in /status, the lag metric and the plan's
// caught_up gate then stayed at their value from before the outage. One
// ListOffsets per topic per RetryBackoff serves all its partitions.
func (r *Replicator) refreshHWM(ctx context.Context, p *partition) {
	p.mu.Lock()
	m := p.m
	p.mu.Unlock()
	if m == nil {
		return // no map yet: nothing copied, no lag to report
	}
	r.mu.Lock()
	e, ok := r.ends[p.topic]
	r.mu.Unlock()
	if !ok || time.Since(e.at) >= r.opts.RetryBackoff {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ends, err := r.srcAdm.ListEndOffsets(lctx, p.topic)
		if err != nil {
			return
		}
		e = sourceEnds{at: time.Now(), ends: map[int32]int64{}}
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				e.ends[o.Partition] = o.Offset
			}
		})
		r.mu.Lock()
		if r.ends == nil {
			r.ends = map[string]sourceEnds{}
		}
		r.ends[p.topic] = e
		r.mu.Unlock()
	}
	if end, ok := e.ends[p.partition]; ok {
		p.observeHWM(end + m.Meta().SourceShift)
	}
}

// sourceEnds are a topic's source end offsets and when they were listed.
type sourceEnds struct {
	at   time.Time
	ends map[int32]int64
}

// leaders is what a copy session needs to know about both clusters.
type leaders struct {
	srcLeader, tgtLeader int32
	srcID, tgtID         [16]byte
}

func (r *Replicator) lookupLeaders(ctx context.Context, p *partition) (leaders, error) {
	var l leaders
	sd, err := r.srcAdm.ListTopics(ctx, p.topic)
	if err != nil {
		return l, fmt.Errorf("source metadata: %w", err)
	}
	td, err := r.tgtAdm.ListTopics(ctx, p.topic)
	if err != nil {
		return l, fmt.Errorf("target metadata: %w", err)
	}
	s, t := sd[p.topic], td[p.topic]
	if s.Err != nil {
		return l, fmt.Errorf("source metadata: %w", s.Err)
	}
	if t.Err != nil {
		return l, fmt.Errorf("target metadata: %w", t.Err)
	}
	sp, ok1 := s.Partitions[p.partition]
	tp, ok2 := t.Partitions[p.partition]
	if !ok1 || !ok2 || sp.Leader < 0 || tp.Leader < 0 {
		return l, fmt.Errorf("no leader for the partition yet (source %v, target %v)", ok1 && sp.Leader >= 0, ok2 && tp.Leader >= 0)
	}
	return leaders{srcLeader: sp.Leader, tgtLeader: tp.Leader, srcID: s.ID, tgtID: t.ID}, nil
}

type offsets struct{ start, end int64 }

func listOffsets(ctx context.Context, r *Replicator, target bool, topic string, partition int32) (offsets, error) {
	adm, side := r.srcAdm, "source"
	if target {
		adm, side = r.tgtAdm, "target"
	}
	var o offsets
	st, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = st.Error()
	}
	if err != nil {
		return o, fmt.Errorf("%s start offsets: %w", side, err)
	}
	en, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = en.Error()
	}
	if err != nil {
		return o, fmt.Errorf("%s end offsets: %w", side, err)
	}
	s, ok1 := st.Lookup(topic, partition)
	e, ok2 := en.Lookup(topic, partition)
	if !ok1 || !ok2 {
		return o, fmt.Errorf("%s offsets: partition missing from the answer", side)
	}
	return offsets{s.Offset, e.Offset}, nil
}

// mapSaveInterval bounds how long a busy copy goes without persisting its
// map. Saving (write, fsync, rename, fsync) after every fetch round was most
// of the copy's own CPU; the target log is the checkpoint, so a map saved
// late only means a longer recoverTail after a crash, never a wrong map.
const mapSaveInterval = time.Second

// copyPartition sets up a copy session and runs it until an error.
func (r *Replicator) copyPartition(ctx context.Context, p *partition) (retErr error) {
	l, err := r.lookupLeaders(ctx, p)
	if err != nil {
		return err
	}
	p.tgtLeader.Store(l.tgtLeader + 1)
	var txn *copyTxn
	if r.fencedMode() {
		// Before the target log is read: from here on no earlier
		// session's write can land (txncopy.go).
		if txn, err = r.beginFencedSession(ctx, p); err != nil {
			return err
		}
	}
	m, sess, err := r.reconciledSession(ctx, p, l, txn)
	if err != nil {
		return err
	}
	if txn != nil {
		sess = txn.sess
	}
	urgent := p.waiters.Load() > 0
	conn, err := r.produceConnFor(ctx, l.tgtLeader, urgent)
	if err != nil {
		return err
	}
	f := r.fetcherFor(l.srcLeader)
	p.fetcher.Store(f)
	defer f.leave(p)
	// shift turns this session's source log offsets into the map's
	// (virtual) source side; see MapMeta.SourceShift.
	shift := m.Meta().SourceShift
	pl := newPipeline(r, p, m, conn, l.tgtID, shift, txn)
	var batchBuf [][]byte         // the batches of the current answer, reused
	var spliceBuf []*splicedBatch // their splices (nil: in memory), reused
	// The current answer's frame and record set while its batches are
	// sent: a session that ends in the middle closes the pipes of the
	// spliced batches it did not send.
	var curFrame *fetchFrame
	var curSet []byte
	defer func() {
		if curFrame != nil {
			curFrame.dropSplicesOf(curSet)
		}
	}()
	p.log.Debug("copy session started", "offset", m.SourceEnd()-shift, "target_offset", m.TargetEnd(), "producer_id", sess.pid)
	// The map is saved when the copy catches up (unless it is urgent; at
	// most every catchUpSaveGap, the last catch-up deferred until then),
	// at most mapSaveInterval after a change while it is behind (or
	// urgent), and when the session ends (Stop, StopTopic, an error),
	// except in a simulated crash (mapsaver.go).
	saver := newMapSaver(r.opts.StateDir, p, m, r.metrics.mapSaves)
	defer func() {
		err := saver.end(!errors.Is(retErr, errCrashed))
		saver.idle()
		if err != nil && retErr == nil {
			retErr = err
		}
	}()
	for {
		from := m.SourceEnd() - shift
		saver.idle()
		fp, frame, err := f.fetch(ctx, p, l.srcID, from, shift)
		saver.busy()
		if err != nil {
			return err
		}
		curFrame, curSet = frame, fp.RecordBatches
		if err := kerr.ErrorForCode(fp.ErrorCode); err != nil {
			return fmt.Errorf("source fetch at offset %d: %w", from, err)
		}
		batches, spliced := frame.batchesOf(batchBuf[:0], spliceBuf[:0], fp.RecordBatches)
		batchBuf, spliceBuf = batches, spliced
		if len(batches) == 0 && len(fp.RecordBatches) > 0 {
			if len(fp.RecordBatches) > offMagic && fp.RecordBatches[offMagic] < 2 {
				return p.fatalf("at offset %d: %v", from, ErrLegacyBatch)
			}
			return fmt.Errorf("source fetch at offset %d returned %d bytes without a whole batch", from, len(fp.RecordBatches))
		}
		p.noteAnswer(batches, from)
		if u := p.waiters.Load() > 0; u != urgent {
			// A cutover began or stopped waiting on the partition: its
			// batches change lanes (Urge). Nothing is in flight here
			// (each answer is flushed before the next fetch), so the
			// sequence cannot reach the broker out of order.
			if pl.conn, err = r.produceConnFor(ctx, l.tgtLeader, u); err != nil {
				return err
			}
			urgent = u
		}
		filter := newAbortFilter(fp.AbortedTransactions)
		changed, lastTs := false, int64(0)
		// sent is the map's SourceEnd once every batch sent so far is
		// applied: the next batch starts there.
		sent := m.SourceEnd()
		for i, b := range batches {
			sb := spliced[i]
			if ctx.Err() != nil {
				break // Stop: persist what was copied, leave the rest
			}
			h, err := parseHeader(b)
			if err != nil {
				pl.drain()
				return p.fatalf("at offset %d: %v", from, err)
			}
			keep := filter.keep(h, b)
			if h.lastOffset()+shift < sent {
				if sb != nil {
					frame.dropPipes(sb)
				}
				continue // already copied (a fetch may start inside a batch)
			}
			next := h.lastOffset() + 1 + shift
			if keep {
				if txn != nil && !txn.open {
					// The first batch of this answer's transaction.
					if err := pl.flush(); err != nil {
						return err
					}
					if err := txn.addPartition(ctx, r, p); err != nil {
						return err
					}
					sess = txn.sess // a commit may have bumped the epoch
					txn.tgtNext = m.TargetEnd()
				}
				if sb != nil && (rebuildReason(h, sent-shift) != "" || pl.conn.sp == nil) {
					// The copy must read this one after all.
					if b, err = frame.readSpliced(b, sb); err != nil {
						pl.drain()
						return err
					}
					sb = nil
				}
				var pb preparedBatch
				if sb != nil {
					pb, err = prepareSplicedBatch(b, sb.total, sess)
					pb.body = frame.pipesOf(sb)
				} else {
					pb, err = prepareBatch(b, sent-shift, sess)
				}
				if err != nil {
					pl.drain()
					return p.fatalf("%v", err)
				}
				if pb.numRecords > 0 {
					if hook := r.opts.Hooks.BeforeSend; hook != nil {
						hook(p.topic, p.partition)
					}
					if err := pl.send(pb, next); err != nil {
						pl.drain()
						return err
					}
					// Sequences count records, not batches, and wrap
					// from MaxInt32 to 0 (ProducerAppendInfo.checkSequence).
					sess.seq = int32((int64(sess.seq) + int64(pb.numRecords)) % (1 << 31))
					sent, changed, lastTs = next, true, h.maxTimestamp
					continue
				}
			}
			if sb != nil {
				frame.dropPipes(sb) // not copied (aborted, or no records)
			}
			pl.gap(next)
			sent, changed, lastTs = next, true, h.maxTimestamp
		}
		// Every batch of this answer is applied before the next fetch:
		// the fetch waits for new source records, and the map (which a
		// drain waits on) must not wait with it.
		if err := pl.flush(); err != nil {
			return err
		}
		if txn != nil {
			// The sequence this transaction's batches reached is the
			// session's: the next transaction continues it in the same
			// epoch. Only a broker with transactions version 2 (Kafka
			// 4.0+, EndTxn v5) bumps the epoch at the commit and so
			// restarts the sequence at 0 (copyTxn.commit); before that
			// every second transaction was refused with
			// OUT_OF_ORDER_SEQUENCE_NUMBER on a 3.x destination (the copy
			// back to a 3.9 source restarted its session every few
			// hundred ms).
			txn.sess.seq = sess.seq
			if err := pl.commit(ctx); err != nil {
				return err
			}
			sess = txn.sess
		}
		hwm, logStart := fp.HighWatermark, fp.LogStartOffset
		clear(batchBuf)
		clear(spliceBuf)
		frame.dropSplicesOf(curSet) // those left unsent (Stop)
		curFrame, curSet = nil, nil
		frame.release() // nothing refers to the answer's bytes any more
		if changed {
			p.noteCopied(lastTs)
			saver.changed()
		}
		// Records below the source's log start are gone (retention,
		// DeleteRecords): the map stops covering them, so it does not
		// grow for ever. Only a topic's first copy trims: a copy back's
		// map starts with the left cluster's prefix, which its source's
		// log start says nothing about (ContinueMap).
		if shift == 0 && logStart > m.SourceStart() && m.trimBelow(logStart) {
			saver.changed()
		}
		// An urgent copy is not saved each time it catches up: it
		// catches up at nearly every one of its small answers, and each
		// save is an fsync the next fetch would wait for (and the seal,
		// when it stops the copy in the middle of one). The cutover
		// waiting on it stops the copy, which saves the map once then.
		caughtUp := m.SourceEnd() >= hwm+shift && p.waiters.Load() == 0
		// Published before the save: a drain waiting for this end is
		// told at once, and the save (an fsync) runs while the cutover
		// stops the copy, which waits for it (SealTopic reports a
		// failed last save, so no flip trusts an unsaved map).
		p.progress(m, hwm+shift)
		if err := saver.after(caughtUp); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// pipeline is one copy session's batches in flight on its target produce
// connection (produceconn.go), at most maxInFlight, applied to the offset
// map strictly in the order they were sent, each once its answer arrived.
// The broker appends an idempotent producer's batches in sequence order
// and rejects a batch whose predecessor it did not append
// (OUT_OF_ORDER_SEQUENCE_NUMBER), so the answers that succeeded form a
// prefix of what was sent.
//
// An error mid-pipeline (a failed batch, a dead connection) stops the
// session: the batches before it are in the map, the failed one and those
// after it are not. drain waits for every outstanding answer first, so no
// request of this session can still land on the target after it ends; the
// next session reconciles the map with the target log (the checkpoint),
// matching any batch the target appended although the session saw no
// success. Nothing is skipped or copied twice.
type pipeline struct {
	r     *Replicator
	p     *partition
	m     *OffsetMap
	conn  *produceConn
	shift int64
	req   *kmsg.ProduceRequest // reused: only the records change

	// txn is the session's transaction in fenced mode (txncopy.go): the
	// answered batches wait in it for the commit. nil: an idempotent copy,
	// each answered batch goes into the map at once.
	txn *copyTxn

	timer     *time.Timer // reused by every wait
	calls     [maxInFlight]produceCall
	q         [maxInFlight]inFlight // ring of sent batches, oldest at head
	head, n   int
	sentTotal int
}

// inFlight is a sent batch: its call, the batch, and the map's SourceEnd
// once it is applied (past it and the gaps that followed it).
type inFlight struct {
	call *produceCall
	pb   preparedBatch
	next int64
}

func newPipeline(r *Replicator, p *partition, m *OffsetMap, conn *produceConn, tgtID [16]byte, shift int64, txn *copyTxn) *pipeline {
	pl := &pipeline{r: r, p: p, m: m, conn: conn, shift: shift, txn: txn, timer: time.NewTimer(conn.timeout)}
	pl.timer.Stop()
	for i := range pl.calls {
		pl.calls[i].done = make(chan struct{}, 1)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	req.TimeoutMillis = 30000
	if txn != nil {
		req.TransactionID = &txn.id
	}
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = p.topic, tgtID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = p.partition
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	pl.req = req
	return pl
}

// send writes pb (sequence already in its header) and queues it; next is
// the map's SourceEnd once it is applied. With maxInFlight batches out,
// it first applies the oldest.
func (pl *pipeline) send(pb preparedBatch, next int64) error {
	if pl.n == maxInFlight {
		if err := pl.applyOldest(); err != nil {
			return err
		}
	}
	call := &pl.calls[pl.sentTotal%maxInFlight]
	// Counted as sent before it leaves and as settled once its answer is
	// taken (or it failed to leave): the bypass check (Writes) must never
	// see growth of the target it did not know could come.
	pl.p.writes.Sent.Add(int64(pb.numRecords))
	err := pl.conn.send(pl.req, pb.raw, pb.body, call)
	if pb.spliced {
		pl.giveBack(&pb, err == nil)
	}
	if err != nil {
		pl.p.writes.Settled.Add(int64(pb.numRecords))
		return fmt.Errorf("target broker %d: produce: %w", pl.conn.broker, err)
	}
	pl.sentTotal++
	pl.q[(pl.head+pl.n)%maxInFlight] = inFlight{call: call, pb: pb, next: next}
	pl.n++
	return nil
}

// giveBack returns a spliced batch's pipes once it is written (or not):
// empty ones to the pool, one with bytes left (a write that failed half
// way) is closed. The frame's chain entries they alias become nil, so the
// frame does not give them back again.
func (pl *pipeline) giveBack(pb *preparedBatch, sent bool) {
	left := 0
	for i, p := range pb.body {
		left += p.N
		pl.r.pipes.Put(p)
		pb.body[i] = nil
	}
	pb.body = nil
	if sent && left == 0 {
		pl.r.metrics.splicedBatches.Inc()
		pl.r.metrics.splicedBytes.Add(float64(pb.total))
	}
}

// gap marks source offsets up to next as gaps (markers, aborted data),
// after the batches in flight.
func (pl *pipeline) gap(next int64) {
	if pl.n == 0 {
		if pl.txn != nil && pl.txn.pendingNext > 0 {
			// After batches waiting for the commit.
			pl.txn.pendingNext = max(pl.txn.pendingNext, next)
			return
		}
		pl.m.advance(next)
		return
	}
	last := &pl.q[(pl.head+pl.n-1)%maxInFlight]
	last.next = max(last.next, next)
}

// flush applies every batch in flight.
func (pl *pipeline) flush() error {
	for pl.n > 0 {
		if err := pl.applyOldest(); err != nil {
			return err
		}
	}
	return nil
}

// drain waits for every answer still outstanding without applying it (the
// session is ending on an error).
func (pl *pipeline) drain() {
	for pl.n > 0 {
		f := &pl.q[pl.head]
		pl.conn.wait(f.call, pl.timer)
		pl.p.writes.Settled.Add(int64(f.pb.numRecords))
		pl.head, pl.n = (pl.head+1)%maxInFlight, pl.n-1
	}
}

// applyOldest waits for the oldest batch's answer and records it in the
// map; on an error it drains the rest and returns the error.
func (pl *pipeline) applyOldest() error {
	f := pl.q[pl.head]
	pl.q[pl.head] = inFlight{}
	pl.head, pl.n = (pl.head+1)%maxInFlight, pl.n-1
	pl.conn.wait(f.call, pl.timer)
	pl.p.writes.Settled.Add(int64(f.pb.numRecords))
	err := pl.apply(f)
	if err != nil {
		pl.drain()
	}
	return err
}

// apply records one answered batch in the map.
func (pl *pipeline) apply(f inFlight) error {
	p, m, call := pl.p, pl.m, f.call
	if err := pl.conn.produceErr(call); err != nil {
		if f.pb.spliced && errors.Is(err, kerr.CorruptMessage) {
			// The body never passed through here to be checked: the
			// next session reads this partition's batches into memory,
			// where a corrupt source batch is told apart (below).
			p.noSplice.Store(true)
			return fmt.Errorf("target broker %d: produce of a spliced batch: %w", pl.conn.broker, err)
		}
		if corruptSourceBatch(err, &f.pb) {
			return p.fatalf("batch at offset %d: its bytes do not match its CRC: the source sent a corrupt batch", f.pb.srcFirst)
		}
		if pl.txn != nil && fencing(err) {
			return &FencedError{Topic: p.topic, Partition: p.partition, Err: err}
		}
		return fmt.Errorf("target broker %d: produce: %w", pl.conn.broker, err)
	}
	if hook := pl.r.opts.Hooks.AfterProduce; hook != nil && hook(p.topic, p.partition) {
		return errCrashed
	}
	want := m.TargetEnd()
	if pl.txn != nil {
		want = pl.txn.tgtNext
	}
	if call.baseOffset != want {
		return p.fatalf("the target appended our batch at offset %d, but the offset map expected %d: something else wrote into the target partition; stop that writer, then delete the target topic and the state for it to copy again", call.baseOffset, want)
	}
	if pl.txn != nil {
		// Into the map once the transaction commits (commit).
		pl.txn.tgtNext += int64(f.pb.numRecords)
		pl.txn.pending = append(pl.txn.pending, inFlight{pb: preparedBatch{srcOffsets: f.pb.srcOffsets, srcFirst: f.pb.srcFirst, numRecords: f.pb.numRecords}, next: f.next})
		pl.txn.pendingNext = f.next
		p.bytes.Add(float64(f.pb.size()))
		return nil
	}
	p.bytes.Add(float64(len(f.pb.raw)))
	return pl.addToMap(f, call.baseOffset)
}

// addToMap records one answered batch, appended at target offset base
// (the map's TargetEnd), in the map.
func (pl *pipeline) addToMap(f inFlight, base int64) error {
	p, m := pl.p, pl.m
	pb := &f.pb
	var err error
	if pb.srcOffsets == nil {
		err = m.add(pb.srcFirst+pl.shift, base, int64(pb.numRecords))
	} else {
		for i, s := range pb.srcOffsets {
			if err = m.add(s+pl.shift, base+int64(i), 1); err != nil {
				break
			}
		}
	}
	if err != nil {
		return p.fatalf("%v", err)
	}
	m.advance(f.next)
	p.records.Add(float64(pb.numRecords))
	return nil
}

// commit commits the open transaction (every batch in it answered:
// flush ran) and puts its batches into the map, then its marker as a
// target gap. Without an open transaction it applies the gaps that
// waited. A failed commit leaves the map as it was: the next session's
// InitProducerId settles the transaction and its reconcile reads what
// the target kept.
func (pl *pipeline) commit(ctx context.Context) error {
	t := pl.txn
	committed := t.open
	if committed {
		if ctx.Err() != nil {
			// Stopping (Stop, Reassign): what was sent is committed
			// rather than left for the next owner to abort and copy again.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
		}
		if err := t.commit(ctx, pl.r, pl.p); err != nil {
			t.pending, t.pendingNext = t.pending[:0], 0
			return err
		}
	}
	for _, f := range t.pending {
		if err := pl.addToMap(f, pl.m.TargetEnd()); err != nil {
			return err
		}
	}
	if committed {
		// The commit's marker: one per partition in the transaction,
		// also one that carries no batch (a compacted batch with no
		// records left opened it).
		pl.m.skipTarget(pl.m.TargetEnd() + 1)
	}
	if t.pendingNext > 0 {
		pl.m.advance(t.pendingNext)
	}
	t.pending, t.pendingNext = t.pending[:0], 0
	return nil
}

// initProducer obtains a fresh idempotent producer id on the target,
// starting at sequence 0; a partition's copy keeps it across sessions
// (session.go).
func (r *Replicator) initProducer(ctx context.Context) (producerSession, error) {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionTimeoutMillis = 60000
	req.ProducerID, req.ProducerEpoch = -1, -1
	resp, err := req.RequestWith(ctx, r.tgt)
	if err != nil {
		return producerSession{}, fmt.Errorf("target InitProducerId: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return producerSession{}, fmt.Errorf("target InitProducerId: %w", err)
	}
	return producerSession{pid: resp.ProducerID, epoch: resp.ProducerEpoch}, nil
}

// newFetchRequest is a full fetch (no session) with the replicator's limits;
// isolation 1 is read_committed.
func (r *Replicator) newFetchRequest(isolation int8, wait time.Duration) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(wait.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = r.opts.FetchMaxBytes
	req.IsolationLevel = isolation
	req.SessionEpoch = -1 // a full fetch that opens no session (KIP-227)
	return req
}

// fetchPartition is one partition of a fetch request, with no epochs.
func (r *Replicator) fetchPartition(partition int32, offset int64) kmsg.FetchRequestTopicPartition {
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = partition
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = r.opts.PartitionMaxBytes
	rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
	return rp
}

// fetch sends one single-partition Fetch (no session) to a leader.
// isolation 1 is read_committed.
func (r *Replicator) fetch(ctx context.Context, cl *kgo.Client, leader int32, topic string, id [16]byte, partition int32, offset int64, isolation int8, wait time.Duration) (*kmsg.FetchResponseTopicPartition, error) {
	req := r.newFetchRequest(isolation, wait)
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rt.Partitions = append(rt.Partitions, r.fetchPartition(partition, offset))
	req.Topics = append(req.Topics, rt)
	kresp, err := cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("broker %d: fetch: %w", leader, err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("broker %d: fetch: %w", leader, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].Partition != partition {
		return nil, fmt.Errorf("broker %d: fetch answer does not hold exactly partition %d", leader, partition)
	}
	return &resp.Topics[0].Partitions[0], nil
}

// reconciledSession reconciles the map with the target log, then takes the
// session's producer state (session), then lists the target's end again:
// the two agree only if no record landed in between, and then the state
// describes exactly the records the map covers. A dead process's late
// batch that lands between the reconcile and DescribeProducers would
// otherwise be in the state (the session's sequence starts after it) but
// not in the map (the session copies its records again): a second copy
// under new sequences, which the broker appends ("the target appended our
// batch at offset N, but the offset map expected M", seen in the fault
// test's kproxy kill during a copy back). When the end moved, the
// reconcile runs again and matches the late records with the source.
func (r *Replicator) reconciledSession(ctx context.Context, p *partition, l leaders, txn *copyTxn) (*OffsetMap, producerSession, error) {
	for {
		m, err := r.reconcile(ctx, p, l)
		if err != nil {
			return nil, producerSession{}, err
		}
		var sess producerSession
		if txn != nil {
			sess = txn.sess // fenced: no other write can land (txncopy.go)
		} else if sess, err = r.session(ctx, p); err != nil {
			return nil, producerSession{}, err
		}
		tgt, err := listOffsets(ctx, r, true, p.topic, p.partition)
		if err != nil {
			return nil, producerSession{}, err
		}
		if tgt.end == m.TargetEnd() {
			return m, sess, nil
		}
		p.log.Info("records landed on the target while the copy session started (a late batch of a process that died); reconciling again", "target_offset", m.TargetEnd(), "target_end", tgt.end)
		if err := ctx.Err(); err != nil {
			return nil, producerSession{}, err
		}
	}
}

// reconcile loads the partition's map and checks it against both logs. The
// target log is the checkpoint: records on the target beyond the map (a
// crash between produce and persist) are matched one by one with the next
// source records and added to the map. Anything that cannot be explained is
// fatal.
func (r *Replicator) reconcile(ctx context.Context, p *partition, l leaders) (*OffsetMap, error) {
	p.mu.Lock()
	m := p.m
	p.mu.Unlock()
	if m == nil {
		var err error
		if m, err = loadMapFile(r.opts.StateDir, p.topic, p.partition); err != nil {
			return nil, p.fatalf("%v", err)
		}
	} else {
		m = m.clone() // the published map is only ever replaced, never rewound
	}
	src, err := listOffsets(ctx, r, false, p.topic, p.partition)
	if err != nil {
		return nil, err
	}
	tgt, err := listOffsets(ctx, r, true, p.topic, p.partition)
	if err != nil {
		return nil, err
	}
	if m == nil {
		start := tgt.end
		switch {
		case tgt.end != 0 && r.fencedMode():
			// Copied by another instance until now: the map is rebuilt
			// from the target log, matching its records from its start
			// with the source's from its start (recoverTail below), which
			// holds only while neither log lost records to retention
			// since the copy began; a mismatch stops the partition.
			start = tgt.start
			p.log.Info("no offset map for a partition another instance copied; rebuilding it from the target log", "target_start", tgt.start, "target_end", tgt.end, "offset", src.start)
		case tgt.end != 0:
			return nil, p.fatalf("the target partition holds offsets up to %d but %s has no offset map for it: something else wrote into it, or the state directory was lost; delete the target topic to copy again", tgt.end, r.opts.StateDir)
		}
		m = NewOffsetMap(MapMeta{Topic: p.topic, Partition: p.partition, SourceTopicID: l.srcID, TargetTopicID: l.tgtID}, src.start, start)
		if _, err := saveMapFile(r.opts.StateDir, m); err != nil {
			return nil, err
		}
		p.log.Info("starting replication from the source log start", "offset", src.start)
	}
	meta := m.Meta()
	shift := meta.SourceShift
	switch {
	case meta.SourceTopicID != l.srcID:
		return nil, p.fatalf("the source topic was recreated (topic id changed); its offsets no longer match the offset map")
	case meta.TargetTopicID != l.tgtID:
		return nil, p.fatalf("the target topic was recreated (topic id changed) after copying started; delete the state for it to copy again")
	case tgt.end < m.TargetEnd():
		return nil, p.fatalf("the target partition ends at %d, before the %d records already copied: it was truncated or recreated", tgt.end, m.TargetEnd())
	case src.start+shift > m.SourceEnd():
		return nil, p.fatalf("the source log start moved to %d, past the next offset to copy %d: retention or DeleteRecords removed records that were never copied", src.start, m.SourceEnd()-shift)
	case src.end+shift < m.SourceEnd():
		return nil, p.fatalf("the source partition ends at %d, before the %d offsets already copied: it was truncated", src.end, m.SourceEnd()-shift)
	}
	if tgt.end > m.TargetEnd() {
		if err := r.recoverTail(ctx, p, l, m, tgt.end); err != nil {
			return nil, err
		}
		if _, err := saveMapFile(r.opts.StateDir, m); err != nil {
			return nil, err
		}
	}
	p.progress(m, src.end+shift)
	return m, nil
}

// recoverTail extends m over target records [m.TargetEnd(), tgtEnd) by
// matching each with the next committed source record.
func (r *Replicator) recoverTail(ctx context.Context, p *partition, l leaders, m *OffsetMap, tgtEnd int64) error {
	p.log.Info("target holds records the offset map does not; matching them with the source", "target_offset", m.TargetEnd(), "target_end", tgtEnd)
	shift := m.Meta().SourceShift
	srcNext := m.SourceEnd() - shift
	var queue []*kgo.Record
	// A fenced copy's target holds commit markers and, from an owner
	// fenced mid-transaction, aborted records: read_committed, and every
	// offset between the records it returns is a target gap.
	// A map with target gaps was written by a fenced copy before (the
	// instances went back to one): its target may hold markers too.
	fenced := r.fencedMode() || m.TargetGaps() > 0
	isolation, opts := int8(0), kgo.ProcessFetchPartitionOpts{Topic: p.topic, Partition: p.partition}
	if fenced {
		isolation, opts.IsolationLevel = 1, kgo.ReadCommitted()
	}
	for m.TargetEnd() < tgtEnd {
		tfp, err := r.fetch(ctx, r.tgt, l.tgtLeader, p.topic, l.tgtID, p.partition, m.TargetEnd(), isolation, r.opts.FetchMaxWait)
		if err != nil {
			return err
		}
		opts.Offset = m.TargetEnd()
		trecs, tnext := kgo.ProcessFetchPartition(opts, tfp, decompressor, nil)
		if trecs.Err != nil {
			return fmt.Errorf("target fetch at %d: %w", m.TargetEnd(), trecs.Err)
		}
		if len(trecs.Records) == 0 {
			if fenced && tnext > m.TargetEnd() {
				m.skipTarget(min(tnext, tgtEnd)) // markers, aborted records
				continue
			}
			return fmt.Errorf("target fetch at %d returned no records", m.TargetEnd())
		}
		for _, t := range trecs.Records {
			if t.Offset >= tgtEnd {
				break
			}
			if fenced && t.Offset > m.TargetEnd() {
				m.skipTarget(t.Offset)
			}
			for len(queue) == 0 {
				sfp, err := r.fetch(ctx, r.src, l.srcLeader, p.topic, l.srcID, p.partition, srcNext, 1, r.opts.FetchMaxWait)
				if err != nil {
					return err
				}
				srecs, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: srcNext, IsolationLevel: kgo.ReadCommitted(), Topic: p.topic, Partition: p.partition}, sfp, decompressor, nil)
				if srecs.Err != nil {
					return fmt.Errorf("source fetch at %d: %w", srcNext, srecs.Err)
				}
				if next <= srcNext && len(srecs.Records) == 0 {
					if srcNext >= sfp.HighWatermark {
						return p.fatalf("target offset %d holds a record the source does not have after offset %d: something else wrote into the target partition", t.Offset, srcNext)
					}
					return fmt.Errorf("source fetch at %d made no progress", srcNext)
				}
				queue = append(queue, srecs.Records...)
				srcNext = max(next, srcNext)
			}
			s := queue[0]
			queue = queue[1:]
			if !sameRecord(s, t) {
				return p.fatalf("target offset %d does not hold source offset %d's record: something else wrote into the target partition", t.Offset, s.Offset)
			}
			if err := m.add(s.Offset+shift, t.Offset, 1); err != nil {
				return p.fatalf("%v", err)
			}
		}
		if fenced && tnext > m.TargetEnd() {
			// Markers after the last record fetched.
			m.skipTarget(min(tnext, tgtEnd))
		}
	}
	p.log.Info("matched the target's extra records with the source", "offset", m.SourceEnd()-shift, "target_offset", m.TargetEnd())
	return nil
}

func sameRecord(a, b *kgo.Record) bool {
	if !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) || !a.Timestamp.Equal(b.Timestamp) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}
