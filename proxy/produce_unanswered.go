package proxy

// Idempotent batches whose upstream answer was lost. When the upstream
// connection of a produce fails (a reset, a broker that does not answer in
// time) the broker may or may not have written the batch, and may still
// write it: a request it read before the connection died is still handled.
// The client gets a retriable error and resends the batch; the broker that
// got it first de-duplicates it by producer id and sequence. That holds only
// on that cluster: once the topic flips, the resend goes to the new home
// under a fresh upstream session (ident_pid.go, moveTopic). The drain's note
// of the old home's producers (decision 008, ident_pid_resend.go) sends it
// back to the old home if the batch lies below the frozen ends, but not
// when there is no note (a home before Kafka 2.8, or DescribeProducers
// failed), and the broker may append the batch only after the ends were
// frozen (a stray copy beyond the flip point, which stops the copy back).
// The soak with connection resets wrote 96 records twice this way, before
// the note existed.
//
// So such a batch keeps its topic in flight until an answer from the same
// cluster settles it: the cutover's drain (WaitProduceIdle) waits for it,
// and its resend passes the produce hold (00_produce.go) to that cluster,
// where the broker answers it once and for all. The entry is settled when
// any call carrying the batch, or a later batch of the same producer on
// the partition, is answered by that cluster (the broker answered it in
// order). It is dropped when its topic moves off that cluster (the resend rule judges it from
// then on), and at the latest unansweredWait after its last lost answer: a
// resend that does not come by then (the client gave up or died) no longer
// delays a drain, and a later one is judged by the resend rule. Each
// outcome is counted (kproxy_produce_unanswered_total) and an expiry is
// logged with the batch named.
//
// Settling and marking happen on the upstream reader (answerWatcher), when
// the broker answers or the call fails, not when the client's response is
// built: that response can wait in the connection's order behind a held
// request, whose release waits for this drain: a wait on itself until
// max_hold. (The branch fix this rebuilds settled there; that is a likely
// cause of the max_hold abort its soak run saw, not a proven one.)

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// unansweredWait bounds how long a batch whose answer was lost keeps its
// topic in flight. Clients resend a retriable error after their retry
// backoff (100 ms in Java and librdkafka, up to 1 s in franz-go), so a
// resend that has not come in 3 s is not coming soon; it stays below the
// default max_hold (5 s), so a missing resend delays a flip instead of
// aborting it. A client that resends a failed batch only after its later
// in-flight batches are answered (franz-go) could not resend while those
// waited in the hold: on real Kafka every such entry expired and the hold
// took the full wait, until held requests of the producer were answered
// at once (bounceHeldLocked). The wait also lets a request the broker
// read before the reset be appended before the freeze, where the drain's
// note covers it.
const unansweredWait = 3 * time.Second

// errNotSent is what a watcher hears for a call that was never written
// upstream: no broker has the batch.
var errNotSent = errors.New("not sent upstream")

// batchKey names an idempotent batch as the client sent it.
type batchKey struct {
	topic     string
	partition int32
	pid       int64 // the client's (virtual) producer id
	epoch     int16
	seq       int32 // base sequence
}

// batchKeyOf is the key of records' batch when it is one
// non-transactional batch of a virtual idempotent producer (the client's
// bytes, before any producer id rewrite).
func batchKeyOf(topic string, partition int32, records []byte) (batchKey, bool) {
	if len(records) < 61 || records[16] != 2 {
		return batchKey{}, false
	}
	pid := int64(binary.BigEndian.Uint64(records[43:]))
	if !isVirtualPID(pid) || binary.BigEndian.Uint16(records[21:])&batchTransactional != 0 {
		return batchKey{}, false
	}
	return batchKey{topic: topic, partition: partition, pid: pid,
		epoch: int16(binary.BigEndian.Uint16(records[51:])), seq: int32(binary.BigEndian.Uint32(records[53:]))}, true
}

type unansweredEntry struct {
	cluster string // where the batch went: only its answer settles it
	timer   *time.Timer
}

// producedBatches watches one upstream produce call that carries
// idempotent batches of replicated topics: a failure marks them
// unanswered, an answer settles them (and any earlier ones of the same
// producers); then the request's in-flight count (flights, if any) hears it.
type producedBatches struct {
	h       *holds
	cluster string
	keys    []batchKey
	flights answerWatcher
}

func (w *producedBatches) answered(err error) {
	switch {
	case err == nil:
		w.h.settleUnanswered(w.cluster, w.keys)
	case !errors.Is(err, errNotSent):
		w.h.markUnanswered(w.cluster, w.keys)
	}
	if w.flights != nil {
		w.flights.answered(err)
	}
}

// markUnanswered records that keys' outcome on cluster is unknown: each
// counts in its topic's in-flight count until it is settled or dropped.
// It runs before the call's own count ends, so a drain never sees the
// topic idle in between.
func (h *holds) markUnanswered(cluster string, keys []batchKey) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range keys {
		if e, ok := h.unanswered[k]; ok {
			// A resend lost its answer too (a burst of resets): the
			// wait for the next resend starts again.
			e.timer.Reset(unansweredWait)
			continue
		}
		if h.unanswered == nil {
			h.unanswered = map[batchKey]*unansweredEntry{}
		}
		k := k
		e := &unansweredEntry{cluster: cluster}
		e.timer = time.AfterFunc(unansweredWait, func() { h.dropUnanswered(k, e, "expired") })
		h.unanswered[k] = e
		h.nUnanswered.Add(1)
		h.counter(k.topic).add(1)
		h.noteUnanswered("unanswered", k, cluster)
		h.bounceHeldLocked(k, cluster)
	}
}

