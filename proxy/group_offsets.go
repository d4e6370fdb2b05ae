package proxy

// Committed offsets of a group for topics its home cluster does not have
// (DESIGN.md §3a). A group's membership lives on its home cluster, but a
// topic that exists only on the other cluster cannot hold commits there: the
// home coordinator answers UNKNOWN_TOPIC_OR_PARTITION. kproxy keeps such a
// topic's commits on the cluster that has the topic, as a "simple" commit
// (generation -1, no member id: accepted by a coordinator where the group
// has no members), and merges OffsetFetch answers from both. Offsets are
// virtual everywhere, so where they are stored changes nothing they mean.

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// offsetHome says which cluster stores a group's commits for topic: the
// home cluster when it has the topic (or when no cluster has it, so the
// home coordinator gives the answer), else a cluster that has it.
func (rc *reqCtx) offsetHome(home, topic string, look *leaderLookup) string {
	s := rc.srv()
	if uc, ok := s.clusters[home]; ok && uc.knowsTopic(topic) {
		return home
	}
	// A replicated topic is on both clusters; the home's view may just not
	// have loaded it yet (no client has used it there: a group that moves
	// to the target with the topic's first flip). Look once before sending
	// the commit to the other cluster, where the next move would not copy
	// it from and the group's members may still be registered.
	if uc, ok := s.clusters[home]; ok && s.routes().Replicated(topic) {
		look.find(home, topic, 0)
		if uc.knowsTopic(topic) {
			return home
		}
	}
	for name, uc := range s.clusters {
		if name != home && uc.knowsTopic(topic) {
			return name
		}
	}
	// Unknown to kproxy's view: refresh the home cluster's view once.
	if _, code := look.find(home, topic, 0); code == 0 {
		return home
	}
	for name, uc := range s.clusters {
		if name != home && uc.knowsTopic(topic) {
			return name
		}
	}
	return home
}

// commitAt serves an OffsetCommit for a group homed on home: each topic goes
// to the cluster that keeps its offsets (offsetHome), as a simple commit off
// the home. A commit whose topics all belong on one cluster is forwarded
// whole; otherwise it is split (split_cluster.go) and every partition is
// answered, a part whose coordinator failed with that part's error.
func (rc *reqCtx) commitAt(home string, req *kmsg.OffsetCommitRequest) kmsg.Response {
	look := newLeaderLookup(rc)
	dest := make(map[string]string, len(req.Topics))
	one := ""
	for _, t := range req.Topics {
		c := rc.offsetHome(home, t.Topic, look)
		dest[t.Topic] = c
		if one == "" {
			one = c
		} else if one != c {
			one = "-" // more than one cluster
		}
	}
	part := func(c string, topics []kmsg.OffsetCommitRequestTopic) *kmsg.OffsetCommitRequest {
		sub := *req
		sub.Topics = topics
		if c != home {
			sub.Generation, sub.MemberID, sub.InstanceID = -1, "", nil
		}
		return &sub
	}
	if one != "-" {
		if one == "" {
			one = home
		}
		return rc.forwardCoordinator(one, coordGroup, req.Group, part(one, req.Topics))
	}
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	resp.Topics, resp.ThrottleMillis = splitByCluster(req.Topics, clusterSplit[kmsg.OffsetCommitRequestTopic, kmsg.OffsetCommitResponseTopic]{
		clusters: func(t kmsg.OffsetCommitRequestTopic) []string { return []string{dest[t.Topic]} },
		send: func(c string, topics []kmsg.OffsetCommitRequestTopic) ([]kmsg.OffsetCommitResponseTopic, int32, bool) {
			cr, ok := rc.forwardCoordinator(c, coordGroup, req.Group, part(c, topics)).(*kmsg.OffsetCommitResponse)
			if !ok {
				return nil, 0, false
			}
			return cr.Topics, cr.ThrottleMillis, true
		},
		itemKey:   func(t kmsg.OffsetCommitRequestTopic) string { return t.Topic },
		answerKey: func(t kmsg.OffsetCommitResponseTopic) string { return t.Topic },
		failed: func(t kmsg.OffsetCommitRequestTopic, code int16, _ string) kmsg.OffsetCommitResponseTopic {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			completeCommit(t, &rt, code)
			return rt
		},
		complete: func(t kmsg.OffsetCommitRequestTopic, rt *kmsg.OffsetCommitResponseTopic) {
			completeCommit(t, rt, kerr.UnknownServerError.Code)
		},
	})
	return resp
}

