package proxy

// Produce (key 0), accepted v3-13 (intersected with the clusters).
// Route: each topic goes to its produce route's cluster, each partition to
// that cluster's leader; one sub-request per upstream broker, written in the
// client's order on this connection's produce connection to that broker, so
// idempotent sequences arrive in order.
// Every partition sent upstream is answered: a leader that failed or left
// one out gives it NOT_LEADER_FOR_PARTITION (split_leader.go).
// Rewrites: virtual producer ids in batch headers become the cluster's
// (ident_pid.go; header bytes and CRC only, never decompressed); answers go
// through virt.go (no epochs, virtual offsets through the partition's map,
// CurrentLeader (v10+) and Brokers name this instance) and carry the topic
// id the client named. A transactional
// produce to a topic off its open transaction's cluster is refused per
// partition with INVALID_TXN_STATE and a message saying why; one whose
// transaction already includes a held topic is not held (txn_producers.go).
// Resends across a move: an idempotent batch of a moved topic that the old
// home already has goes there, on its old session, and is answered as a
// duplicate (ident_pid_resend.go, decision 008).
// Held topics (a cutover, cutover_hold.go): a request naming a held topic
// and free ones is split; the free ones go upstream at once and count as
// answered when their broker answers, the held part waits for the release,
// and the one response merges both in the request's order.
// acks=0: forwarded without waiting; the client gets no response.
// A large Produce from a plaintext client may arrive with its large
// records sections as batch headers only, their bodies in kernel pipes
// (rc.splice, produce_splice.go, decision 010): the plan is made from the
// headers (sparse), and the sub-requests are written with the bodies
// spliced into them; a request naming a replicated topic has its bodies
// read back into memory first (materialize) and goes on as any other.

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleProduce(rc *reqCtx, req *kmsg.ProduceRequest) func() kmsg.Response {
	sc := rc.produce
	if sc == nil { // not from the pool (acks=0): used once
		sc = newProduceScratch()
		sc.pinned = true
	}
	sc.rc, sc.req, sc.direct = rc, req, false
	s := rc.srv()
	router := s.routes()
	if rc.splice != nil && produceNamesReplicated(s, router, req) {
		// Read by the spliced path, but a topic became replicated since
		// (a cutover may hold its part past this call): its bodies come
		// back into memory and the request goes the buffered way
		// (produce_splice.go).
		body, err := rc.splice.materialize(req)
		if err != nil {
			rc.cc.log.Warn("closing client connection: a spliced produce could not be read back", "error", err)
			rc.cc.nc.Close()
			return nil
		}
		rc.body, rc.splice = body, nil
	}
	look := newLeaderLookup(rc)
	resp := &sc.resp
	*resp = kmsg.ProduceResponse{Version: req.Version, Topics: resp.Topics[:0]}
	clear(resp.Topics[:cap(resp.Topics)]) // its partition arrays are the last answer's

	var subs []*kmsg.ProduceRequest // by leader (asked.order), unless raw
	asked := &sc.asked
	nparts := 0
	for _, t := range req.Topics {
		nparts += len(t.Partitions)
	}
	asked.reset(nparts)
	clear(sc.plans) // drop the last request's references
	plans := sc.plans[:0]
	idsRewritten := false
	var held []*heldProduce
	var counted []string // replicated topics counted in flight until answered
	for _, t := range req.Topics {
		name := t.Topic
		if req.Version >= 13 {
			name, _ = s.topicIDs.name(t.TopicID)
		}
		cluster := router.ProduceCluster(name, rc.client)
		keyed := false // idempotent batches are watched (produce_unanswered.go)
		if name != "" && router.Replicated(name) {
			// Count first, then look at the hold: a cutover that starts
			// between the two either sees this request in flight or this
			// request sees the hold (cutover_hold.go).
			s.holds.counter(name).add(1)
			// An open transaction that includes the topic goes on to
			// its cluster: the cutover waits for it (WaitTxnIdle).
			if s.holds.isHeld(name) && !s.pids.txnIncludes(req.TransactionID, name) {
				// Cutover in progress: queue this topic's part, with
				// its records copied (the frame buffer is reused).
				hp := &heldProduce{rc: rc, done: make(chan struct{}),
					req: &kmsg.ProduceRequest{Version: req.Version, TransactionID: req.TransactionID, Acks: req.Acks, TimeoutMillis: req.TimeoutMillis}}
				ht := kmsg.ProduceRequestTopic{Topic: t.Topic, TopicID: t.TopicID}
				// A resend of a batch whose answer from this cluster
				// was lost goes on to it, which answers it once; the
				// drain waits for that answer (produce_unanswered.go).
				var pass []kmsg.ProduceRequestTopicPartition
				bounce := false
				for _, p := range t.Partitions {
					k, ok := batchKeyOf(name, p.Partition, p.Records)
					if ok && req.Acks != 0 && s.holds.isUnanswered(k, cluster) {
						pass = append(pass, p)
						continue
					}
					bounce = bounce || ok && req.Acks != 0 && s.holds.producerUnanswered(name, cluster, k.pid)
					p.Records = append([]byte(nil), p.Records...)
					ht.Partitions = append(ht.Partitions, p)
				}
				if bounce {
					// The producer resends an earlier batch only once
					// this request is answered: held, it would keep
					// that resend, and the drain, waiting. Never sent,
					// it is answered at once, retriably.
					vt := kmsg.ProduceRequestTopic{Topic: t.Topic, TopicID: t.TopicID}
					for _, p := range ht.Partitions {
						addProducePartition(resp, vt, producePartitionError(p.Partition, kerr.NotLeaderForPartition.Code))
					}
					ht.Partitions = nil
					if len(pass) == 0 {
						s.holds.counter(name).add(-1)
						continue
					}
					t.Partitions = pass
				}
				hp.req.Topics = []kmsg.ProduceRequestTopic{ht}
				if len(ht.Partitions) > 0 && s.holds.enqueue(name, hp) {
					held = append(held, hp)
					// The rest may outlive a hold's timeout: the
					// scratch is not given back (release).
					sc.pinned = true
					if len(pass) == 0 {
						s.holds.counter(name).add(-1)
						continue
					}
					t.Partitions = pass
				}
			}
			counted = append(counted, name)
			keyed = req.Acks != 0
		}
		ts := s.topicStats(name)
		virtualID := t.TopicID
		vt := kmsg.ProduceRequestTopic{Topic: t.Topic, TopicID: virtualID} // for answers
		for _, p := range t.Partitions {
			// sparse: the records are a spliced section's batch
			// headers, their bodies in pipes (produce_splice.go).
			sparse := rc.splice.sparse(p.Records)
			// The key is read before any producer id rewrite.
			var key batchKey
			var isKeyed bool
			if keyed {
				key, isKeyed = batchKeyOf(name, p.Partition, p.Records)
			}
			// pc is where this partition's batch goes: the topic's
			// cluster, or the old home of a moved topic for a batch
			// already written there (ident_pid_resend.go).
			pc, resent, code := cluster, false, kerr.UnknownTopicID.Code
			if name != "" {
				pc, resent, code = rc.routeResend(cluster, name, p.Partition, p.Records, sparse)
			}
			ref := brokerRef{}
			if code == 0 {
				ref, code = look.find(pc, name, p.Partition)
			}
			if code == 0 {
				code = s.leadsHere(name, p.Partition) // instances.go
			}
			if code == 0 && req.TransactionID != nil {
				if txnCluster := s.txnProduceCluster(*req.TransactionID); txnCluster != cluster {
					pe := producePartitionError(p.Partition, kerr.InvalidTxnState.Code)
					pe.ErrorMessage = kmsg.StringPtr(txnClusterError(*req.TransactionID, name, cluster, txnCluster))
					addProducePartition(resp, vt, pe)
					continue
				}
			}
			if code == 0 && req.Version >= 13 {
				_, up, ok := s.upstreamTopicID(pc, virtualID)
				if !ok {
					code = kerr.UnknownTopicID.Code
				} else {
					if up != virtualID {
						idsRewritten = true
					}
					t.TopicID = up // the sub-request names the cluster's id
				}
			}
			var pl partPlan
			if code == 0 {
				pl, code = s.offsetsPlan(pc, name, p.Partition, false)
			}
			if code == 0 && !resent {
				code = rc.rewriteProducerIDs(pc, txnPartition{name, p.Partition}, p.Records, sparse)
			}
			if code != 0 {
				addProducePartition(resp, vt, producePartitionError(p.Partition, code))
				continue
			}
			asked.ask(ref, partKey{topic: t.Topic, id: t.TopicID, partition: p.Partition})
			plans = append(plans, producePlan{partPlan: pl, name: name, topic: vt,
				up: kmsg.ProduceRequestTopic{Topic: t.Topic, TopicID: t.TopicID}, part: p,
				note: ts.noteProduce(pc, p.Partition, p.Records, sparse), key: key, keyed: isKeyed})
		}
	}

	// One upstream broker takes every partition and the request needs no
	// rewriting beyond what was done in place (producer ids): forward the
	// client's own bytes, with no re-encoding.
	sc.plans = plans
	order := asked.order
	raw := len(order) == 1 && len(resp.Topics) == 0 && !idsRewritten && len(held) == 0
	if !raw {
		// Sub-requests are built only when the client's own bytes
		// cannot go upstream as they are (they cost allocations).
		subs = make([]*kmsg.ProduceRequest, len(order))
		for e, pl := range plans {
			l := asked.parts[e].leader
			if subs[l] == nil {
				subs[l] = &kmsg.ProduceRequest{Version: req.Version, TransactionID: req.TransactionID, Acks: req.Acks, TimeoutMillis: req.TimeoutMillis}
			}
			st := lastProduceTopic(subs[l], pl.up)
			st.Partitions = append(st.Partitions, pl.part)
		}
	}
	if req.Acks == 0 {
		sc.pinned = true
		defer func() {
			// Nothing will answer: sent is as far as it goes.
			for _, name := range counted {
				s.holds.counter(name).add(-1)
			}
		}()
		for i := range plans {
			plans[i].note.unacked()
		}
		for i, ref := range order {
			if raw {
				rc.sendRaw(ref.cluster, ref.id, ref.addr, req, false)
			} else if u, err := rc.cc.upstream(ref.cluster, ref.id, ref.addr, classProduce); err == nil {
				_, _ = u.send(subs[i], rc.clientID, false)
			}
		}
		if len(held) > 0 {
			// Held parts keep this request in the connection's in-flight
			// bound until the hold releases them (conn.go, dispatch).
			return func() kmsg.Response {
				for _, hp := range held {
					_ = hp.wait(10 * time.Minute)
				}
				return nil
			}
		}
		return nil
	}

	// The replicated topics' in-flight counts end when the brokers
	// answered (flightRelease), not when this response is built: it may
	// wait in the connection's response order behind a held request, and
	// a cutover of one of these topics must not wait with it.
	var flights *flightRelease
	if len(counted) > 0 {
		flights = newFlightRelease(&s.holds, counted)
	}
	// Each call's idempotent batches of replicated topics, for its
	// watcher: a lost answer keeps them in flight (produce_unanswered.go).
	// They are the watcher's own, not the scratch's: it hears the call end
	// on the upstream reader, possibly after this request's answer was
	// written and the scratch given back and reused.
	var keys [][]batchKey
	for e := range plans {
		if pl := &plans[e]; pl.keyed {
			if keys == nil {
				keys = make([][]batchKey, len(order))
			}
			l := asked.parts[e].leader
			keys[l] = append(keys[l], pl.key)
		}
	}
	pend := sc.pending(len(order))
	for i, ref := range order {
		var up kmsg.Request = req
		if !raw {
			up = subs[i]
		}
		if flights != nil {
			flights.sending()
			var w answerWatcher = flights
			if keys != nil && len(keys[i]) > 0 {
				w = &producedBatches{h: &s.holds, cluster: ref.cluster, keys: keys[i], flights: flights}
			}
			rc.writeWatched(pend[i], ref.cluster, ref.id, ref.addr, up, raw, w)
		} else {
			rc.writeTo(pend[i], ref.cluster, ref.id, ref.addr, up, raw, true, nil, false)
		}
	}
	if flights != nil {
		flights.answered(nil) // every call is sent: the last answer ends it
	}
	sc.raw, sc.held = raw, held
	// One call and nothing held: its answer is the whole rest, which the
	// goroutine that reads it may run (directProduce).
	sc.direct = len(pend) == 1 && pend[0].call != nil && len(held) == 0
	return sc.run
}

