package proxy

// Transactional producers across a cutover (DESIGN.md, "Transactional
// producers across a flip"). A transactional producer gets a virtual PID
// from kproxy, like an idempotent one (ident_pid.go), so that one client
// session can run its transactions on the source, then on the target after
// its topic flips, then on the source again after a rollback, without ever
// seeing a new PID or a lower epoch.
//
// Per transactional.id kproxy keeps: the virtual (PID, epoch) the client
// holds; the cluster of the open transaction ("" between transactions); and
// per cluster the upstream (PID, epoch) that InitProducerId(transactional.id)
// returned there. A transaction's cluster is chosen when it begins (its
// first successful AddPartitionsToTxn, or AddOffsetsToTxn) as the produce
// cluster of its topics (the group's home for AddOffsetsToTxn); every
// coordinator request of the transaction goes there with the upstream
// PID/epoch, and a topic routed elsewhere is refused with INVALID_TXN_STATE:
// a transaction never spans clusters. After EndTxn answers, the next
// transaction may begin on the other cluster.
//
// Upstream sessions: the client's InitProducerId re-initializes, at once,
// the transactional id on routes.default and on every cluster this instance
// already holds a session for (the coordinator there fences older producers
// and aborts their open transaction, the guarantee initTransactions gives).
// Any other cluster is initialized lazily, when the first transaction there
// begins; that InitProducerId fences older sessions on that cluster then. A
// transaction that returns to a cluster after the client's sequences
// advanced on the other one re-initializes that cluster's session first, and
// batch sequences are rebased per session to start at 0 (brokers refuse a
// sequence gap, and a non-zero first sequence on a new epoch or a
// never-written partition).
// Upstream kproxy always asks with PID/epoch -1 (a "new producer" init): it
// is the single producer of the id as far as the brokers know, and the
// client's own KIP-360 bump is answered virtually.
//
// Cutover: a new transaction (or an open one adding a new topic) that
// touches a topic whose produce is held gets CONCURRENT_TRANSACTIONS, which
// every client retries; an open transaction that already includes the topic
// keeps producing to its cluster through the hold (00_produce.go), since the
// hold cannot end until it ends (WaitTxnIdle). The topic is recorded in the
// transaction before the hold is looked at, as produce counts itself in
// flight before looking (cutover_hold.go): a cutover that starts in between
// either sees the transaction in WaitTxnIdle or the AddPartitionsToTxn sees
// the hold.
//
// Not done: the state is per kproxy instance (with several instances,
// config control:, transactional ids are not virtualized: txn_instances.go). A client that moves to another
// instance (or outlives a restart) gets INVALID_PRODUCER_ID_MAPPING on its
// next coordinator request and re-initializes; a zombie with the same
// transactional.id on another instance is fenced on a cluster only when this
// instance initializes there. Transactions V2 (KIP-890 part 2, implicit
// AddPartitionsToTxn by produce) is not offered: kproxy presents no
// finalized transaction.version, so clients add partitions explicitly.
//
// Locks: txnProducer.op, then producerIDs.mu; holds.mu is never taken with
// producerIDs.mu held.

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnProducer is kproxy's state for one transactional.id.
type txnProducer struct {
	id string

	// op serializes the coordinator requests of one transactional id: each
	// reads the state, talks to an upstream coordinator and moves the state
	// on the answer, so two must not interleave. It is held across upstream
	// I/O (bounded by the request context), never under producerIDs.mu.
	// Clients send these requests one at a time anyway.
	op sync.Mutex

	// The fields below are guarded by producerIDs.mu.
	vpid      int64 // 0 until the first InitProducerId
	vepoch    int16
	prevPID   int64 // the virtual session before the last InitProducerId,
	prevEpoch int16 // so a retried InitProducerId gets the same answer
	timeout   int32 // transaction.timeout.ms the client asked for
	sessions  map[string]upstreamPID
	cluster   string // the open transaction's cluster; "" between transactions
	last      string // the cluster of the last transaction (EndTxn retries go there)
	begun     time.Time
	topics    map[string]struct{} // topics in the open transaction, or being added to it

	// seqCluster is the cluster the client's sequence numbers last
	// advanced on, since its epoch began ("" none yet). bases holds, per
	// cluster session and partition, the client sequence that upstream
	// sequence 0 stands for (see rebaseSequence).
	seqCluster string
	bases      map[string]map[txnPartition]int32

	// used is when a request last named this transactional id or its
	// PID, for expiry (limits.transactional_idle; state_expiry.go);
	// expired is set when it is dropped, for requests that found it
	// before.
	used    time.Time
	expired bool
}