// completeCommit answers with code every partition of t that rt lacks.
func completeCommit(t kmsg.OffsetCommitRequestTopic, rt *kmsg.OffsetCommitResponseTopic, code int16) {
	have := map[int32]bool{}
	for _, p := range rt.Partitions {
		have[p.Partition] = true
	}
	for _, p := range t.Partitions {
		if !have[p.Partition] {
			rp := kmsg.NewOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, code
			rt.Partitions = append(rt.Partitions, rp)
		}
	}
}

// fetchGroupOffsets returns one group's committed offsets (topics nil: all)
// merged from the clusters that hold them, at the request's version. Every
// requested partition is answered. A cluster other than the home that does
// not know the group (GROUP_ID_NOT_FOUND, as kfake answers) has no commits
// for it: its partitions answer "no committed offset" (-1), as a broker does
// for a group with no commits. Another error there answers its partitions
// with that error, and a retriable one is also the group's error, so the
// client asks again.
func (rc *reqCtx) fetchGroupOffsets(req *kmsg.OffsetFetchRequest, g kmsg.OffsetFetchRequestGroup) kmsg.OffsetFetchResponseGroup {
	home := rc.srv().routes().GroupCluster(g.Group)
	if g.Topics == nil {
		return rc.fetchAllGroupOffsets(req, g, home)
	}
	if len(g.Topics) == 0 {
		return rc.askGroupOffsets(req, g, home, home, g.Topics)
	}
	look := newLeaderLookup(rc)
	dest := make(map[string]string, len(g.Topics))
	for _, t := range g.Topics {
		dest[t.Topic] = rc.offsetHome(home, t.Topic, look)
	}
	out := kmsg.NewOffsetFetchResponseGroup()
	out.Group = g.Group
	var mu sync.Mutex
	var homeErr, otherErr int16
	out.Topics, _ = splitByCluster(g.Topics, clusterSplit[kmsg.OffsetFetchRequestGroupTopic, kmsg.OffsetFetchResponseGroupTopic]{
		clusters: func(t kmsg.OffsetFetchRequestGroupTopic) []string { return []string{dest[t.Topic]} },
		send: func(c string, topics []kmsg.OffsetFetchRequestGroupTopic) ([]kmsg.OffsetFetchResponseGroupTopic, int32, bool) {
			got := rc.askGroupOffsets(req, g, home, c, topics)
			code := got.ErrorCode
			switch {
			case code == 0:
				return got.Topics, 0, true
			case c != home && code == kerr.GroupIDNotFound.Code:
				return noOffsets(topics, 0), 0, true
			}
			mu.Lock()
			if c == home {
				homeErr = code
			} else if otherErr == 0 && kerr.IsRetriable(kerr.ErrorForCode(code)) {
				otherErr = code
			}
			mu.Unlock()
			if len(got.Topics) > 0 {
				return got.Topics, 0, true
			}
			return noOffsets(topics, code), 0, true
		},
		itemKey:   func(t kmsg.OffsetFetchRequestGroupTopic) string { return t.Topic },
		answerKey: func(t kmsg.OffsetFetchResponseGroupTopic) string { return t.Topic },
		failed: func(t kmsg.OffsetFetchRequestGroupTopic, code int16, _ string) kmsg.OffsetFetchResponseGroupTopic {
			return noOffsets([]kmsg.OffsetFetchRequestGroupTopic{t}, code)[0]
		},
		complete: func(t kmsg.OffsetFetchRequestGroupTopic, rt *kmsg.OffsetFetchResponseGroupTopic) {
			have := map[int32]bool{}
			for _, p := range rt.Partitions {
				have[p.Partition] = true
			}
			for _, p := range noOffsets([]kmsg.OffsetFetchRequestGroupTopic{t}, kerr.UnknownServerError.Code)[0].Partitions {
				if !have[p.Partition] {
					rt.Partitions = append(rt.Partitions, p)
				}
			}
		},
	})
	out.ErrorCode = homeErr
	if out.ErrorCode == 0 {
		out.ErrorCode = otherErr
	}
	return out
}

// fetchAllGroupOffsets answers an OffsetFetch for all of a group's topics:
// every cluster is asked, and a topic is taken from the cluster that stores
// its commits (the home cluster when it has the topic).
func (rc *reqCtx) fetchAllGroupOffsets(req *kmsg.OffsetFetchRequest, g kmsg.OffsetFetchRequestGroup, home string) kmsg.OffsetFetchResponseGroup {
	s := rc.srv()
	out := rc.askGroupOffsets(req, g, home, home, nil)
	for name := range s.clusters {
		if name == home {
			continue
		}
		got := rc.askGroupOffsets(req, g, home, name, nil)
		if code := got.ErrorCode; code != 0 && code != kerr.GroupIDNotFound.Code && out.ErrorCode == 0 {
			out.ErrorCode = code // the topics stored there are unknown: not a silent omission
		}
		for _, t := range got.Topics {
			if uc, ok := s.clusters[home]; ok && uc.knowsTopic(t.Topic) {
				continue
			}
			out.Topics = append(out.Topics, t)
		}
	}
	return out
}

