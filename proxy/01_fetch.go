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
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		if req.Version >= 7 && req.SessionID != 0 {
			resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
			return resp
		}

		// 1. Plan: each partition's name, cluster, leader, offset map and
		// client position, resolved once; the sub-requests name what the
		// upstream knows (its topic ids, its offsets, no epochs).
		router := s.routes()
		look := newLeaderLookup(rc)
		var subs []*kmsg.FetchRequest // by leader (asked.order)
		var asked partsAsked
		nparts := 0
		for _, t := range req.Topics {
			nparts += len(t.Partitions)
		}
		asked.grow(nparts)
		plans := make([]fetchPlan, 0, nparts) // by entry (asked.parts)
		var virtualIDs []topicIDPairs         // by leader, v13+: the cluster's ids and the ones the client named
		translated := false                   // some partition's offsets go through an offset map
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
					sub := kmsg.NewPtrFetchRequest()
					sub.Version = req.Version
					sub.MaxWaitMillis, sub.MinBytes, sub.MaxBytes = req.MaxWaitMillis, req.MinBytes, req.MaxBytes
					sub.IsolationLevel = req.IsolationLevel
					sub.SessionID, sub.SessionEpoch = 0, -1
					subs = append(subs, sub)
					virtualIDs = append(virtualIDs, nil)
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
		order := asked.order
		if n := int32(len(order)); n > 1 {
			for _, sub := range subs {
				sub.MaxBytes = max(req.MaxBytes/n, 1)
			}
		}

		// 3. Answers, each through the translation steps, then merged.
		answer := func(pend []*pending) kmsg.Response {
			var frames heldFrames
			for i, p := range pend {
				ref := order[i]
				r, body, err := p.responseBody()
				if err == nil && p.call != nil {
					frames = append(frames, p.call)
				}
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
				var kept []fetchAnswered
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
							s.virtFetchPartition(fp.partPlan, pp, fp.pos)
							fp.stats.noteFetched(ref.cluster, pp.RecordBatches)
							if isStaleLeaderCode(pp.ErrorCode) {
								stale = append(stale, fp.name)
							}
							kept = append(kept, fetchAnswered{ti, pi})
						}
					}
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
				if len(pend) == 1 && len(resp.Topics) == 0 && !translated && noRewrite && !extra &&
					s.topicIDsFetchPassthrough(ref.cluster, body, fr, virtualIDs[i]) {
					// The one upstream answered for every partition, exactly,
					// and named no broker: its bytes (epochs cleared in place)
					// are the client's answer.
					return &passthrough{Response: fr, body: body, frames: frames}
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
				return &heldResponse{Response: resp, frames: frames}
			}
			return resp
		}

		// One upstream and nothing to translate: the answer is relayed as
		// it arrives (fetch_stream.go), or by answer when it is not plain.
		if len(order) == 1 && len(resp.Topics) == 0 && !translated && !rc.filtered && fetchStreamMin > 0 {
			ref := order[0]
			return &fetchStream{
				FetchResponse: resp, s: s, sub: subs[0], cluster: ref.cluster, plans: plans, virtualIDs: virtualIDs[0],
				p:        rc.sendStream(ref.cluster, ref.id, ref.addr, subs[0]),
				buffered: func(p *pending) kmsg.Response { return answer([]*pending{p}) },
			}
		}
		pend := make([]*pending, len(order))
		for i, ref := range order {
			pend[i] = rc.send(ref.cluster, ref.id, ref.addr, subs[i])
		}
		return answer(pend)
	}
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
	nt := kmsg.NewFetchRequestTopic()
	nt.Topic, nt.TopicID = topic, id
	sub.Topics = append(sub.Topics, nt)
	return &sub.Topics[len(sub.Topics)-1]
}

func fetchPartitionError(partition int32, code int16) kmsg.FetchResponseTopicPartition {
	p := kmsg.NewFetchResponseTopicPartition()
	p.Partition, p.ErrorCode = partition, code
	p.HighWatermark, p.LastStableOffset, p.LogStartOffset = -1, -1, -1
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