// produceScratch is what one forwarded Produce uses from its decoding to
// its answer: its slot (with the reqCtx), the decoded request, the plans,
// the upstream calls and the answer. It comes from producePool in
// dispatch and goes back in finishSlot once the answer is written, so a
// forwarded Produce allocates nothing of its own in steady state. A
// request whose rest may outlive its answer (held parts, whose wait can
// time out; acks=0, which has no answer) is pinned: it is left to the GC.
type produceScratch struct {
	slot    slot
	decoded kmsg.ProduceRequest
	pinned  bool

	rc     *reqCtx
	req    *kmsg.ProduceRequest
	resp   kmsg.ProduceResponse // the client's answer
	upResp kmsg.ProduceResponse // an upstream answer, decoded
	asked  partsAsked
	plans  []producePlan
	pends  []pending
	pend   []*pending
	raw    bool
	held   []*heldProduce
	frames heldFrames // upstream answer buffers the answer aliases
	pass   passthrough
	hold   heldResponse

	run func() kmsg.Response // rest, bound once

	// direct: the request's rest is its one call's answer (handleProduce);
	// dstate is who runs it when the read loop hands it over
	// (directProduce): a directState, reset at each dispatch.
	direct bool
	dstate atomic.Int32
}

// directState is a Produce's progress through directProduce: the read
// loop arms it once its synchronous part is done, the call's end (its
// hook, ending) notes that it was answered; whichever comes second runs
// the rest and writes the answer.
type directState = int32

