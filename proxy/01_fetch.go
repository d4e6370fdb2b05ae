package proxy

// Fetch (key 1), accepted v4-18 (intersected with the clusters).
// Route: each topic is read from its fetch route's cluster, each partition
// from that cluster's leader; one sub-request per upstream broker on this
// connection's fetch connection to that broker, all sent at once.
// Sessions (KIP-227): kproxy terminates them. It never creates a client
// session (SessionID 0 in every answer, so clients send full fetches) and
// fetches upstream sessionless; a client naming a session gets
// FETCH_SESSION_ID_NOT_FOUND and starts over. Every requested partition
// appears in the answer (Java discards incomplete full responses).
// Rewrites: PreferredReadReplica is -1 and the client's rack is not
// forwarded; CurrentLeader (v12+) and Brokers (v16+) name this instance.
// Record batches are copied once into the client frame, never parsed.
// Streaming (fetch_stream.go): a fetch bound for one upstream broker whose
// offsets go through no offset map is relayed as its answer arrives, the
// same bytes the buffered path would write; the rest is buffered.
// Not done: the answer waits for every upstream broker the request spans
// (each honours MaxWaitMillis/MinBytes on its own share); answering at the
// merged MinBytes and keeping late data for the next fetch is future work.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleFetch(rc *reqCtx, req *kmsg.FetchRequest) func() kmsg.Response {
	sc := rc.cc.fetchScratch()
	sc.rc, sc.req = rc, req
	return sc.run
}

// fetchScratch is what a connection's Fetch handling reuses from one
// request to the next (the sub-requests with their topic and partition
// arrays, the plans, the relay's state), so that a forwarded Fetch
// allocates nothing of its own in steady state. Owner: whoever holds the
// connection's fetchTurn token, taken in dispatch before the handler is
// called and given back by finishSlot once the answer is written (or
// dropped), so one Fetch at a time uses it, and nothing of it is used
// after its answer is written.
type fetchScratch struct {
	rc  *reqCtx
	req *kmsg.FetchRequest

	slot    slot              // the Fetch's slot (dispatch), with its reqCtx
	decoded kmsg.FetchRequest // what the client's Fetch is decoded into

	resp       kmsg.FetchResponse
	subs       []*kmsg.FetchRequest // by leader (asked.order); the array is kept
	asked      partsAsked
	plans      []fetchPlan
	virtualIDs []topicIDPairs // by leader, v13+
	translated bool           // some partition's offsets go through an offset map
	capGen     uint64         // Server.capGen when the partitions were planned
	pends      []pending
	pend       []*pending
	kept       []fetchAnswered
	upResp     kmsg.FetchResponse // an upstream answer, decoded
	frames     heldFrames         // upstream answer buffers the answer aliases
	pass       passthrough
	hold       heldResponse
	stream     fetchStream
	relay      fetchRelay
	out        relayOut
	splicer    *fetchSplicer // the relay's, kept while its connections are

	run      func() kmsg.Response         // handle, bound once
	buffered func(*pending) kmsg.Response // answerOne, bound once
}

func (cc *clientConn) fetchScratch() *fetchScratch {
	if cc.fetch == nil {
		sc := &fetchScratch{}
		sc.run, sc.buffered = sc.handle, sc.answerOne
		cc.fetch = sc
	}
	return cc.fetch
}

// decodeInto empties the reused request for the next decode, keeping its
// topic array with each topic's partition array and name, and its rack,
// for decodeFetchPlain to decode into without allocating (kmsg, which
// decodes what it does not take, makes each partition array anew).
func (sc *fetchScratch) decodeInto() *kmsg.FetchRequest {
	topics, rack := sc.decoded.Topics[:0], sc.decoded.Rack
	sc.decoded = kmsg.FetchRequest{Topics: topics, Rack: rack}
	return &sc.decoded
}

// nextSub is the sub-request for the next leader, reused with its arrays.
func (sc *fetchScratch) nextSub(n int) *kmsg.FetchRequest {
	if n == len(sc.subs) {
		sc.subs = append(sc.subs, kmsg.NewPtrFetchRequest())
	}
	sub := sc.subs[n]
	topics := sub.Topics[:0]
	*sub = kmsg.NewFetchRequest()
	sub.Topics = topics
	return sub
}

