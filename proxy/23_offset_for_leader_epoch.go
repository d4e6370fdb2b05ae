package proxy

// OffsetForLeaderEpoch (key 23), accepted v2 only: Java validates positions
// with v3+, and kproxy shows no epochs (ident_epoch.go), so clients have
// nothing to validate. Route: each topic's fetch
// route, each partition to its leader; split per broker and merged.
// Rewrites: the client's CurrentLeaderEpoch is dropped (-1) so no broker
// fences it; offsets are the serving cluster's.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleOffsetForLeaderEpoch(rc *reqCtx, req *kmsg.OffsetForLeaderEpochRequest) func() kmsg.Response {
	return func() kmsg.Response {
		router := rc.srv().routes()
		look := newLeaderLookup(rc)
		resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		add := func(topic string, p kmsg.OffsetForLeaderEpochResponseTopicPartition) {
			for i := range resp.Topics {
				if resp.Topics[i].Topic == topic {
					resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, p)
					return
				}
			}
			rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
			rt.Topic, rt.Partitions = topic, []kmsg.OffsetForLeaderEpochResponseTopicPartition{p}
			resp.Topics = append(resp.Topics, rt)
		}
		fail := func(topic string, partition int32, code int16) {
			p := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			p.Partition, p.ErrorCode, p.LeaderEpoch, p.EndOffset = partition, code, -1, -1
			add(topic, p)
		}
		var bl byLeader[kmsg.OffsetForLeaderEpochRequestTopicPartition]
		for _, t := range req.Topics {
			cluster := router.FetchCluster(t.Topic, rc.client, rc.group())
			for _, p := range t.Partitions {
				p.CurrentLeaderEpoch = noEpoch
				if code := bl.add(look, cluster, t.Topic, p.Partition, p); code != 0 {
					fail(t.Topic, p.Partition, code)
				}
			}
		}
		order := bl.order
		subs := map[brokerRef]*kmsg.OffsetForLeaderEpochRequest{}
		for _, ref := range order {
			sub := *req
			sub.Topics = nil
			for _, tp := range bl.subs[ref] {
				sub.Topics = append(sub.Topics, kmsg.OffsetForLeaderEpochRequestTopic{Topic: tp.topic, Partitions: tp.parts})
			}
			subs[ref] = &sub
		}
		pend := make([]*pending, len(order))
		for i, ref := range order {
			pend[i] = rc.send(ref.cluster, ref.id, ref.addr, subs[ref])
		}
		for i, pd := range pend {
			r, err := pd.response()
			if err != nil {
				for _, t := range subs[order[i]].Topics {
					for _, p := range t.Partitions {
						fail(t.Topic, p.Partition, kerr.NotLeaderForPartition.Code)
					}
				}
				continue
			}
			or := r.(*kmsg.OffsetForLeaderEpochResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, or.ThrottleMillis)
			for _, t := range or.Topics {
				for _, p := range t.Partitions {
					add(t.Topic, p)
				}
			}
		}
		return resp
	}
}