const (
	directNone     directState = iota // neither yet
	directArmed                       // handed over: the call's end answers the client
	directAnswered                    // the call ended first: the read loop answers
)

// ending is the call's hook (upstreamCall.then), before its token: it
// reports whether the read loop handed the answer over.
func (sc *produceScratch) ending() bool {
	if sc.dstate.CompareAndSwap(directNone, directAnswered) {
		return false
	}
	return sc.dstate.Load() == directArmed
}

// ended answers the client (after the token: the rest finds the answer).
func (sc *produceScratch) ended() { sc.slot.rc.cc.answerDirect(&sc.slot) }

var producePool = sync.Pool{New: func() any { return newProduceScratch() }}

func newProduceScratch() *produceScratch {
	sc := &produceScratch{}
	sc.run = sc.rest
	return sc
}

// decodeInto empties the scratch's request for the next decode, keeping
// its topic array.
func (sc *produceScratch) decodeInto() *kmsg.ProduceRequest {
	topics := sc.decoded.Topics[:0]
	sc.decoded = kmsg.ProduceRequest{Topics: topics}
	return &sc.decoded
}

// release gives the scratch back to the pool (finishSlot, after the
// answer is written and its frames released), unless it is pinned.
func (sc *produceScratch) release() {
	if sc.pinned {
		return
	}
	sc.rc, sc.req, sc.held = nil, nil, nil
	sc.pass, sc.hold = passthrough{}, heldResponse{}
	producePool.Put(sc)
}