type txnPartition struct {
	topic     string
	partition int32
}

// txnLookup returns the state of a transactional id, or nil.
func (p *producerIDs) txnLookup(id string) *txnProducer {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.txns[id]
	if t != nil {
		t.used = p.clock()
	}
	return t
}

// txnGet returns the state of a transactional id, creating it.
func (p *producerIDs) txnGet(id string) *txnProducer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.txns == nil {
		p.txns = map[string]*txnProducer{}
		p.txnPIDs = map[int64]*txnProducer{}
	}
	t := p.txns[id]
	if t == nil {
		t = &txnProducer{id: id, sessions: map[string]upstreamPID{}, topics: map[string]struct{}{}, prevPID: -1, prevEpoch: -1,
			bases: map[string]map[txnPartition]int32{}}
		p.txns[id] = t
	}
	t.used = p.clock()
	return t
}

// txnChangedLocked wakes WaitTxnIdle callers; p.mu is held.
func (p *producerIDs) txnChangedLocked() {
	if p.txnChanged != nil {
		close(p.txnChanged)
		p.txnChanged = nil
	}
}

// fencedCode is PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH for request
// versions before KIP-588 introduced PRODUCER_FENCED (fencedSince).
func fencedCode(version, fencedSince int16) int16 {
	if version < fencedSince {
		return kerr.InvalidProducerEpoch.Code
	}
	return kerr.ProducerFenced.Code
}

// txnCheck validates a coordinator request's virtual PID and epoch against
// the transactional id's current session, as the Kafka coordinator does:
// another PID is INVALID_PRODUCER_ID_MAPPING, another epoch is fenced. The
// caller holds t.op.
func (p *producerIDs) txnCheck(t *txnProducer, pid int64, epoch int16, version, fencedSince int16) int16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case t == nil || t.expired || t.vpid == 0 || pid != t.vpid:
		// An expired id answers as a coordinator answers an id it
		// expired: the client re-initializes (state_expiry.go).
		return kerr.InvalidProducerIDMapping.Code
	case epoch != t.vepoch:
		return fencedCode(version, fencedSince)
	}
	return 0
}

// txnEnter starts serving a coordinator request of a transaction: it finds
// the transactional id, takes its op lock and checks the request's PID and
// epoch (txnCheck). On 0 the caller owns t.op and must unlock it; on an
// error code nothing is held.
func (p *producerIDs) txnEnter(id string, pid int64, epoch int16, version, fencedSince int16) (*txnProducer, int16) {
	t := p.txnLookup(id)
	if t == nil {
		return nil, kerr.InvalidProducerIDMapping.Code
	}
	t.op.Lock()
	if code := p.txnCheck(t, pid, epoch, version, fencedSince); code != 0 {
		t.op.Unlock()
		return nil, code
	}
	return t, 0
}

// txnRoute is the cluster a transactional id's coordinator requests that
// belong to no transaction (FindCoordinator, DescribeTransactions) go to: the
// open transaction's, else the last one's, else routes.default.
func (s *Server) txnRoute(id string) string {
	p := &s.pids
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.txns[id]; t != nil {
		if t.cluster != "" {
			return t.cluster
		}
		if t.last != "" {
			return t.last
		}
	}
	return s.routes().TxnCluster(id)
}

// txnOpenCluster is the cluster of id's open transaction, "" if none.
func (p *producerIDs) txnOpenCluster(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.txns[id]; t != nil {
		return t.cluster
	}
	return ""
}

// txnIncludes says whether id's open transaction includes topic: its produce
// goes on through a hold of the topic, since the hold waits for it to end.
func (p *producerIDs) txnIncludes(id *string, topic string) bool {
	if id == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.txns[*id]
	if t == nil || t.cluster == "" {
		return false
	}
	_, ok := t.topics[topic]
	return ok
}

