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
// A listing (every topic) is answered from kproxy's translated views of the
// clusters where they are current, and an identical listing's encoded answer
// is reused when nothing about the connection changes it
// (metadata_view.go).

import (
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleMetadata(rc *reqCtx, req *kmsg.MetadataRequest) func() kmsg.Response {
	return func() kmsg.Response {
		s := rc.srv()
		box := s.router.Load()
		router := box.r
		all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
		// A listing may be answered from kproxy's views of the clusters,
		// or shared with identical earlier requests (metadata_view.go).
		now := time.Now()
		useViews := s.viewsServe(req, all)
		if useViews {
			if r := s.sharedListing(rc, req, box, now); r != nil {
				return r
			}
		}
		var shared *sharedAnswer
		var st sharedState
		if useViews && !rc.metadataFiltered {
			// Taken before any view is read: the answer is only ever
			// shared while nothing it was built from changed.
			var ok bool
			if st, ok = s.sharedStateNow(box); ok {
				shared = &sharedAnswer{}
			}
		}
		// fetchRoute is the topic's fetch cluster for this client. The
		// group lookup is only needed where a canary can select by it;
		// a topic whose route depends on the client is noted for the
		// shared answer, which only holds for clients on the base route.
		cr := asCanaryRouter(router)
		var noted map[string]bool
		fetchRoute := func(topic string) string {
			if cr == nil {
				return router.FetchCluster(topic, rc.client, rc.group(topic))
			}
			base, canary := cr.FetchBase(topic)
			if !canary {
				return base
			}
			c := router.FetchCluster(topic, rc.client, rc.group(topic))
			if shared != nil && !noted[topic] {
				if c != base {
					shared = nil // this client is in a canary: its answer is its own
				} else {
					if noted == nil {
						noted = map[string]bool{}
					}
					noted[topic] = true
					shared.canaries = append(shared.canaries, topicRoute{topic, base})
				}
			}
			return c
		}

		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.Brokers = s.metadataBrokers(rc.cc.lst)
		resp.ClusterID = kmsg.StringPtr(s.opts.ClusterID)
		resp.ControllerID = s.controllerID()

		// Which clusters to ask, with which topics.
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
				name := fetchRoute(*t.Topic)
				byCluster[name] = append(byCluster[name], t)
			}
			if len(req.Topics) == 0 && req.Topics != nil {
				byCluster[router.DefaultCluster()] = []kmsg.MetadataRequestTopic{}
			}
		}

		type answer struct {
			cluster string
			resp    *kmsg.MetadataResponse
			view    *mdView // answered from kproxy's view instead
			asked   []kmsg.MetadataRequestTopic
			err     error
		}
		answers := make(chan answer, len(byCluster))
		fromViews := useViews
		for name, topics := range byCluster {
			if useViews {
				if v := s.listingView(name, box, now); v != nil {
					answers <- answer{cluster: name, view: v}
					if shared != nil {
						shared.views = append(shared.views, name)
					}
					continue
				}
			}
			fromViews, shared = false, nil
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
		// keep adds a topic of cluster's answer, translated, as the client
		// sees it.
		keep := func(cluster string, t kmsg.MetadataResponseTopic) {
			if t.Topic != nil && t.ErrorCode == 0 {
				if msg := rc.splitRouteMismatch(*t.Topic, cluster, len(t.Partitions)); msg != "" {
					t.ErrorCode, t.Partitions = kerr.LeaderNotAvailable.Code, nil
					if shared != nil {
						if shared.mismatched == nil {
							shared.mismatched = map[string][]string{}
						}
						p := router.ProduceCluster(*t.Topic, rc.client)
						shared.mismatched[p] = append(shared.mismatched[p], *t.Topic)
					}
				}
			}
			resp.Topics = append(resp.Topics, t)
		}
		for range byCluster {
			a := <-answers
			if a.view != nil {
				// Translated when the view was made (virt.go's steps).
				for _, t := range a.view.topics {
					if fetchRoute(*t.Topic) != a.cluster {
						continue // listed by the cluster this topic routes to
					}
					keep(a.cluster, *t)
				}
				continue
			}
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
				if all && t.Topic != nil && fetchRoute(*t.Topic) != a.cluster {
					continue // listed by the cluster this topic routes to
				}
				s.virtMetadataTopic(&t)
				keep(a.cluster, t)
			}
		}
		sort.Slice(resp.Topics, func(i, j int) bool {
			a, b := resp.Topics[i].Topic, resp.Topics[j].Topic
			return a != nil && b != nil && *a < *b
		})
		if !all {
			return resp
		}
		switch {
		case !fromViews:
			s.metrics.metadataListings.WithLabelValues("clusters").Inc()
		case shared != nil:
			s.metrics.metadataListings.WithLabelValues("views").Inc()
			return s.shareListing(rc, req, st, shared, resp)
		default:
			s.metrics.metadataListings.WithLabelValues("views").Inc()
		}
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