// pending is n pendings for the request's upstream calls, reused (with
// their calls) from the scratch's last request.
func (sc *produceScratch) pending(n int) []*pending {
	if len(sc.pends) < n {
		sc.pends = make([]pending, n)
	}
	sc.pend = sc.pend[:0]
	for i := range n {
		sc.pend = append(sc.pend, &sc.pends[i])
	}
	return sc.pend
}

// answered wraps the client's answer so that the upstream buffers it
// aliases go back to their pool once it is written.
func (sc *produceScratch) answered(resp kmsg.Response) kmsg.Response {
	if len(sc.frames) == 0 {
		return resp
	}
	sc.hold = heldResponse{Response: resp, frames: sc.frames}
	return &sc.hold
}

// rest is the Produce handler's rest: the upstream answers, translated and
// merged (run on the connection's write loop).
func (sc *produceScratch) rest() kmsg.Response {
	rc, s, req, resp, pend, raw, held := sc.rc, sc.rc.srv(), sc.req, &sc.resp, sc.pend, sc.raw, sc.held
	asked, plans, order := &sc.asked, sc.plans, sc.asked.order
	sc.frames = sc.frames[:0]
	{
		if len(held) > 0 {
			// The held topics' answers join the others' in the order
			// the request named them.
			defer func() {
				addHeldAnswers(rc, resp, held)
				sortProduceResponse(req, resp)
			}()
		}
		for i, p := range pend {
			ref := order[i]
			if raw && p.err == nil {
				// Read from the bytes first: an answer to pass through
				// as it is needs no decoding (which allocates).
				body, err := p.call.wait(p.u, upstreamTimeout(p.req))
				if err == nil && produceAnswerPlain(body, req.Version, asked, plans) {
					if p.call.frame != nil {
						sc.frames = append(sc.frames, p.call)
					}
					for i := range plans {
						plans[i].note.settle()
					}
					sc.upResp = kmsg.ProduceResponse{Version: req.Version, Topics: sc.upResp.Topics[:0]}
					sc.pass = passthrough{Response: &sc.upResp, body: body, frames: sc.frames}
					return &sc.pass
				}
			}
			var stale []string
			// Decoded without copying its strings: they alias the
			// answer's buffer, which the client's answer holds until
			// it is written (frames).
			sc.upResp = kmsg.ProduceResponse{Topics: sc.upResp.Topics[:0]}
			r, body, err := p.responseInto(&sc.upResp, true)
			if err == nil && p.call.frame != nil {
				sc.frames = append(sc.frames, p.call)
			}
			if err == nil && raw && produceAnswerAsIs(r.(*kmsg.ProduceResponse), asked, plans) {
				// The one upstream answered every partition, in order,
				// with nothing to translate: its bytes are the answer.
				for i := range plans {
					plans[i].note.settle()
				}
				sc.pass = passthrough{Response: r, body: body, frames: sc.frames}
				return &sc.pass
			}
			if err == nil {
				pr := r.(*kmsg.ProduceResponse)
				resp.ThrottleMillis = max(resp.ThrottleMillis, pr.ThrottleMillis)
				for _, t := range pr.Topics {
					for _, pp := range t.Partitions {
						e, ok := asked.answered(ref, partKey{topic: t.Topic, id: t.TopicID, partition: pp.Partition})
						if !ok {
							continue // not asked: dropped
						}
						pl := plans[e]
						pl.note.settle()
						s.virtProducePartition(pl.partPlan, &pp)
						if isStaleLeaderCode(pp.ErrorCode) {
							stale = append(stale, pl.name)
						}
						addProducePartition(resp, pl.topic, pp)
					}
				}
				if len(pr.Brokers) > 0 {
					resp.Brokers = s.produceBrokers(rc.cc.lst, pr.Brokers)
				}
			} else {
				asked.failed(ref)
			}
			// Not answered (the connection failed, or the answer left it
			// out): the batch may or may not have been written; the
			// client retries, and idempotent producers de-duplicate.
			for _, e := range asked.missing(ref) {
				pl := plans[e]
				pl.note.settle()
				addProducePartition(resp, pl.topic, producePartitionError(pl.part.Partition, kerr.NotLeaderForPartition.Code))
				stale = append(stale, pl.name)
			}
			s.refreshSoon(ref.cluster, dedupe(stale))
		}
		return sc.answered(resp)
	}
}