// askGroupOffsets asks cluster c for group g's offsets of topics (nil: all),
// in the request's layout; off the home the member fields are dropped.
func (rc *reqCtx) askGroupOffsets(req *kmsg.OffsetFetchRequest, g kmsg.OffsetFetchRequestGroup, home, c string, topics []kmsg.OffsetFetchRequestGroupTopic) kmsg.OffsetFetchResponseGroup {
	sub := *req
	if req.Version >= 8 {
		sg := g
		sg.Topics = topics
		if c != home {
			sg.MemberID, sg.MemberEpoch = nil, -1
		}
		sub.Groups = []kmsg.OffsetFetchRequestGroup{sg}
	} else {
		sub.Group, sub.Topics = g.Group, nil
		if topics != nil {
			sub.Topics = []kmsg.OffsetFetchRequestTopic{}
			for _, t := range topics {
				sub.Topics = append(sub.Topics, kmsg.OffsetFetchRequestTopic{Topic: t.Topic, Partitions: t.Partitions})
			}
		}
	}
	return groupOf(rc.forwardCoordinator(c, coordGroup, g.Group, &sub), g.Group)
}

// noOffsets answers every partition of topics with no committed offset
// (-1) and code.
func noOffsets(topics []kmsg.OffsetFetchRequestGroupTopic, code int16) []kmsg.OffsetFetchResponseGroupTopic {
	out := make([]kmsg.OffsetFetchResponseGroupTopic, 0, len(topics))
	for _, t := range topics {
		rt := kmsg.NewOffsetFetchResponseGroupTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = p, -1, noEpoch, kmsg.StringPtr(""), code
			rt.Partitions = append(rt.Partitions, rp)
		}
		out = append(out, rt)
	}
	return out
}

// groupOf normalizes an OffsetFetch answer (either layout) to one group.
func groupOf(r kmsg.Response, group string) kmsg.OffsetFetchResponseGroup {
	g := kmsg.NewOffsetFetchResponseGroup()
	g.Group = group
	fr, ok := r.(*kmsg.OffsetFetchResponse)
	if !ok {
		g.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return g
	}
	if fr.Version >= 8 {
		if len(fr.Groups) > 0 {
			return fr.Groups[0]
		}
		// No group in the answer: kproxy's own error answer
		// (errorResponse) sets only the top-level code.
		g.ErrorCode = fr.ErrorCode
		if g.ErrorCode == 0 {
			g.ErrorCode = kerr.UnknownServerError.Code
		}
		return g
	}
	g.ErrorCode, g.Topics = fr.ErrorCode, groupTopicsOf(fr.Topics)
	return g
}

// groupTopicsOf and topicsOfGroup convert answered topics between the
// v0-7 OffsetFetch layout and the v8+ per-group one (the partitions are
// the same struct under two names).
func groupTopicsOf(ts []kmsg.OffsetFetchResponseTopic) []kmsg.OffsetFetchResponseGroupTopic {
	out := make([]kmsg.OffsetFetchResponseGroupTopic, 0, len(ts))
	for _, t := range ts {
		gt := kmsg.NewOffsetFetchResponseGroupTopic()
		gt.Topic = t.Topic
		gt.Partitions = convertEach(t.Partitions, func(p kmsg.OffsetFetchResponseTopicPartition) kmsg.OffsetFetchResponseGroupTopicPartition {
			return kmsg.OffsetFetchResponseGroupTopicPartition(p)
		})
		out = append(out, gt)
	}
	return out
}

func topicsOfGroup(ts []kmsg.OffsetFetchResponseGroupTopic) []kmsg.OffsetFetchResponseTopic {
	return convertEach(ts, func(t kmsg.OffsetFetchResponseGroupTopic) kmsg.OffsetFetchResponseTopic {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic, rt.Partitions = t.Topic, convertEach(t.Partitions, func(p kmsg.OffsetFetchResponseGroupTopicPartition) kmsg.OffsetFetchResponseTopicPartition {
			return kmsg.OffsetFetchResponseTopicPartition(p)
		})
		return rt
	})
}

func convertEach[F, T any](in []F, f func(F) T) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}