// txnUpstream returns the upstream session a transactional batch of virtual
// (vpid, vepoch) is written with on cluster, and the batch's upstream first
// sequence. The transaction must be open on cluster.
func (p *producerIDs) txnUpstream(vpid int64, vepoch int16, cluster string, tp txnPartition, seq int32) (upstreamPID, int32, int16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.txnPIDs[vpid]
	switch {
	case t == nil:
		return upstreamPID{}, 0, kerr.InvalidProducerIDMapping.Code
	case vepoch != t.vepoch:
		// What a broker answers a batch from a fenced epoch.
		return upstreamPID{}, 0, kerr.InvalidProducerEpoch.Code
	case t.cluster != cluster || tp.partition < 0:
		return upstreamPID{}, 0, kerr.InvalidTxnState.Code
	}
	u, ok := t.sessions[cluster]
	if !ok {
		return u, 0, kerr.InvalidTxnState.Code
	}
	t.used = p.clock()
	return u, t.rebaseSequenceLocked(cluster, tp, seq), 0
}

// rebaseSequenceLocked maps a client sequence to the upstream session's.
// A client's sequences continue per partition across transactions of one
// epoch, wherever kproxy sends them, but a broker takes a first sequence
// other than 0 only from a producer it never saw on a partition that once
// held records (KAFKA-15591 refuses it on a never-written partition, and a
// new epoch must start at 0). So every upstream session starts each
// partition at 0: its first batch there fixes the base, and later batches
// (and retries of that one) are shifted by it, wrapping as sequences do at
// 2^31. A session is re-initialized before a transaction that returns to a
// cluster after sequences advanced elsewhere (txnSessionFor), which starts
// it at 0 again. p.mu is held.
func (t *txnProducer) rebaseSequenceLocked(cluster string, tp txnPartition, seq int32) int32 {
	if seq < 0 {
		return seq
	}
	b := t.bases[cluster]
	if b == nil {
		b = map[txnPartition]int32{}
		t.bases[cluster] = b
	}
	base, ok := b[tp]
	if !ok {
		b[tp] = seq
		return 0
	}
	d := int64(seq) - int64(base)
	if d < 0 {
		d += math.MaxInt32 + 1
	}
	return int32(d)
}

// txnSessionFor returns t's upstream session for a transaction on cluster,
// the caller holds t.op. When no transaction is open, the session is
// created if missing (the first transaction there), and re-created if the
// client's sequences advanced on another cluster since it was last used, so
// the broker sees sequences start at 0 again (rebaseSequenceLocked).
func (rc *reqCtx) txnSessionFor(t *txnProducer, cluster string) (upstreamPID, int16) {
	p := &rc.srv().pids
	p.mu.Lock()
	u, ok := t.sessions[cluster]
	if t.cluster == "" && t.seqCluster != "" && t.seqCluster != cluster {
		ok = false
	}
	timeout := t.timeout
	p.mu.Unlock()
	if ok {
		return u, 0
	}
	u, code := rc.initTxnUpstream(cluster, t.id, timeout)
	if code != 0 {
		return u, code
	}
	p.mu.Lock()
	t.sessions[cluster] = u
	t.bases[cluster] = nil
	p.mu.Unlock()
	return u, 0
}