// producerUnanswered reports whether producer pid has a batch of topic
// whose answer from cluster was lost.
func (h *holds) producerUnanswered(topic, cluster string, pid int64) bool {
	if h.nUnanswered.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for u, e := range h.unanswered {
		if u.topic == topic && u.pid == pid && e.cluster == cluster {
			return true
		}
	}
	return false
}

// bounceHeldLocked answers the held requests of k's producer for k's topic
// at once, retriably: a client resends a failed batch only after its later
// in-flight requests are answered (franz-go does), so held they would keep
// the resend, and the drain waiting for it, until unansweredWait. They were
// never sent, so a retriable error loses nothing. h.mu is held.
func (h *holds) bounceHeldLocked(k batchKey, cluster string) {
	th, ok := h.held[k.topic]
	if !ok || th.from != cluster {
		return
	}
	kept := th.queue[:0]
	for _, hp := range th.queue {
		if hp.req.Acks == 0 || !hp.hasProducer(k.topic, k.pid) {
			kept = append(kept, hp)
			continue
		}
		for _, t := range hp.req.Topics {
			for _, p := range t.Partitions {
				hp.parts = append(hp.parts, producePartitionError(p.Partition, kerr.NotLeaderForPartition.Code))
			}
		}
		close(hp.done)
		h.noteUnanswered("bounced", k, cluster)
	}
	clear(th.queue[len(kept):])
	th.queue = kept
}

// hasProducer reports whether a held request carries a batch of producer
// pid for topic.
func (hp *heldProduce) hasProducer(topic string, pid int64) bool {
	for _, t := range hp.req.Topics {
		for _, p := range t.Partitions {
			if k, ok := batchKeyOf(topic, p.Partition, p.Records); ok && k.pid == pid {
				return true
			}
		}
	}
	return false
}

// isUnanswered reports whether k is a resend of a batch whose answer from
// cluster was lost.
func (h *holds) isUnanswered(k batchKey, cluster string) bool {
	if h.nUnanswered.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.unanswered[k]
	return ok && e.cluster == cluster
}

// settleUnanswered records cluster's answer to keys: each, and any earlier
// batch of the same producer on the partition there, is settled (a broker
// answers an idempotent producer's batch only after the earlier ones).
func (h *holds) settleUnanswered(cluster string, keys []batchKey) {
	if h.nUnanswered.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for u, e := range h.unanswered {
		if e.cluster != cluster {
			continue
		}
		for _, k := range keys {
			if u.topic == k.topic && u.partition == k.partition && u.pid == k.pid && (u.epoch < k.epoch || u.epoch == k.epoch && u.seq <= k.seq) {
				h.dropLocked(u, e, "settled")
				break
			}
		}
	}
}

// movedOff drops topic's entries on from: the topic left that cluster, and
// a resend is judged by the resend rule (ident_pid_resend.go) from now on.
// h.mu is held.
func (h *holds) movedOffLocked(topic, from string) {
	for u, e := range h.unanswered {
		if u.topic == topic && e.cluster == from {
			h.dropLocked(u, e, "moved")
		}
	}
}

func (h *holds) dropUnanswered(k batchKey, e *unansweredEntry, outcome string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unanswered[k] == e {
		h.dropLocked(k, e, outcome)
	}
}

// dropLocked ends an entry; h.mu is held.
func (h *holds) dropLocked(k batchKey, e *unansweredEntry, outcome string) {
	e.timer.Stop()
	delete(h.unanswered, k)
	h.nUnanswered.Add(-1)
	h.counter(k.topic).add(-1)
	h.noteUnanswered(outcome, k, e.cluster)
}

// unansweredIn describes topic's entries for an error message, "" if none.
func (h *holds) unansweredIn(topic string) string {
	if h.nUnanswered.Load() == 0 {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n, first := 0, batchKey{}
	for u := range h.unanswered {
		if u.topic == topic {
			if n == 0 {
				first = u
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d of them batches whose upstream answer was lost, waiting for the producer's resend (e.g. partition %d, producer %d, epoch %d, first sequence %d)", n, first.partition, first.pid, first.epoch, first.seq)
}

func (h *holds) noteUnanswered(outcome string, k batchKey, cluster string) {
	if h.onUnanswered != nil {
		h.onUnanswered(outcome, k, cluster)
	}
}

// noteUnanswered counts an outcome of a batch whose answer was lost, and
// logs the ones an operator may look for: the loss, and an expiry (the
// resend rule, not the drain, judges a later resend).
func (s *Server) noteUnanswered(outcome string, k batchKey, cluster string) {
	if s.metrics != nil {
		s.metrics.unanswered.WithLabelValues(outcome).Inc()
	}
	switch outcome {
	case "unanswered":
		s.log.Debug("an idempotent batch's upstream answer was lost; its topic counts it in flight until its cluster answers a resend",
			"topic", k.topic, "partition", k.partition, "cluster", cluster, "producer", k.pid, "epoch", k.epoch, "first_sequence", k.seq)
	case "expired":
		s.log.Warn("no resend came for an idempotent batch whose upstream answer was lost; a cutover no longer waits for it, and the resend rule judges a later resend",
			"topic", k.topic, "partition", k.partition, "cluster", cluster, "producer", k.pid, "epoch", k.epoch, "first_sequence", k.seq, "waited", unansweredWait)
	}
}
