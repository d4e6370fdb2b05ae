package proxy

// ListOffsets (key 2), accepted v1-11. Route: each topic's fetch route, each
// partition to its leader; split per upstream broker and merged.
// Rewrites: a replicated topic read from the target answers virtual offsets
// (ident_offset.go); otherwise offsets are the serving cluster's.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleListOffsets(rc *reqCtx, req *kmsg.ListOffsetsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		router := rc.srv().routes()
		look := newLeaderLookup(rc)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		add := func(topic string, p kmsg.ListOffsetsResponseTopicPartition) {
			for i := range resp.Topics {
				if resp.Topics[i].Topic == topic {
					resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, p)
					return
				}
			}
			rt := kmsg.NewListOffsetsResponseTopic()
			rt.Topic, rt.Partitions = topic, []kmsg.ListOffsetsResponseTopicPartition{p}
			resp.Topics = append(resp.Topics, rt)
		}
		fail := func(topic string, partition int32, code int16) {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Partition, p.ErrorCode, p.Offset, p.Timestamp = partition, code, -1, -1
			add(topic, p)
		}
		var bl byLeader[kmsg.ListOffsetsRequestTopicPartition]
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
		subs := map[brokerRef]*kmsg.ListOffsetsRequest{}
		for _, ref := range order {
			sub := *req
			sub.Topics = nil
			for _, tp := range bl.subs[ref] {
				sub.Topics = append(sub.Topics, kmsg.ListOffsetsRequestTopic{Topic: tp.topic, Partitions: tp.parts})
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
			lr := r.(*kmsg.ListOffsetsResponse)
			resp.ThrottleMillis = max(resp.ThrottleMillis, lr.ThrottleMillis)
			for _, t := range lr.Topics {
				for _, p := range t.Partitions {
					if isStaleLeaderCode(p.ErrorCode) {
						rc.srv().refreshSoon(order[i].cluster, []string{t.Topic})
					}
					p.LeaderEpoch = noEpoch
					if m := rc.srv().offsetMap(order[i].cluster, t.Topic, p.Partition); m != nil && p.ErrorCode == 0 {
						p.Offset = toVirtualOffset(m, p.Offset)
					}
					add(t.Topic, p)
				}
			}
		}
		return resp
	}
}
