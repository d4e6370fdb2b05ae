package replicator

// The fenced copy (issue 14, docs/ha.md "Replication ownership, fenced by
// the broker"). With several kproxy instances, one instance copies each
// source partition, but an instance that was paused (SIGSTOP, a long GC, a
// partitioned host) does not know it lost the partition and may write the
// batches it had in hand after another instance took over: the target
// would hold them twice. A check the paused instance makes itself cannot
// help (it is the one that is wrong), so the broker fences it:
//
//   - each partition's copy is a transactional producer whose
//     transactional.id is Options.TransactionalIDPrefix + "<topic>-<p>";
//   - a copy session starts with InitProducerId for that id, before it
//     reads the target log: the broker bumps the producer epoch, aborts
//     the transaction a previous owner left open, and from then on refuses
//     every write of the earlier epoch (INVALID_PRODUCER_EPOCH on produce,
//     PRODUCER_FENCED on AddPartitionsToTxn and EndTxn), however late it
//     arrives;
//   - the batches of one fetch answer are one transaction, and the offset
//     map takes them only once EndTxn committed it: a session that ends
//     mid-transaction (an error, the fence) leaves the map as it was, and
//     the next owner's reconcile reads the target read_committed, so a
//     fenced owner's aborted records are target gaps, never copied records;
//   - each commit's marker is one target offset no source record explains:
//     the map records it as a target gap (skipTarget);
//   - a fenced copy stops the partition (FencedError): no retry, since a
//     retry would fence the new owner in turn. The instance starts copying
//     it again only when the membership gives it back (Reassign).
//
// Without a prefix (one instance) the copy is the idempotent one, as
// before: no transactions, no markers.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FencedError stops a partition's copy on this instance: another instance
// took the partition over, and the broker refused this one's write.
type FencedError struct {
	Topic     string
	Partition int32
	Err       error
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("the copy of %s/%d was fenced: another instance took the partition over (its InitProducerId bumped the producer epoch), so the target refused this instance's write: %v", e.Topic, e.Partition, e.Err)
}

func (e *FencedError) Unwrap() error { return e.Err }

// fencing says whether err is the broker refusing a fenced producer.
func fencing(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// fencedMode says whether the copy writes transactionally (several
// instances).
func (r *Replicator) fencedMode() bool { return r.opts.TransactionalIDPrefix != "" }

// transactionalID is partition p's copy's transactional id.
func (r *Replicator) transactionalID(p *partition) string {
	return r.opts.TransactionalIDPrefix + p.topic + "-" + strconv.Itoa(int(p.partition))
}

// copyTxn is one copy session's transactional producer and the
// transaction it has open.
type copyTxn struct {
	id   string
	sess producerSession
	open bool // AddPartitionsToTxn succeeded for the current transaction
	// tgtNext is where the target appends the next batch: the map's
	// TargetEnd plus the batches of the open transaction.
	tgtNext int64
	// pending are the open transaction's answered batches, applied to
	// the map when it commits.
	pending []inFlight
	// pendingNext is the map's SourceEnd once pending is applied (past
	// the gaps after the last batch), 0 when there is nothing pending.
	pendingNext int64
}

// txnRetryBackoff is the pause before asking the transaction coordinator
// again while it finishes the previous transaction
// (CONCURRENT_TRANSACTIONS: the markers of the last commit or of an abort
// are still being written).
const txnRetryBackoff = 20 * time.Millisecond

// coordinatorBusy says whether a coordinator answer asks to try again soon.
func coordinatorBusy(err error) bool {
	return errors.Is(err, kerr.ConcurrentTransactions) || errors.Is(err, kerr.CoordinatorLoadInProgress) ||
		errors.Is(err, kerr.NotCoordinator) || errors.Is(err, kerr.CoordinatorNotAvailable)
}

// txnRequest sends a request to the transaction coordinator (kgo finds
// it), again while the coordinator is busy, and returns the answer's error
// code as an error.
func txnRequest[R kmsg.Response](ctx context.Context, r *Replicator, req kmsg.Request, code func(R) error) (R, error) {
	for {
		var resp R
		kresp, err := r.tgt.Request(ctx, req)
		if err == nil {
			resp = kresp.(R)
			err = code(resp)
		}
		if err == nil || !coordinatorBusy(err) {
			return resp, err
		}
		select {
		case <-ctx.Done():
			return resp, ctx.Err()
		case <-time.After(txnRetryBackoff):
		}
	}
}

// beginFencedSession makes this instance the partition's only writer:
// InitProducerId for the partition's transactional id fences every earlier
// session (this instance's or another's) and resolves the transaction it
// left open, before the session reads the target log.
func (r *Replicator) beginFencedSession(ctx context.Context, p *partition) (*copyTxn, error) {
	id := r.transactionalID(p)
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = 60000
	req.ProducerID, req.ProducerEpoch = -1, -1
	resp, err := txnRequest(ctx, r, req, func(resp *kmsg.InitProducerIDResponse) error { return kerr.ErrorForCode(resp.ErrorCode) })
	if err != nil {
		if errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
			return nil, p.fatalf("the target refuses transactional id %q: with several instances the copy writes transactionally; grant the copy's principal WRITE and DESCRIBE on transactional ids with the prefix %q", id, r.opts.TransactionalIDPrefix)
		}
		return nil, fmt.Errorf("target InitProducerId for %q: %w", id, err)
	}
	return &copyTxn{id: id, sess: producerSession{pid: resp.ProducerID, epoch: resp.ProducerEpoch, txn: true}}, nil
}

