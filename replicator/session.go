package replicator

// The copy's producer identity survives a restart (decision 008, "Left",
// now done for the copy).
//
// A killed kproxy can leave copy batches on the wire: they land on the
// target after the restarted replicator reconciled its map with the target
// log, and the restarted copy's first batch, with the same source records,
// lands behind them. With a fresh producer id per session the broker took
// both ("the target appended our batch at offset N, but the offset map
// expected M") and the copy stopped for good.
//
// So a partition's copy keeps its idempotent producer id across sessions
// and restarts: obtained once and saved beside the offset map
// (<topic>/<partition>.producer) before any batch carries it, and a session
// starts its sequence where the target partition's state for that id ends
// (DescribeProducers: the last sequence it appended there). A late batch of the dead process and the
// restarted copy's batch then carry the same producer, epoch and sequence:
// whichever reaches the broker second is answered as a duplicate (at the
// first one's offset, which is where the map expects the batch) or, if
// their records differ, refused with OUT_OF_ORDER_SEQUENCE_NUMBER; never
// appended twice. A refused batch ends the session, and the next one's
// reconcile matches the late batch's records with the source (recoverTail).
//
// When the target has no state for the id (the broker expired it after
// producer.id.expiration.ms; kfake, which lists only transactional
// producers) or cannot say (before Kafka 2.8), the session gets a fresh
// id, as every session did before, and saves it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/statefile"
)

// producerPath is where a partition's copy keeps its producer id, beside
// its offset map.
func producerPath(dir, topic string, partition int32) string {
	return filepath.Join(dir, topic, strconv.Itoa(int(partition))+".producer")
}

type savedProducer struct {
	ProducerID int64 `json:"producer_id"`
	Epoch      int16 `json:"epoch"`
}

// session is the producer a copy session of p writes with: the one its
// last session saved, at the sequence after the last the target partition
// has from it; or, when the target has no state for it (or cannot say), a
// fresh one, saved before any batch carries it.
func (r *Replicator) session(ctx context.Context, p *partition) (producerSession, error) {
	path := producerPath(r.opts.StateDir, p.topic, p.partition)
	if b, err := os.ReadFile(path); err == nil {
		var sp savedProducer
		if json.Unmarshal(b, &sp) == nil && sp.ProducerID >= 0 {
			last, epoch, found, err := r.lastSequence(ctx, p.topic, p.partition, sp.ProducerID)
			switch {
			case err != nil:
				p.log.Debug("the target's producer state is unknown; this copy session writes as a fresh producer", "error", err)
			case found && epoch == sp.Epoch:
				return producerSession{pid: sp.ProducerID, epoch: sp.Epoch, seq: int32((int64(last) + 1) % (1 << 31))}, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return producerSession{}, err
	}
	s, err := r.initProducer(ctx)
	if err != nil {
		return producerSession{}, err
	}
	b, _ := json.Marshal(savedProducer{ProducerID: s.pid, Epoch: s.epoch})
	if err := statefile.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return producerSession{}, err
	}
	if err := statefile.WriteAtomic(path, b, 0o644); err != nil {
		return producerSession{}, err
	}
	return s, nil
}

// lastSequence asks the target partition's leader for pid's state there.
func (r *Replicator) lastSequence(ctx context.Context, topic string, partition int32, pid int64) (last int32, epoch int16, found bool, err error) {
	req := kmsg.NewPtrDescribeProducersRequest()
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{partition}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r.tgt)
	if err != nil {
		return 0, 0, false, err
	}
	for _, t := range resp.Topics {
		for _, pp := range t.Partitions {
			if t.Topic != topic || pp.Partition != partition {
				continue
			}
			if err := kerr.ErrorForCode(pp.ErrorCode); err != nil {
				return 0, 0, false, err
			}
			for _, ap := range pp.ActiveProducers {
				if ap.ProducerID == pid {
					return ap.LastSequence, int16(ap.ProducerEpoch), true, nil
				}
			}
			return 0, 0, false, nil
		}
	}
	return 0, 0, false, fmt.Errorf("DescribeProducers left %s/%d out", topic, partition)
}
