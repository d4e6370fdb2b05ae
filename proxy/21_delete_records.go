package proxy

// DeleteRecords (key 21), accepted v0-2. Route: each topic's produce route,
// each partition to its leader; split per broker and merged.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleDeleteRecords(rc *reqCtx, req *kmsg.DeleteRecordsRequest) func() kmsg.Response {
	return func() kmsg.Response {
		router := rc.srv().routes()
		look := newLeaderLookup(rc)
		resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
		add := func(topic string, p kmsg.DeleteRecordsResponseTopicPartition) {
			for i := range resp.Topics {
				if resp.Topics[i].Topic == topic {
					resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, p)
					return
				}
			}
			rt := kmsg.NewDeleteRecordsResponseTopic()
			rt.Topic, rt.Partitions = topic, []kmsg.DeleteRecordsResponseTopicPartition{p}
			resp.Topics = append(resp.Topics, rt)
		}
		fail := func(topic string, partition int32, code int16) {
			p := kmsg.NewDeleteRecordsResponseTopicPartition()
			p.Partition, p.ErrorCode, p.LowWatermark = partition, code, -1
			add(topic, p)
		}
		var bl byLeader[kmsg.DeleteRecordsRequestTopicPartition]
		for _, t := range req.Topics {
			cluster := router.ProduceCluster(t.Topic, rc.client)
			for _, p := range t.Partitions {
				if code := bl.add(look, cluster, t.Topic, p.Partition, p); code != 0 {
					fail(t.Topic, p.Partition, code)
				}
			}
		}
		order := bl.order
		subs := map[brokerRef]*kmsg.DeleteRecordsRequest{}
		for _, ref := range order {
			sub := *req
			sub.Topics = nil
			for _, tp := range bl.subs[ref] {
				sub.Topics = append(sub.Topics, kmsg.DeleteRecordsRequestTopic{Topic: tp.topic, Partitions: tp.parts})
			}
			subs[ref] = &sub
		}
		for _, ref := range order {
			r, err := rc.roundTrip(ref.cluster, ref.id, ref.addr, subs[ref])
			if err != nil {
				for _, t := range subs[ref].Topics {
					for _, p := range t.Partitions {
						fail(t.Topic, p.Partition, kerr.NotLeaderForPartition.Code)
					}
				}
				continue
			}
			dr := r.(*kmsg.DeleteRecordsResponse)
			for _, t := range dr.Topics {
				for _, p := range t.Partitions {
					add(t.Topic, p)
				}
			}
		}
		return resp
	}
}