// produceNamesReplicated reports whether req names a topic router
// replicates.
func produceNamesReplicated(s *Server, router Router, req *kmsg.ProduceRequest) bool {
	for _, t := range req.Topics {
		name := t.Topic
		if req.Version >= 13 {
			name, _ = s.topicIDs.name(t.TopicID)
		}
		if name != "" && router.Replicated(name) {
			return true
		}
	}
	return false
}

// addHeldAnswers waits for the held parts of a request (released by the
// cutover, to the cluster it chose) and adds their answers to resp.
func addHeldAnswers(rc *reqCtx, resp *kmsg.ProduceResponse, held []*heldProduce) {
	s := rc.srv()
	for _, hp := range held {
		name := hp.req.Topics[0].Topic
		if hp.req.Version >= 13 {
			name, _ = s.topicIDs.name(hp.req.Topics[0].TopicID)
		}
		vt := kmsg.ProduceRequestTopic{Topic: hp.req.Topics[0].Topic, TopicID: hp.req.Topics[0].TopicID}
		if err := hp.wait(10 * time.Minute); err != nil {
			rc.cc.log.Error("held produce request was never released; answering NOT_LEADER so the client retries", "topic", name)
			for _, p := range hp.req.Topics[0].Partitions {
				addProducePartition(resp, vt, producePartitionError(p.Partition, kerr.NotLeaderForPartition.Code))
			}
			continue
		}
		for _, pp := range hp.parts {
			addProducePartition(resp, vt, pp)
		}
	}
}

