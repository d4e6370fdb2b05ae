package proxy

// Leader lookup for APIs that address partitions and are split by
// partition leader: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch,
// DeleteRecords, DescribeProducers (the split and merge: split_leader.go).

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