// handle is the Fetch handler's rest (run on the connection's write loop).
func (sc *fetchScratch) handle() kmsg.Response {
	rc, req := sc.rc, sc.req
	s := rc.srv()
	resp := &sc.resp
	*resp = kmsg.NewFetchResponse()
	resp.Version = req.Version
	{
		if req.Version >= 7 && req.SessionID != 0 {
			resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
			return resp
		}

		// 1. Plan: each partition's name, cluster, leader, offset map and
		// client position, resolved once; the sub-requests name what the
		// upstream knows (its topic ids, its offsets, no epochs).
		router := s.routes()
		// Before any plan: a cap set after this load makes the
		// answer plan its partitions again (replanAfterCap).
		sc.capGen = s.capGen.Load()
		look := newLeaderLookup(rc)
		subs := sc.subs[:0] // by leader (asked.order)
		asked := &sc.asked
		nparts := 0
		for _, t := range req.Topics {
			nparts += len(t.Partitions)
		}
		asked.reset(nparts)
		clear(sc.plans)                 // drop the last request's references
		plans := sc.plans[:0]           // by entry (asked.parts)
		virtualIDs := sc.virtualIDs[:0] // by leader, v13+: the cluster's ids and the ones the client named
		translated := false             // some partition's offsets go through an offset map
		for _, t := range req.Topics {
			name := t.Topic
			if req.Version >= 13 {
				name, _ = s.topicIDs.name(t.TopicID)
			}
			cluster := router.FetchCluster(name, rc.client, rc.group(name))
			ts := s.topicStats(name)
			virtualID := t.TopicID
			for _, p := range t.Partitions {
				ref, code := brokerRef{}, kerr.UnknownTopicID.Code
				if name != "" {
					ref, code = look.find(cluster, name, p.Partition)
					if code == 0 {
						code = s.leadsHere(name, p.Partition) // instances.go
					}
				} else if req.Version < 13 {
					code = kerr.UnknownTopicOrPartition.Code
				}
				upID := virtualID
				if code == 0 && req.Version >= 13 {
					var ok bool
					if _, upID, ok = s.upstreamTopicID(cluster, virtualID); !ok {
						code = kerr.UnknownTopicID.Code
					}
				}
				var pl partPlan
				if code == 0 {
					pl, code = s.offsetsPlan(cluster, name, p.Partition, router.Replicated(name))
				}
				if code != 0 {
					addFetchPartition(resp, t.Topic, virtualID, fetchPartitionError(p.Partition, code))
					continue
				}
				pos, ok := offsetsFetchRequestPartition(pl.offsets, &p)
				if !ok {
					addFetchPartition(resp, t.Topic, virtualID, outOfRange(pl.offsets, p.Partition))
					continue
				}
				translated = translated || pl.offsets != nil
				epochsFetchRequestPartition(&p)
				p.LogStartOffset = -1 // a follower's field

				leader, _ := asked.ask(ref, partKey{topic: t.Topic, id: upID, partition: p.Partition})
				plans = append(plans, fetchPlan{partPlan: pl, pos: pos, name: name, topic: t.Topic, virtualID: virtualID, stats: ts})
				if leader == len(subs) {
					sub := sc.nextSub(leader)
					sub.Version = req.Version
					sub.MaxWaitMillis, sub.MinBytes, sub.MaxBytes = req.MaxWaitMillis, req.MinBytes, req.MaxBytes
					sub.IsolationLevel = req.IsolationLevel
					sub.SessionID, sub.SessionEpoch = 0, -1
					subs = append(subs, sub)
					if len(virtualIDs) < cap(virtualIDs) {
						virtualIDs = virtualIDs[:len(virtualIDs)+1]
						virtualIDs[leader] = virtualIDs[leader][:0]
					} else {
						virtualIDs = append(virtualIDs, nil)
					}
				}
				st := lastFetchTopic(subs[leader], t.Topic, upID)
				st.Partitions = append(st.Partitions, p)
				if req.Version >= 13 {
					virtualIDs[leader] = virtualIDs[leader].add(upID, virtualID)
				}
			}
		}

		// 2. Upstream: every sub-request at once. The merged answer must
		// stay within the client's MaxBytes (it used to reach MaxBytes per
		// leader, over franz-go's and Sarama's 100 MiB frame limit): split
		// it across the leaders.
		sc.plans, sc.virtualIDs, sc.translated = plans, virtualIDs, translated
		order := asked.order
		if n := int32(len(order)); n > 1 {
			for _, sub := range subs {
				sub.MaxBytes = max(req.MaxBytes/n, 1)
			}
		}

		// One upstream and nothing to translate: the answer is relayed as
		// it arrives (fetch_stream.go), or by answer when it is not plain.
		if len(sc.pends) < len(order) {
			sc.pends = make([]pending, len(order))
		}
		pend := sc.pend[:0]
		for i := range order {
			pend = append(pend, &sc.pends[i])
		}
		sc.pend = pend
		if len(order) == 1 && len(resp.Topics) == 0 && !translated && !rc.filtered && fetchStreamMin > 0 {
			ref := order[0]
			rc.writeTo(pend[0], ref.cluster, ref.id, ref.addr, subs[0], false, true, nil, true)
			f := &sc.stream
			*f = fetchStream{
				FetchResponse: resp, s: s, sub: subs[0], cluster: ref.cluster, plans: plans, virtualIDs: virtualIDs[0],
				p: pend[0], buffered: sc.buffered, sc: sc, capGen: sc.capGen,
			}
			return f
		}
		for i, ref := range order {
			rc.writeTo(pend[i], ref.cluster, ref.id, ref.addr, subs[i], false, true, nil, false)
		}
		return sc.answer(pend)
	}
}

