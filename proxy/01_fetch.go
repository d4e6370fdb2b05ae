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
// Not done: the answer waits for every upstream broker the request spans
// (each honours MaxWaitMillis/MinBytes on its own share); answering at the
// merged MinBytes and keeping late data for the next fetch is future work.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(kmsg.Fetch, 4, 18, handleFetch) }

func handleFetch(rc *reqCtx, kreq kmsg.Request) func() kmsg.Response {
	req := kreq.(*kmsg.FetchRequest)
	return func() kmsg.Response {
		s := rc.srv()
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		if req.Version >= 7 && req.SessionID != 0 {
			resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
			return resp
		}
		router := s.routes()
		look := newLeaderLookup(rc)
		subs := map[brokerRef]*kmsg.FetchRequest{}
		var order []brokerRef
		translated := false               // some partition's offsets go through an offset map
		positions := map[fetchPos]int64{} // the client's virtual fetch offsets, for those
		for _, t := range req.Topics {
			name := t.Topic
			if req.Version >= 13 {
				name, _ = s.topicIDs.name(t.TopicID)
			}
			cluster := router.FetchCluster(name, rc.client, rc.group())
			virtualID := t.TopicID
			for _, p := range t.Partitions {
				ref, code := brokerRef{}, kerr.UnknownTopicID.Code
				if name != "" {
					ref, code = look.find(cluster, name, p.Partition)
				} else if req.Version < 13 {
					code = kerr.UnknownTopicOrPartition.Code
				}
				if code != 0 {
					addFetchPartition(resp, t.Topic, virtualID, fetchPartitionError(p.Partition, code))
					continue
				}
				if req.Version >= 13 {
					_, up, ok := s.upstreamTopicID(cluster, virtualID)
					if !ok {
						addFetchPartition(resp, t.Topic, virtualID, fetchPartitionError(p.Partition, kerr.UnknownTopicID.Code))
						continue
					}
					t.TopicID = up // the sub-request names the cluster's id
				}
				m, needsMap := s.offsetMapState(cluster, name, p.Partition)
				if m == nil && (needsMap || cluster == Target && router.Replicated(name)) {
					// Replicated, but no map yet (replication starting):
					// target offsets must never reach a client. Retry.
					addFetchPartition(resp, t.Topic, virtualID, fetchPartitionError(p.Partition, kerr.NotLeaderForPartition.Code))
					continue
				}
				if m != nil {
					tgt, ok := toTargetOffset(m, p.FetchOffset)
					if !ok {
						addFetchPartition(resp, t.Topic, virtualID, outOfRange(m, p.Partition))
						continue
					}
					positions[fetchPos{name, p.Partition}] = p.FetchOffset
					p.FetchOffset = tgt
					translated = true
				}
				sub, ok := subs[ref]
				if !ok {
					sub = kmsg.NewPtrFetchRequest()
					sub.Version = req.Version
					sub.MaxWaitMillis, sub.MinBytes, sub.MaxBytes = req.MaxWaitMillis, req.MinBytes, req.MaxBytes
					sub.IsolationLevel = req.IsolationLevel
					sub.SessionID, sub.SessionEpoch = 0, -1
					subs[ref] = sub
					order = append(order, ref)
				}
				st := lastFetchTopic(sub, t)
				up := p
				up.LogStartOffset = -1
				up.CurrentLeaderEpoch, up.LastFetchedEpoch = noEpoch, noEpoch
				st.Partitions = append(st.Partitions, up)
			}
		}

		// The merged answer must stay within the client's MaxBytes (it
		// used to reach MaxBytes per leader, over franz-go's and Sarama's
		// 100 MiB frame limit): split it across the leaders.
		if n := int32(len(order)); n > 1 {
			for _, ref := range order {
				subs[ref].MaxBytes = max(req.MaxBytes/n, 1)
			}
		}
		pend := make([]*pending, len(order))
		for i, ref := range order {
			pend[i] = rc.send(ref.cluster, ref.id, ref.addr, subs[ref])
		}
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
				for _, t := range subs[ref].Topics {
					for _, pp := range t.Partitions {
						addFetchPartition(resp, t.Topic, s.virtualOf(ref.cluster, t.TopicID), fetchPartitionError(pp.Partition, kerr.NotLeaderForPartition.Code))
					}
				}
				s.refreshSoon(ref.cluster, topicsOfFetch(subs[ref]))
				continue
			}
			clearFetchEpochs(fr) // in place: batches alias body
			if translated {
				s.virtualizeFetchOffsets(ref.cluster, fr, positions)
			}
			if len(pend) == 1 && len(resp.Topics) == 0 && !translated && fetchNeedsNoRewrite(fr) && s.patchFetchIDs(ref.cluster, body, fr) {
				// The one upstream answered for every partition and
				// named no broker: its bytes are the client's answer.
				return &passthrough{Response: fr, body: body, frames: frames}
			}
			s.virtualizeFetchIDs(ref.cluster, fr)
			resp.ThrottleMillis = max(resp.ThrottleMillis, fr.ThrottleMillis)
			var stale []string
			for _, t := range fr.Topics {
				for _, pp := range t.Partitions {
					pp.PreferredReadReplica = -1
					if pp.CurrentLeader.LeaderID >= 0 {
						pp.CurrentLeader.LeaderID = s.virtualNode(pp.CurrentLeader.LeaderID)
					}
					if isStaleLeaderCode(pp.ErrorCode) {
						stale = append(stale, t.Topic)
					}
					addFetchPartition(resp, t.Topic, t.TopicID, pp)
				}
			}
			if len(fr.Brokers) > 0 {
				resp.Brokers = s.fetchBrokers(fr.Brokers)
			}
			s.refreshSoon(ref.cluster, stale)
		}
		if len(frames) > 0 {
			return &heldResponse{Response: resp, frames: frames}
		}
		return resp
	}
}