// addPartition opens a transaction on the partition (before its first
// batch).
func (t *copyTxn) addPartition(ctx context.Context, r *Replicator, p *partition) error {
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch = t.id, t.sess.pid, t.sess.epoch
	rt := kmsg.NewAddPartitionsToTxnRequestTopic()
	rt.Topic, rt.Partitions = p.topic, []int32{p.partition}
	req.Topics = append(req.Topics, rt)
	_, err := txnRequest(ctx, r, req, func(resp *kmsg.AddPartitionsToTxnResponse) error {
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		for _, tx := range resp.Transactions { // v4+ (kgo answers v0-3 in Topics)
			for _, tt := range tx.Topics {
				for _, pp := range tt.Partitions {
					if err := kerr.ErrorForCode(pp.ErrorCode); err != nil {
						return err
					}
				}
			}
		}
		for _, tt := range resp.Topics {
			for _, pp := range tt.Partitions {
				if err := kerr.ErrorForCode(pp.ErrorCode); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		if fencing(err) {
			return &FencedError{Topic: p.topic, Partition: p.partition, Err: err}
		}
		return fmt.Errorf("target AddPartitionsToTxn: %w", err)
	}
	t.open = true
	return nil
}

// commit ends the open transaction with a commit. With transactions
// version 2 (KIP-890, EndTxn v5+) the broker bumps the epoch at every
// commit and says so in the answer: the next transaction writes with it,
// from sequence 0.
func (t *copyTxn) commit(ctx context.Context, r *Replicator, p *partition) error {
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit = t.id, t.sess.pid, t.sess.epoch, true
	resp, err := txnRequest(ctx, r, req, func(resp *kmsg.EndTxnResponse) error { return kerr.ErrorForCode(resp.ErrorCode) })
	if err != nil {
		if fencing(err) {
			return &FencedError{Topic: p.topic, Partition: p.partition, Err: err}
		}
		// Committed or not, the next session's InitProducerId settles
		// it and its reconcile reads what the target kept.
		return fmt.Errorf("target EndTxn: %w", err)
	}
	if resp.Version >= 5 && resp.ProducerEpoch >= 0 && (resp.ProducerID != t.sess.pid || resp.ProducerEpoch != t.sess.epoch) {
		t.sess.pid, t.sess.epoch, t.sess.seq = resp.ProducerID, resp.ProducerEpoch, 0
	}
	t.open = false
	return nil
}
