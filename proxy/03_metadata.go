package proxy

// Metadata (key 3), accepted v0-13 (intersected with the clusters).
// Route: each topic is answered by the cluster its fetch route names; a
// request for all topics asks every configured cluster and keeps each topic
// from its routed cluster.
// Rewrites (virt.go): Brokers is this instance, or every live instance;
// ControllerID, Leader, Replicas, ISR and OfflineReplicas name this
// instance, or the controller and each partition's owner (virt_nodes.go,
// instances.go);
// LeaderEpoch is -1 (virt_epochs.go); TopicID is the virtual one
// (virt_topicids.go); ClusterID is the virtual one. Every upstream answer
// also refreshes kproxy's own leader view (before the rewrite).

import (
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleMetadata(rc *reqCtx, req *kmsg.MetadataRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		router := s.routes()
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.Brokers = s.metadataBrokers(rc.cc.lst)
		resp.ClusterID = kmsg.StringPtr(s.opts.ClusterID)
		resp.ControllerID = s.controllerID()

		// Which clusters to ask, with which topics.
		all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
		byCluster := map[string][]kmsg.MetadataRequestTopic{}
		if all {
			for name := range s.clusters {
				byCluster[name] = nil
			}
		} else {
			for _, t := range req.Topics {
				if t.Topic == nil { // by virtual id (v12+): ask by name
					n, ok := s.topicIDs.name(t.TopicID)
					if !ok {
						rt := kmsg.NewMetadataResponseTopic()
						rt.TopicID, rt.ErrorCode = t.TopicID, kerr.UnknownTopicID.Code
						resp.Topics = append(resp.Topics, rt)
						continue
					}
					t.Topic, t.TopicID = kmsg.StringPtr(n), [16]byte{}
				}
				name := router.FetchCluster(*t.Topic, rc.client, rc.group(*t.Topic))
				byCluster[name] = append(byCluster[name], t)
			}
			if len(req.Topics) == 0 && req.Topics != nil {
				byCluster[router.DefaultCluster()] = []kmsg.MetadataRequestTopic{}
			}
		}

		type answer struct {
			cluster string
			resp    *kmsg.MetadataResponse
			asked   []kmsg.MetadataRequestTopic
			err     error
		}
		answers := make(chan answer, len(byCluster))
		for name, topics := range byCluster {
			sub := *req
			sub.Topics = topics
			if all {
				sub.Topics = nil
			}
			go func() {
				r := rc.forwardAny(name, &sub)
				mr, _ := r.(*kmsg.MetadataResponse)
				if mr == nil {
					answers <- answer{cluster: name, asked: topics, err: kerr.LeaderNotAvailable}
					return
				}
				answers <- answer{cluster: name, resp: mr, asked: topics}
			}()
		}
		for range byCluster {
			a := <-answers
			if a.err != nil || a.resp.ErrorCode != 0 {
				for _, t := range a.asked {
					rt := kmsg.NewMetadataResponseTopic()
					rt.Topic, rt.TopicID = t.Topic, t.TopicID
					rt.ErrorCode = kerr.LeaderNotAvailable.Code
					resp.Topics = append(resp.Topics, rt)
				}
				continue
			}
			uc := s.clusters[a.cluster]
			uc.learnMetadata(a.resp)
			for _, t := range a.resp.Topics {
				if all && t.Topic != nil && router.FetchCluster(*t.Topic, rc.client, rc.group(*t.Topic)) != a.cluster {
					continue // listed by the cluster this topic routes to
				}
				s.virtMetadataTopic(&t)
				if t.Topic != nil && t.ErrorCode == 0 {
					if msg := rc.splitRouteMismatch(*t.Topic, a.cluster, len(t.Partitions)); msg != "" {
						t.ErrorCode, t.Partitions = kerr.LeaderNotAvailable.Code, nil
					}
				}
				resp.Topics = append(resp.Topics, t)
			}
		}
		sort.Slice(resp.Topics, func(i, j int) bool {
			a, b := resp.Topics[i].Topic, resp.Topics[j].Topic
			return a != nil && b != nil && *a < *b
		})
		return resp
	}
}

// splitRouteMismatch checks a topic whose produce and fetch routes name
// different clusters: both must have it with the same partition count, or
// records would be produced to partitions consumers never read. On a
// mismatch the topic is answered LEADER_NOT_AVAILABLE (clients wait and
// retry, nothing is written) and kproxy logs the reason; it returns the
// reason, or "" when the route is usable.
func (rc *reqCtx) splitRouteMismatch(topic, fetchCluster string, partitions int) string {
	s := rc.srv()
	produce := s.routes().ProduceCluster(topic, rc.client)
	if produce == fetchCluster {
		return ""
	}
	uc, ok := s.clusters[produce]
	if !ok {
		return ""
	}
	n := uc.partitionCount(topic)
	if n < 0 {
		ctx, cancel := rc.ctx()
		_ = uc.refresh(ctx, []string{topic})
		cancel()
		n = uc.partitionCount(topic)
	}
	if n == partitions {
		return ""
	}
	if n >= 0 {
		// kproxy's view of the produce cluster may predate partitions
		// added there since (the source watcher adds a replicated topic's
		// new partitions to the target): refresh it in the background
		// (coalesced), so the client's retry sees the current count.
		s.refreshSoon(produce, []string{topic})
	}
	msg := fmt.Sprintf("topic %q: produce route %s has %d partitions, fetch route %s has %d; kproxy refuses this route until they match", topic, produce, n, fetchCluster, partitions)
	if n < 0 {
		msg = fmt.Sprintf("topic %q: produce route %s does not have the topic, fetch route %s has %d partitions; kproxy refuses this route until both have it", topic, produce, fetchCluster, partitions)
	}
	s.log.Error("split route refused", "topic", topic, "reason", msg)
	return msg
}