func lastFetchTopic(sub *kmsg.FetchRequest, t kmsg.FetchRequestTopic) *kmsg.FetchRequestTopic {
	if n := len(sub.Topics); n > 0 && sub.Topics[n-1].Topic == t.Topic && sub.Topics[n-1].TopicID == t.TopicID {
		return &sub.Topics[n-1]
	}
	nt := kmsg.NewFetchRequestTopic()
	nt.Topic, nt.TopicID = t.Topic, t.TopicID
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

func topicsOfFetch(r *kmsg.FetchRequest) []string {
	out := make([]string, 0, len(r.Topics))
	for _, t := range r.Topics {
		if t.Topic != "" {
			out = append(out, t.Topic)
		}
	}
	return out
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

// virtualizeFetchIDs replaces the cluster's topic ids in a fetch answer
// (v13+) with virtual ones and reports whether they already were virtual
// (then the upstream bytes are the client's answer as they are).
func (s *Server) virtualizeFetchIDs(cluster string, fr *kmsg.FetchResponse) bool {
	if fr.Version < 13 {
		return true
	}
	same := true
	for i := range fr.Topics {
		t := &fr.Topics[i]
		if v := s.virtualOf(cluster, t.TopicID); v != t.TopicID {
			t.TopicID = v
			same = false
		}
	}
	return same
}

// fetchPos names a partition in a fetch.
type fetchPos struct {
	topic     string
	partition int32
}

// virtualizeFetchOffsets translates a target answer's replicated partitions
// (ident_offset.go); positions are the client's virtual fetch offsets. Topic
// names are resolved before ids are virtualized.
func (s *Server) virtualizeFetchOffsets(cluster string, fr *kmsg.FetchResponse, positions map[fetchPos]int64) {
	uc := s.clusters[cluster]
	for i := range fr.Topics {
		t := &fr.Topics[i]
		name := t.Topic
		if fr.Version >= 13 {
			name, _ = uc.topicName(t.TopicID)
		}
		for j := range t.Partitions {
			p := &t.Partitions[j]
			if m := s.offsetMap(cluster, name, p.Partition); m != nil && p.ErrorCode == 0 {
				virtualizeFetchPartition(m, p, positions[fetchPos{name, p.Partition}])
			}
		}
	}
}

// patchFetchIDs makes a passthrough answer's topic ids virtual in place
// (fetch_ids.go); false means the answer must be re-encoded instead.
func (s *Server) patchFetchIDs(cluster string, body []byte, fr *kmsg.FetchResponse) bool {
	if fr.Version < 13 {
		return true
	}
	ids := make([][16]byte, len(fr.Topics))
	same := true
	for i, t := range fr.Topics {
		ids[i] = s.virtualOf(cluster, t.TopicID)
		same = same && ids[i] == t.TopicID
	}
	return same || patchFetchTopicIDs(body, fr, ids)
}
