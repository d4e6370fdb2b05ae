package proxy

// Per-client state expires after an idle time, so that weeks of clients
// coming and going (a Flink job names new transactional ids on every
// restart; a fleet of short-lived producers) do not grow kproxy without
// bound. Three kinds, each with a limit, a gauge of entries and a counter
// of expired ones (docs/operations.md):
//
//   - producer_sessions: an idempotent producer's upstream session per
//     cluster (ident_pid.go), in memory and in producer-sessions.jsonl.
//     Forgotten after limits.producer_idle (default 7 days) without a
//     batch; the file is then rewritten without it. A producer that comes
//     back later still holds its virtual PID (kproxy recognises it by its
//     bits, not by a table) and gets a new upstream session on its next
//     batch. The broker accepts any sequence from a session it has no
//     state for, so the producer goes on without an error: what a broker
//     does for a producer whose state it expired after
//     producer.id.expiration.ms (1 day by default), with the same cost,
//     that a batch resent from before the expiry is not recognised as a
//     duplicate. producer_idle must not be shorter than the brokers'
//     producer.id.expiration.ms, or kproxy would forget a session the
//     broker still deduplicates for; the default, a week, is Kafka's
//     transactional.id.expiration.ms and leaves room for brokers that
//     raised the former.
//   - transactional_ids: a transactional.id's virtual session
//     (txn_producers.go). Forgotten after limits.transactional_idle
//     (default 7 days, transactional.id.expiration.ms) without a request,
//     unless a request of it is being served; an open transaction that
//     old was aborted by its coordinator long ago (transaction.timeout.ms
//     is at most transaction.max.timeout.ms, 15 minutes by default). A
//     producer that comes back gets INVALID_PRODUCER_ID_MAPPING on its
//     next request, as from a coordinator that expired the id, and must
//     re-initialize (the Java client takes it as fatal and the application
//     recreates the producer, as against a broker).
//   - group_memberships: client instances' groups (group_membership.go),
//     kept while a connection carrying the membership is open and for
//     limits.group_membership_grace (default 5 minutes) after.
//
// A sweep runs every expirySweepEvery; tests call expireState with their
// own clock.

import (
	"time"
)

// Kinds of per-client state, the label of kproxy_state_entries and
// kproxy_state_expired_total.
const (
	stateProducerSessions = "producer_sessions"
	stateTxnIDs           = "transactional_ids"
	stateGroupMemberships = "group_memberships"
)

// expirySweepEvery is how often idle state is looked for. The idle times
// are minutes to days, so a minute is precise enough, and a sweep costs one
// pass over the tables.
const expirySweepEvery = time.Minute

// clock is the producer tables' time (tests replace now).
func (p *producerIDs) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// expireLoop sweeps until Close, first at once (sessions loaded from the
// file may be idle already, and the gauges start right).
func (s *Server) expireLoop() {
	defer s.wg.Done()
	s.expireState()
	tick := time.NewTicker(expirySweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.expireState()
		}
	}
}

// expireState drops idle state of every kind and updates the metrics.
func (s *Server) expireState() {
	m := s.metrics
	n, err := s.pids.expireSessions()
	if err != nil {
		// The sessions stay forgotten in memory; the file keeps them
		// until the next rewrite succeeds, which only means a restart
		// loads them again.
		s.log.Warn("producer sessions file not rewritten after expiry; retried at the next sweep", "error", err)
	}
	m.stateExpired.WithLabelValues(stateProducerSessions).Add(float64(n))
	m.stateExpired.WithLabelValues(stateTxnIDs).Add(float64(s.pids.expireTxns(s.opts.Limits.TransactionalIdle)))
	m.stateExpired.WithLabelValues(stateGroupMemberships).Add(float64(s.members.expire()))
	sessions, txns := s.pids.counts()
	m.stateEntries.WithLabelValues(stateProducerSessions).Set(float64(sessions))
	m.stateEntries.WithLabelValues(stateTxnIDs).Set(float64(txns))
}

func (p *producerIDs) counts() (sessions, txns int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m), len(p.txns)
}

// expireSessions forgets idempotent sessions unused for p.idle and
// rewrites the sessions file when it forgot any, or when the file holds
// many lines the table no longer has (sessions forgotten on an epoch bump).
// It returns how many it forgot.
func (p *producerIDs) expireSessions() (int, error) {
	defer p.lockStore()()
	p.mu.Lock()
	now := p.clock()
	n := 0
	if p.idle > 0 {
		for k, used := range p.used {
			if now.Sub(used) >= p.idle {
				delete(p.m, k)
				delete(p.used, k)
				p.forgetShared(k)
				n++
			}
		}
	}
	st := p.store
	if st == nil || (n == 0 && st.lines <= 2*(len(p.m)+len(p.moved))+100) {
		p.mu.Unlock()
		return n, nil
	}
	recs := p.snapshotLocked()
	p.mu.Unlock()
	// Under the store's lock only: batches of known sessions go on
	// meanwhile; a new session waits for the rewrite.
	return n, st.replace(recs)
}

// expireTxns forgets transactional ids unused for idle whose coordinator
// requests are not being served; it returns how many.
func (p *producerIDs) expireTxns(idle time.Duration) int {
	if idle <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock()
	n := 0
	for id, t := range p.txns {
		if now.Sub(t.used) < idle || !t.op.TryLock() {
			continue
		}
		// t.op is held: no request of this id is between its lookup
		// and its answer, and one that looked t up before waits for
		// op and then finds it expired (txnCheck, initTxnProducer).
		t.expired = true
		open := t.cluster != ""
		delete(p.txns, id)
		if p.txnPIDs[t.vpid] == t {
			delete(p.txnPIDs, t.vpid)
		}
		t.op.Unlock()
		if open {
			p.txnChangedLocked() // a cutover waiting for it (WaitTxnIdle) looks again
		}
		n++
	}
	return n
}

// txnExpired says whether t was dropped by expiry.
func (p *producerIDs) txnExpired(t *txnProducer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return t.expired
}