// answerOne answers from the one upstream's whole answer (or error): the
// streaming relay's fallback (fetchStream.buffered).
func (sc *fetchScratch) answerOne(p *pending) kmsg.Response {
	sc.pend = append(sc.pend[:0], p)
	return sc.answer(sc.pend)
}

// answer builds the client's answer from the upstream answers (by leader),
// each through the translation steps, then merged.
func (sc *fetchScratch) answer(pend []*pending) kmsg.Response {
	rc, s, resp := sc.rc, sc.rc.srv(), &sc.resp
	asked, plans, order, virtualIDs, translated := &sc.asked, sc.plans, sc.asked.order, sc.virtualIDs, sc.translated
	frames := sc.frames[:0]
	for i, p := range pend {
		ref := order[i]
		var r kmsg.Response
		var body []byte
		var err error
		if len(pend) == 1 {
			// One answer at a time is decoded into the scratch; with
			// several, each is kept until they are merged.
			sc.upResp = kmsg.FetchResponse{Topics: sc.upResp.Topics[:0]}
			r, body, err = p.responseInto(&sc.upResp, false)
		} else {
			r, body, err = p.responseBody()
		}
		if err == nil && p.call != nil {
			frames = append(frames, p.call)
			sc.frames = frames
		}
		// A cutover capped an old home while the upstream had the
		// request (read once the answer is in): its partitions are
		// planned again, and the answer is re-encoded.
		replan := s.capGen.Load() != sc.capGen
		var fr *kmsg.FetchResponse
		if err == nil {
			fr = r.(*kmsg.FetchResponse)
			if fr.ErrorCode != 0 {
				err = kerr.ErrorForCode(fr.ErrorCode)
			}
		}
		if err != nil {
			asked.failed(ref)
			fr = nil
		}
		kept := sc.kept[:0]
		var stale []string
		noRewrite := fr != nil && fetchNeedsNoRewrite(fr)
		extra := false
		if fr != nil {
			for ti := range fr.Topics {
				t := &fr.Topics[ti]
				for pi := range t.Partitions {
					pp := &t.Partitions[pi]
					e, ok := asked.answered(ref, partKey{topic: t.Topic, id: t.TopicID, partition: pp.Partition})
					if !ok {
						extra = true // not asked: dropped
						continue
					}
					fp := plans[e]
					pl := fp.partPlan
					if replan && pp.ErrorCode == 0 {
						var code int16
						if pl, code = s.replanAfterCap(fp.name, pp.Partition, pl); code != 0 {
							*pp = fetchPartitionError(pp.Partition, code)
						}
					}
					s.virtFetchPartition(pl, pp, fp.pos)
					fp.stats.noteFetched(ref.cluster, pp.RecordBatches)
					if isStaleLeaderCode(pp.ErrorCode) {
						stale = append(stale, fp.name)
					}
					kept = append(kept, fetchAnswered{ti, pi})
				}
			}
			sc.kept = kept // its array, for the next answer
		}
		// A leader that failed answers each of its partitions with a
		// retriable error. One that answered but left partitions out
		// had nothing for them within MaxBytes (kfake stops at the
		// byte limit): they are answered empty, with no error and
		// unknown (-1) watermarks, which every client skips over. A
		// full fetch answer that omits a partition is dropped whole
		// by the Java consumer, and an error would send the client
		// to refresh metadata for a leader that is fine.
		for _, e := range asked.missing(ref) {
			fp, k := plans[e], asked.key(e)
			if fr == nil {
				addFetchPartition(resp, fp.topic, fp.virtualID, fetchPartitionError(k.partition, kerr.NotLeaderForPartition.Code))
				stale = append(stale, fp.name)
				continue
			}
			addFetchPartition(resp, fp.topic, fp.virtualID, fetchPartitionError(k.partition, 0))
		}
		s.refreshSoon(ref.cluster, dedupe(stale))
		if fr == nil {
			continue
		}
		if len(pend) == 1 && len(resp.Topics) == 0 && !translated && !replan && noRewrite && !extra &&
			s.topicIDsFetchPassthrough(ref.cluster, body, fr, virtualIDs[i]) {
			// The one upstream answered for every partition, exactly,
			// and named no broker: its bytes (epochs cleared in place)
			// are the client's answer.
			sc.pass = passthrough{Response: fr, body: body, frames: frames}
			return &sc.pass
		}
		s.topicIDsFetchAnswer(ref.cluster, fr, virtualIDs[i])
		resp.ThrottleMillis = max(resp.ThrottleMillis, fr.ThrottleMillis)
		for _, a := range kept {
			t := &fr.Topics[a.topic]
			addFetchPartition(resp, t.Topic, t.TopicID, t.Partitions[a.partition])
		}
		if len(fr.Brokers) > 0 {
			resp.Brokers = s.fetchBrokers(rc.cc.lst, fr.Brokers)
		}
	}
	if len(frames) > 0 {
		sc.hold = heldResponse{Response: resp, frames: frames}
		return &sc.hold
	}
	return resp
}