// sortProduceResponse puts resp's topics, and each topic's partitions, in
// the order req named them. Answers arrive by upstream broker and held
// parts after the rest; a client matching answers by position (the
// protocol gives one answer per request entry) must see request order.
func sortProduceResponse(req *kmsg.ProduceRequest, resp *kmsg.ProduceResponse) {
	type key struct {
		topic string
		id    [16]byte
	}
	topicAt := make(map[key]int, len(req.Topics))
	partAt := make([]map[int32]int, len(req.Topics))
	for i, t := range req.Topics {
		k := key{t.Topic, t.TopicID}
		if _, dup := topicAt[k]; dup {
			continue
		}
		topicAt[k] = i
		partAt[i] = make(map[int32]int, len(t.Partitions))
		for j, p := range t.Partitions {
			if _, dup := partAt[i][p.Partition]; !dup {
				partAt[i][p.Partition] = j
			}
		}
	}
	pos := func(k key) int {
		if i, ok := topicAt[k]; ok {
			return i
		}
		return len(req.Topics) // not asked: last, as they came
	}
	slices.SortStableFunc(resp.Topics, func(a, b kmsg.ProduceResponseTopic) int {
		return cmp.Compare(pos(key{a.Topic, a.TopicID}), pos(key{b.Topic, b.TopicID}))
	})
	for i := range resp.Topics {
		t := &resp.Topics[i]
		at, ok := topicAt[key{t.Topic, t.TopicID}]
		if !ok {
			continue
		}
		parts := partAt[at]
		ppos := func(p int32) int {
			if j, ok := parts[p]; ok {
				return j
			}
			return len(parts)
		}
		slices.SortStableFunc(t.Partitions, func(a, b kmsg.ProduceResponseTopicPartition) int {
			return cmp.Compare(ppos(a.Partition), ppos(b.Partition))
		})
	}
}

// produceAnswerAsIs reports whether the answer of the one upstream a raw
// produce went to can go to the client byte for byte: it answers exactly
// the partitions asked, in request order, without errors (an error may
// need a refresh), leader hints, endpoints or offsets to translate. The
// translation steps would change nothing in it (virtProducePartition on
// an identity plan), so re-encoding it would only cost allocations.
func produceAnswerAsIs(pr *kmsg.ProduceResponse, asked *partsAsked, plans []producePlan) bool {
	if len(pr.Brokers) > 0 {
		return false
	}
	e := 0
	for _, t := range pr.Topics {
		for _, p := range t.Partitions {
			if e >= len(asked.parts) || asked.parts[e].key != (partKey{topic: t.Topic, id: t.TopicID, partition: p.Partition}) {
				return false
			}
			if p.ErrorCode != 0 || p.CurrentLeader.LeaderID >= 0 || p.CurrentLeader.LeaderEpoch != noEpoch || plans[e].offsets != nil {
				return false
			}
			e++
		}
	}
	return e == len(asked.parts)
}

