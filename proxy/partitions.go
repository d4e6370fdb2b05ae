package proxy

// Shared plumbing for APIs that address partitions and must be split by
// partition leader: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch,
// DeleteRecords, DescribeProducers.

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// brokerRef names one upstream broker.
type brokerRef struct {
	cluster string
	id      UpstreamNodeID
	addr    string
}

// leaderLookup resolves partition leaders for one request, refreshing
// metadata at most once per cluster for topics kproxy has not seen.
type leaderLookup struct {
	rc        *reqCtx
	refreshed map[string]bool
}

func newLeaderLookup(rc *reqCtx) *leaderLookup {
	return &leaderLookup{rc: rc, refreshed: map[string]bool{}}
}

// find returns the leader of topic/partition on cluster, or the Kafka error
// code a client should get (UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER).
func (l *leaderLookup) find(cluster, topic string, partition int32) (brokerRef, int16) {
	uc, err := l.rc.clusterFor(cluster)
	if err != nil {
		return brokerRef{}, kerr.UnknownTopicOrPartition.Code
	}
	id, addr, ok := uc.leader(topic, partition)
	if !ok && !l.refreshed[cluster+"\x00"+topic] {
		l.refreshed[cluster+"\x00"+topic] = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = uc.refresh(ctx, []string{topic})
		cancel()
		id, addr, ok = uc.leader(topic, partition)
	}
	if !ok {
		if !uc.knowsTopic(topic) {
			return brokerRef{}, kerr.UnknownTopicOrPartition.Code
		}
		return brokerRef{}, kerr.NotLeaderForPartition.Code
	}
	return brokerRef{cluster, id, addr}, 0
}

// refreshSoon refreshes a cluster's view of topics in the background after an
// upstream said NOT_LEADER or UNKNOWN_TOPIC; the client retries on its own.
// Refreshes are coalesced per cluster (refresh.go).
func (s *Server) refreshSoon(cluster string, topics []string) {
	if r, ok := s.refreshers[cluster]; ok {
		r.request(topics)
	}
}

// isStaleLeaderCode says whether an upstream partition error means kproxy's
// leader view is out of date.
func isStaleLeaderCode(code int16) bool {
	switch code {
	case kerr.NotLeaderForPartition.Code, kerr.UnknownTopicOrPartition.Code, kerr.LeaderNotAvailable.Code,
		kerr.FencedLeaderEpoch.Code, kerr.UnknownTopicID.Code, kerr.ReplicaNotAvailable.Code:
		return true
	}
	return false
}

// byLeader groups a request's partition entries by upstream leader, keeping
// request order, for the APIs that are split per broker (ListOffsets,
// OffsetForLeaderEpoch, DeleteRecords).
type byLeader[P any] struct {
	order []brokerRef
	subs  map[brokerRef][]topicParts[P]
}

type topicParts[P any] struct {
	topic string
	parts []P
}

// add files entry p (partition partition of topic) under its leader on
// cluster; it returns the Kafka error code when there is no leader.
func (b *byLeader[P]) add(look *leaderLookup, cluster, topic string, partition int32, p P) int16 {
	ref, code := look.find(cluster, topic, partition)
	if code != 0 {
		return code
	}
	if b.subs == nil {
		b.subs = map[brokerRef][]topicParts[P]{}
	}
	ts, ok := b.subs[ref]
	if !ok {
		b.order = append(b.order, ref)
	}
	if n := len(ts); n == 0 || ts[n-1].topic != topic {
		ts = append(ts, topicParts[P]{topic: topic})
	}
	ts[len(ts)-1].parts = append(ts[len(ts)-1].parts, p)
	b.subs[ref] = ts
	return 0
}