// fetchPlan is one fetched partition's plan: its translation and what the
// client named (topic, virtual id, virtual position).
type fetchPlan struct {
	partPlan
	pos       int64
	name      string      // the topic's name (also for a request by id)
	topic     string      // the topic field the client sent ("" by id)
	virtualID [16]byte    // the id the client sent (v13+)
	stats     *topicStats // per-topic counters (topic_stats.go)
}

// fetchAnswered indexes a partition of an upstream fetch answer.
type fetchAnswered struct{ topic, partition int }

func lastFetchTopic(sub *kmsg.FetchRequest, topic string, id [16]byte) *kmsg.FetchRequestTopic {
	if n := len(sub.Topics); n > 0 && sub.Topics[n-1].Topic == topic && sub.Topics[n-1].TopicID == id {
		return &sub.Topics[n-1]
	}
	var parts []kmsg.FetchRequestTopicPartition
	if n := len(sub.Topics); n < cap(sub.Topics) {
		parts = sub.Topics[:n+1][n].Partitions[:0] // a reused sub-request's array
	}
	nt := kmsg.NewFetchRequestTopic()
	nt.Topic, nt.TopicID, nt.Partitions = topic, id, parts
	sub.Topics = append(sub.Topics, nt)
	return &sub.Topics[len(sub.Topics)-1]
}

func fetchPartitionError(partition int32, code int16) kmsg.FetchResponseTopicPartition {
	p := kmsg.NewFetchResponseTopicPartition()
	p.Partition, p.ErrorCode = partition, code
	p.HighWatermark, p.LastStableOffset, p.LogStartOffset = -1, -1, -1
	// An empty record set, as a broker answers (MemoryRecords.EMPTY), never
	// a null one: librdkafka (2.0.2, Debian's) fails the whole answer on a
	// null set ("invalid MessageSetSize -1") before it reads the error, so
	// a consumer told NOT_LEADER_OR_FOLLOWER here never refreshed its
	// metadata and fetched the partition from this instance for good
	// (issue 14's rolling restart).
	p.RecordBatches = []byte{}
	return p
}

func addFetchPartition(resp *kmsg.FetchResponse, topic string, id [16]byte, p kmsg.FetchResponseTopicPartition) {
	for i := range resp.Topics {
		if resp.Topics[i].Topic == topic && resp.Topics[i].TopicID == id {
			resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, p)
			return
		}
	}
	rt := kmsg.NewFetchResponseTopic()
	rt.Topic, rt.TopicID = topic, id
	rt.Partitions = []kmsg.FetchResponseTopicPartition{p}
	resp.Topics = append(resp.Topics, rt)
}

// fetchNeedsNoRewrite reports whether an upstream fetch answer carries no
// broker identity (no leader hints, no preferred replica, no endpoints) and
// no error that should refresh kproxy's leader view.
func fetchNeedsNoRewrite(fr *kmsg.FetchResponse) bool {
	if len(fr.Brokers) > 0 || fr.ErrorCode != 0 || fr.SessionID != 0 {
		return false
	}
	for _, t := range fr.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 || p.PreferredReadReplica >= 0 || p.CurrentLeader.LeaderID >= 0 {
				return false
			}
		}
	}
	return true
}