// produceAnswerPlain is produceAnswerAsIs read from the answer's body
// (after its header) without decoding it: kmsg's decoder makes each
// topic's partition array anew, the one allocation a forwarded Produce
// still made. It is stricter where that is simpler (any tagged field, a
// leader hint among them, says no): a no here only means the answer is
// decoded and judged as before.
func produceAnswerPlain(body []byte, version int16, asked *partsAsked, plans []producePlan) bool {
	r := kbin.Reader{Src: body}
	flex := version >= 9
	length := func(short bool) int {
		switch {
		case flex:
			return int(r.Uvarint()) - 1
		case short:
			return int(r.Int16())
		}
		return int(r.Int32())
	}
	skip := func(n int) {
		if n > 0 {
			r.Span(n)
		}
	}
	noTags := func() bool { return !flex || r.Uvarint() == 0 }
	e := 0
	nt := length(false)
	for t := 0; t < nt && r.Ok(); t++ {
		var name []byte
		var id [16]byte
		if version >= 13 {
			copy(id[:], r.Span(16))
		} else if l := length(true); l >= 0 {
			name = r.Span(l)
		}
		np := length(false)
		for q := 0; q < np && r.Ok(); q++ {
			partition, code := r.Int32(), r.Int16()
			r.Int64() // BaseOffset: an identity plan leaves it
			r.Int64() // LogAppendTime
			if version >= 5 {
				r.Int64() // LogStartOffset
			}
			if version >= 8 {
				ne := length(false)
				for x := 0; x < ne && r.Ok(); x++ {
					r.Int32()
					skip(length(true))
					if !noTags() {
						return false
					}
				}
				skip(length(true)) // ErrorMessage
			}
			if !noTags() || !r.Ok() || e >= len(asked.parts) || code != 0 || plans[e].offsets != nil {
				return false
			}
			if k := asked.parts[e].key; k.partition != partition || k.id != id || k.topic != string(name) {
				return false
			}
			e++
		}
		if !noTags() {
			return false
		}
	}
	r.Int32() // ThrottleMillis
	return noTags() && r.Ok() && len(r.Src) == 0 && e == len(asked.parts)
}

// producePlan is one produced partition's plan: its translation and the
// topic as the client named it (name, virtual id).
type producePlan struct {
	partPlan
	name  string
	topic kmsg.ProduceRequestTopic // as the client named it
	up    kmsg.ProduceRequestTopic // as the upstream knows it (no partitions)
	part  kmsg.ProduceRequestTopicPartition
	note  produceNote // traffic and source-write counts (topic_stats.go)
	// key names an idempotent batch of a replicated topic (keyed), whose
	// answer the upstream call's watcher notes (produce_unanswered.go).
	key   batchKey
	keyed bool
}

func lastProduceTopic(sub *kmsg.ProduceRequest, t kmsg.ProduceRequestTopic) *kmsg.ProduceRequestTopic {
	if n := len(sub.Topics); n > 0 && sub.Topics[n-1].Topic == t.Topic && sub.Topics[n-1].TopicID == t.TopicID {
		return &sub.Topics[n-1]
	}
	sub.Topics = append(sub.Topics, kmsg.ProduceRequestTopic{Topic: t.Topic, TopicID: t.TopicID})
	return &sub.Topics[len(sub.Topics)-1]
}

func producePartitionError(partition int32, code int16) kmsg.ProduceResponseTopicPartition {
	p := kmsg.NewProduceResponseTopicPartition()
	p.Partition, p.ErrorCode, p.BaseOffset = partition, code, -1
	return p
}

func addProducePartition(resp *kmsg.ProduceResponse, t kmsg.ProduceRequestTopic, p kmsg.ProduceResponseTopicPartition) {
	for i := range resp.Topics {
		if resp.Topics[i].Topic == t.Topic && resp.Topics[i].TopicID == t.TopicID {
			resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, p)
			return
		}
	}
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic, rt.TopicID = t.Topic, t.TopicID
	rt.Partitions = []kmsg.ProduceResponseTopicPartition{p}
	resp.Topics = append(resp.Topics, rt)
}

func init() {
	errorFillers[kmsg.Produce.Int16()] = func(kreq kmsg.Request, kresp kmsg.Response, code int16) {
		req, resp := kreq.(*kmsg.ProduceRequest), kresp.(*kmsg.ProduceResponse)
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				addProducePartition(resp, t, producePartitionError(p.Partition, code))
			}
		}
	}
}