// initTxnUpstream runs InitProducerId(transactional.id) on cluster's
// coordinator. The cluster's client finds the coordinator and follows
// NOT_COORDINATOR; CONCURRENT_TRANSACTIONS (an older transaction still
// aborting) comes back as a code, which every client retries.
func (rc *reqCtx) initTxnUpstream(cluster, id string, timeout int32) (upstreamPID, int16) {
	uc, err := rc.clusterFor(cluster)
	if err != nil {
		return upstreamPID{}, kerr.CoordinatorNotAvailable.Code
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = kmsg.StringPtr(id)
	req.TransactionTimeoutMillis = timeout
	req.ProducerID, req.ProducerEpoch = -1, -1
	ctx, cancel := rc.ctx()
	defer cancel()
	resp, err := rc.initProducerID(ctx, uc, req)
	if err != nil {
		rc.cc.log.Warn("upstream InitProducerId for a transactional id failed", "cluster", cluster, "transactional_id", id, "error", err)
		return upstreamPID{}, kerr.CoordinatorNotAvailable.Code
	}
	if resp.ErrorCode != 0 {
		return upstreamPID{}, resp.ErrorCode
	}
	return upstreamPID{resp.ProducerID, resp.ProducerEpoch}, 0
}

// nextTxnVirtual decides the virtual session InitProducerId answers, as the
// Kafka coordinator does for one transactional id: the same PID with the
// next epoch (a new producer, or a KIP-360 bump by the current one), a new
// PID when the epoch is exhausted or the id is new here, the current
// session again for a retried bump, and fenced for an older producer.
// retry says the answer is already in place. p.mu is held.
func (t *txnProducer) nextTxnVirtual(reqPID int64, reqEpoch int16, version int16) (vpid int64, vepoch int16, retry bool, code int16) {
	switch {
	case t.vpid == 0:
		return newVirtualPID(), 0, false, 0
	case reqPID < 0:
		// A new producer for the id fences the current one.
	case reqPID == t.vpid && reqEpoch == t.vepoch:
		// The current producer bumps its epoch (KIP-360).
	case reqPID == t.prevPID && reqEpoch == t.prevEpoch:
		return t.vpid, t.vepoch, true, 0
	case reqPID == t.vpid && reqEpoch < t.vepoch:
		return 0, 0, false, fencedCode(version, 4)
	default:
		return 0, 0, false, kerr.InvalidProducerIDMapping.Code
	}
	if t.vepoch >= math.MaxInt16-1 {
		return newVirtualPID(), 0, false, 0
	}
	return t.vpid, t.vepoch + 1, false, 0
}

// initTxnProducer answers InitProducerId for a transactional id with a
// virtual session, after re-initializing the id upstream (see the file
// comment). On an upstream error the client gets that error and retries;
// the virtual session does not move.
func (rc *reqCtx) initTxnProducer(req *kmsg.InitProducerIDRequest) *kmsg.InitProducerIDResponse {
	s := rc.srv()
	p := &s.pids
	id := *req.TransactionalID
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	t := p.txnGet(id)
	t.op.Lock()
	for p.txnExpired(t) {
		// Expired between the lookup and the lock (state_expiry.go):
		// start from the fresh state the id has now.
		t.op.Unlock()
		t = p.txnGet(id)
		t.op.Lock()
	}
	defer t.op.Unlock()

	reqPID, reqEpoch := int64(-1), int16(-1)
	if req.Version >= 3 {
		reqPID, reqEpoch = req.ProducerID, req.ProducerEpoch
	}
	p.mu.Lock()
	vpid, vepoch, retry, code := t.nextTxnVirtual(reqPID, reqEpoch, req.Version)
	clusters := map[string]bool{s.routes().TxnCluster(id): true}
	for c := range t.sessions {
		clusters[c] = true
	}
	p.mu.Unlock()
	if code != 0 || retry {
		resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = code, -1, -1
		if retry {
			resp.ProducerID, resp.ProducerEpoch = vpid, vepoch
		}
		return resp
	}

	names := make([]string, 0, len(clusters))
	for c := range clusters {
		names = append(names, c)
	}
	sort.Strings(names)
	sessions := map[string]upstreamPID{}
	for _, c := range names {
		u, code := rc.initTxnUpstream(c, id, req.TransactionTimeoutMillis)
		if code != 0 {
			// Sessions already re-initialized stay usable (the old ones
			// are fenced upstream); the client retries the whole init.
			p.mu.Lock()
			for c, u := range sessions {
				t.sessions[c] = u
				t.bases[c] = nil
			}
			p.mu.Unlock()
			resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = code, -1, -1
			return resp
		}
		sessions[c] = u
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if t.vpid != 0 && t.vpid != vpid {
		delete(p.txnPIDs, t.vpid)
	}
	t.prevPID, t.prevEpoch = reqPID, reqEpoch
	t.vpid, t.vepoch = vpid, vepoch
	t.timeout = req.TransactionTimeoutMillis
	t.sessions = sessions
	// Fresh sessions everywhere, and the client starts its sequences at 0.
	t.bases = map[string]map[txnPartition]int32{}
	t.seqCluster = ""
	// Re-initializing aborted any open transaction upstream.
	t.endLocked(p)
	p.txnPIDs[vpid] = t
	resp.ProducerID, resp.ProducerEpoch = vpid, vepoch
	return resp
}

// endLocked closes t's open transaction, if any; p.mu is held.
func (t *txnProducer) endLocked(p *producerIDs) {
	if t.cluster != "" {
		t.last = t.cluster
	}
	t.cluster = ""
	if len(t.topics) > 0 {
		t.topics = map[string]struct{}{}
	}
	p.txnChangedLocked()
}

// txnAddTopics records topics as part of t's transaction before the hold is
// looked at; it returns the ones that were not yet.
func (p *producerIDs) txnAddTopics(t *txnProducer, topics []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var added []string
	for _, name := range topics {
		if _, ok := t.topics[name]; !ok {
			t.topics[name] = struct{}{}
			added = append(added, name)
		}
	}
	return added
}

// txnDropTopics undoes txnAddTopics for topics that did not make it into
// the transaction.
func (p *producerIDs) txnDropTopics(t *txnProducer, topics []string) {
	if len(topics) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range topics {
		delete(t.topics, name)
	}
	p.txnChangedLocked()
}

// txnBegin marks t's transaction open on cluster, if it is not open yet.
func (p *producerIDs) txnBegin(t *txnProducer, cluster string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.cluster == "" {
		t.cluster, t.begun, t.seqCluster = cluster, time.Now(), cluster
		p.txnChangedLocked() // WaitTxnIdle starts this transaction's timeout clock
	}
}

// txnEnd closes t's transaction on cluster (EndTxn answered).
func (p *producerIDs) txnEnd(t *txnProducer, cluster string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.cluster == cluster {
		t.endLocked(p)
	}
}

// txnEndRetriable says an EndTxn answer leaves the transaction open: the
// client retries EndTxn (the coordinator moved, or was busy).
func txnEndRetriable(code int16) bool {
	if code == kerr.ConcurrentTransactions.Code {
		return true
	}
	err := kerr.ErrorForCode(code)
	return err != nil && kerr.IsRetriable(err)
}

// txnClusterError explains a transaction that would span clusters.
func txnClusterError(txnID, topic, topicCluster, txnCluster string) string {
	if txnCluster == "" {
		return fmt.Sprintf("kproxy: transactional id %q has no open transaction; a transactional produce to topic %q must follow AddPartitionsToTxn", txnID, topic)
	}
	return fmt.Sprintf("kproxy: the open transaction of transactional id %q is on the %s cluster, but topic %q is routed to %s; a transaction may not span clusters", txnID, txnCluster, topic, topicCluster)
}

// WaitTxnIdle returns once no open transaction (begun, EndTxn not answered
// yet) includes a partition of topic. The cutover controller calls it with
// the topic's produce held, after WaitProduceIdle: new transactions on the
// topic wait for the hold, and the open ones finish on the cluster they
// began on, so no transaction straddles the flip.
//
// A transaction whose client went away is waited for until its
// transaction.timeout.ms has passed and its coordinator says it is no longer
// ongoing (the coordinator aborts it): treating it as ended any earlier
// would let a late EndTxn(commit) land on the old cluster after the flip.
func (s *Server) WaitTxnIdle(ctx context.Context, topic string) error {
	p := &s.pids
	for {
		p.mu.Lock()
		var open []*txnProducer
		var overdue []*txnProducer
		next := time.Duration(-1)
		for _, t := range p.txns {
			if _, ok := t.topics[topic]; !ok {
				continue
			}
			open = append(open, t)
			if t.cluster == "" {
				continue // being added; the AddPartitionsToTxn answer decides
			}
			wait := time.Until(t.begun.Add(time.Duration(t.timeout) * time.Millisecond))
			if wait <= 0 {
				overdue = append(overdue, t)
				wait = time.Second // ask the coordinator again later
			}
			if next < 0 || wait < next {
				next = wait
			}
		}
		if len(open) == 0 {
			p.mu.Unlock()
			return nil
		}
		if p.txnChanged == nil {
			p.txnChanged = make(chan struct{})
		}
		changed := p.txnChanged
		p.mu.Unlock()

		for _, t := range overdue {
			s.endIfNotOngoing(ctx, t)
		}
		var timer <-chan time.Time
		var tm *time.Timer
		if next >= 0 {
			tm = time.NewTimer(next)
			timer = tm.C
		}
		stop := func() {
			if tm != nil {
				tm.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			ids := make([]string, 0, len(open))
			for _, t := range open {
				ids = append(ids, t.id)
			}
			sort.Strings(ids)
			return fmt.Errorf("transactions of %s still open on topic %s: %w", strings.Join(ids, ", "), topic, ctx.Err())
		case <-changed:
		case <-timer:
		}
		stop()
	}
}

// endIfNotOngoing asks the coordinator of an overdue transaction whether it
// is still ongoing and closes it here if not (the coordinator aborted it on
// its timeout, or a new session fenced it). It leaves a transaction alone
// while one of its requests is being served.
func (s *Server) endIfNotOngoing(ctx context.Context, t *txnProducer) {
	if !t.op.TryLock() {
		return
	}
	defer t.op.Unlock()
	p := &s.pids
	p.mu.Lock()
	cluster := t.cluster
	u, ok := t.sessions[cluster]
	topics := make([]string, 0, len(t.topics))
	for tp := range t.topics {
		topics = append(topics, tp)
	}
	p.mu.Unlock()
	uc, found := s.cluster(cluster)
	if cluster == "" || !ok || !found {
		return
	}
	if _, has := uc.apiVersions()[kmsg.DescribeTransactions.Int16()]; !has {
		// Kafka before 3.0 has no DescribeTransactions (KIP-664): ask the
		// partition leaders instead.
		if open, err := s.txnRecordsOpen(ctx, uc, topics, u); err == nil && !open {
			s.log.Warn("an open transaction outlived its timeout and none of its partitions holds its records open; no longer waiting for it", "transactional_id", t.id, "cluster", cluster)
			p.txnEnd(t, cluster)
		}
		return
	}
	req := kmsg.NewPtrDescribeTransactionsRequest()
	req.TransactionalIDs = []string{t.id}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, uc.cl)
	if err != nil || len(resp.TransactionStates) != 1 || resp.TransactionStates[0].ErrorCode != 0 {
		return
	}
	st := resp.TransactionStates[0]
	switch {
	case st.ProducerID != u.pid || st.ProducerEpoch != u.epoch:
		// The coordinator bumped the epoch (a timeout abort, or another
		// producer): this session's transaction is over.
	case st.State == "Empty" || st.State == "CompleteCommit" || st.State == "CompleteAbort" || st.State == "Dead":
	default:
		return
	}
	s.log.Warn("an open transaction outlived its timeout and its coordinator ended it; no longer waiting for it", "transactional_id", t.id, "cluster", cluster, "state", st.State)
	p.txnEnd(t, cluster)
}

// txnRecordsOpen reports whether any partition of topics on uc holds an
// open transaction of producer u (DescribeProducers, Kafka 2.8+: a
// transaction's records stay open until its coordinator writes the abort or
// commit marker). A partition the transaction only added, with no records,
// holds nothing a late commit could expose.
func (s *Server) txnRecordsOpen(ctx context.Context, uc *upstreamCluster, topics []string, u upstreamPID) (bool, error) {
	req := kmsg.NewPtrDescribeProducersRequest()
	for _, topic := range topics {
		rt := kmsg.NewDescribeProducersRequestTopic()
		rt.Topic = topic
		n := uc.partitionCount(topic)
		if n < 0 {
			return true, fmt.Errorf("partitions of %s unknown", topic)
		}
		for i := 0; i < n; i++ {
			rt.Partitions = append(rt.Partitions, int32(i))
		}
		req.Topics = append(req.Topics, rt)
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, uc.cl)
	if err != nil {
		return true, err
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				return true, kerr.ErrorForCode(rp.ErrorCode)
			}
			for _, ap := range rp.ActiveProducers {
				if ap.ProducerID == u.pid && ap.CurrentTxnStartOffset >= 0 {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// txnVirtualizeState shows a described transaction with the virtual PID and
// epoch when its producer is this instance's session on cluster.
func (p *producerIDs) txnVirtualizeState(cluster string, st *kmsg.DescribeTransactionsResponseTransactionState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.txns[st.TransactionalID]
	if t == nil || t.vpid == 0 {
		return
	}
	if u, ok := t.sessions[cluster]; ok && u.pid == st.ProducerID && u.epoch == st.ProducerEpoch {
		st.ProducerID, st.ProducerEpoch = t.vpid, t.vepoch
	}
}
