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

// splitCommit serves an OffsetCommit whose topics live on different
// clusters; it returns nil when every topic belongs on the home cluster.
func (rc *reqCtx) splitCommit(req *kmsg.OffsetCommitRequest) kmsg.Response {
	home := rc.srv().routes().GroupCluster(req.Group)
	order, by := rc.commitClusters(home, req)
	if len(order) == 1 && order[0] == home {
		return nil
	}
	resp, ok := rc.commitParts(home, req, order, by)
	if !ok {
		return nil // the connection closes and the client retries
	}
	return resp
}

// commitClusters splits a commit's topics by the cluster that keeps their
// offsets (offsetHome), in request order.
func (rc *reqCtx) commitClusters(home string, req *kmsg.OffsetCommitRequest) ([]string, map[string][]kmsg.OffsetCommitRequestTopic) {
	look := newLeaderLookup(rc)
	by := map[string][]kmsg.OffsetCommitRequestTopic{}
	var order []string
	for _, t := range req.Topics {
		c := rc.offsetHome(home, t.Topic, look)
		if _, ok := by[c]; !ok {
			order = append(order, c)
		}
		by[c] = append(by[c], t)
	}
	return order, by
}

// commitParts sends each cluster its part of a commit (a simple commit,
// generation -1, off the home) and merges the answers; ok is false when a
// part got no commit answer.
func (rc *reqCtx) commitParts(home string, req *kmsg.OffsetCommitRequest, order []string, by map[string][]kmsg.OffsetCommitRequestTopic) (resp *kmsg.OffsetCommitResponse, ok bool) {
	resp = req.ResponseKind().(*kmsg.OffsetCommitResponse)
	for _, c := range order {
		sub := *req
		sub.Topics = by[c]
		if c != home {
			sub.Generation, sub.MemberID, sub.InstanceID = -1, "", nil
		}
		cr, isCommit := rc.forwardCoordinator(c, coordGroup, req.Group, &sub).(*kmsg.OffsetCommitResponse)
		if !isCommit {
			return nil, false
		}
		resp.ThrottleMillis = max(resp.ThrottleMillis, cr.ThrottleMillis)
		resp.Topics = append(resp.Topics, cr.Topics...)
	}
	return resp, true
}

// fetchGroupOffsets returns one group's committed offsets (topics nil: all)
// merged from the clusters that hold them, at the request's version.
func (rc *reqCtx) fetchGroupOffsets(req *kmsg.OffsetFetchRequest, g kmsg.OffsetFetchRequestGroup) kmsg.OffsetFetchResponseGroup {
	s := rc.srv()
	home := s.routes().GroupCluster(g.Group)
	out := kmsg.NewOffsetFetchResponseGroup()
	out.Group = g.Group

	// Which clusters to ask, with which topics (nil: all).
	by := map[string][]kmsg.OffsetFetchRequestGroupTopic{}
	order := []string{home}
	if g.Topics == nil {
		for name := range s.clusters {
			if name != home {
				order = append(order, name)
			}
		}
		for _, c := range order {
			by[c] = nil
		}
	} else {
		look := newLeaderLookup(rc)
		by[home] = []kmsg.OffsetFetchRequestGroupTopic{}
		for _, t := range g.Topics {
			c := rc.offsetHome(home, t.Topic, look)
			if _, ok := by[c]; !ok {
				order = append(order, c)
			}
			by[c] = append(by[c], t)
		}
		if len(by[home]) == 0 && len(order) > 1 {
			order = order[1:] // nothing to ask the home cluster
		}
	}

	for i, c := range order {
		sub := *req
		if req.Version >= 8 {
			sg := g
			sg.Topics = by[c]
			if c != home {
				sg.MemberID, sg.MemberEpoch = nil, -1
			}
			sub.Groups = []kmsg.OffsetFetchRequestGroup{sg}
		} else {
			sub.Group, sub.Topics = g.Group, nil
			if by[c] != nil {
				sub.Topics = []kmsg.OffsetFetchRequestTopic{}
				for _, t := range by[c] {
					sub.Topics = append(sub.Topics, kmsg.OffsetFetchRequestTopic{Topic: t.Topic, Partitions: t.Partitions})
				}
			}
		}
		got := groupOf(rc.forwardCoordinator(c, coordGroup, g.Group, &sub), g.Group)
		if i == 0 {
			out.ErrorCode = got.ErrorCode
		}
		for _, t := range got.Topics {
			// With "all topics", a topic is taken from the cluster that
			// stores its commits: the home cluster when it has the topic.
			if g.Topics == nil && c != home {
				if uc, ok := s.clusters[home]; ok && uc.knowsTopic(t.Topic) {
					continue
				}
			}
			out.Topics = append(out.Topics, t)
		}
	}
	return out
}

// groupOf normalizes an OffsetFetch answer (either layout) to one group.
func groupOf(r kmsg.Response, group string) kmsg.OffsetFetchResponseGroup {
	g := kmsg.NewOffsetFetchResponseGroup()
	g.Group = group
	fr, ok := r.(*kmsg.OffsetFetchResponse)
	if !ok {
		g.ErrorCode = 15 // COORDINATOR_NOT_AVAILABLE
		return g
	}
	if fr.Version >= 8 {
		if len(fr.Groups) > 0 {
			return fr.Groups[0]
		}
		return g
	}
	g.ErrorCode = fr.ErrorCode
	for _, t := range fr.Topics {
		gt := kmsg.NewOffsetFetchResponseGroupTopic()
		gt.Topic = t.Topic
		for _, p := range t.Partitions {
			gt.Partitions = append(gt.Partitions, kmsg.OffsetFetchResponseGroupTopicPartition{
				Partition: p.Partition, Offset: p.Offset, LeaderEpoch: p.LeaderEpoch, Metadata: p.Metadata, ErrorCode: p.ErrorCode,
			})
		}
		g.Topics = append(g.Topics, gt)
	}
	return g
}
