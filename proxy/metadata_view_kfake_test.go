package proxy

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// metadataViewRig is two kfake clusters whose topics differ (partition
// counts, topics on one side only) behind a proxy whose routes have a
// group canary, a client canary and a per-topic route.
type metadataViewRig struct {
	t        *testing.T
	srv      *Server
	src, tgt *kfake.Cluster
	ctx      context.Context
}

const metadataViewRoutes = routesHeader + `routes:
  default: source
  topics:
    orders: { route: source, canary: { fetch: target, groups: ["canary-*"] } }
    pay: { route: source, canary: { fetch: target, clients: ["shadow-*"] } }
    tgt-only: target
`

func newMetadataViewRig(t *testing.T) *metadataViewRig {
	t.Helper()
	src := newKfake(t, kfake.NumBrokers(2), kfake.ClusterID("src"),
		kfake.SeedTopics(2, "a", "orders", "pay"), kfake.SeedTopics(1, "src-only"))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("tgt"),
		kfake.SeedTopics(2, "a"), kfake.SeedTopics(3, "orders", "pay"), kfake.SeedTopics(1, "tgt-only"))
	srv := startProxy(t, Options{NodeID: 7, StateDir: t.TempDir(), Registerer: prometheus.NewRegistry(),
		Router: tableFor(t, metadataViewRoutes), Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return &metadataViewRig{t: t, srv: srv, src: src, tgt: tgt, ctx: ctx}
}

func (r *metadataViewRig) client(opts ...kgo.Opt) *kgo.Client {
	cl, _ := proxyClient(r.t, r.srv, time.Minute, opts...)
	return cl
}

func (r *metadataViewRig) listingOnce(cl *kgo.Client) *kmsg.MetadataResponse {
	r.t.Helper()
	req := kmsg.NewPtrMetadataRequest() // Topics nil: every topic
	resp, err := req.RequestWith(r.ctx, cl)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp
}

func (r *metadataViewRig) sources() map[string]float64 {
	out := map[string]float64{}
	for _, s := range []string{"shared", "views", "clusters"} {
		out[s] = counterValue(r.srv.metrics.metadataListings.WithLabelValues(s))
	}
	return out
}

// listing asks cl for every topic with kproxy's views, then with views
// off (the answer forwarded as before), and fails unless both are equal
// in every field. from, if set, is where the first answer must have come
// from ("shared", "views" or "clusters"). It returns the answer.
func (r *metadataViewRig) listing(what string, cl *kgo.Client, from string) *kmsg.MetadataResponse {
	r.t.Helper()
	before := r.sources()
	got := r.listingOnce(cl)
	after := r.sources()
	r.srv.viewsOff.Store(true)
	want := r.listingOnce(cl)
	r.srv.viewsOff.Store(false)
	// Views list partitions by index, as Kafka does; kfake lists them in
	// map order, so the forwarded answer is put in index order here.
	for _, m := range []*kmsg.MetadataResponse{got, want} {
		for i := range m.Topics {
			slices.SortFunc(m.Topics[i].Partitions, func(a, b kmsg.MetadataResponseTopicPartition) int { return cmp.Compare(a.Partition, b.Partition) })
		}
	}
	if !reflect.DeepEqual(got, want) {
		r.t.Errorf("%s: the listing from kproxy's views differs from the forwarded one:\n views:     %s\n forwarded: %s", what, describeListing(got), describeListing(want))
	}
	if from != "" && after[from]-before[from] < 1 {
		r.t.Errorf("%s: listing answered from %v (counter deltas), want %s", what, deltas(before, after), from)
	}
	return got
}

// eventually repeats listing until it is answered from one of from (the
// views are refreshed in the background), comparing every time.
func (r *metadataViewRig) eventually(what string, cl *kgo.Client, from ...string) *kmsg.MetadataResponse {
	r.t.Helper()
	for {
		before := r.sources()
		resp := r.listing(what, cl, "")
		after := r.sources()
		for _, f := range from {
			if after[f] > before[f] {
				return resp
			}
		}
		if r.ctx.Err() != nil {
			r.t.Fatalf("%s: never answered from %v", what, from)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func deltas(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k := range after {
		d[k] = after[k] - before[k]
	}
	return d
}

func describeListing(m *kmsg.MetadataResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d cluster=%v controller=%d brokers=%v", m.Version, kmsg.StringPtr(deref(m.ClusterID)), m.ControllerID, m.Brokers)
	for _, t := range m.Topics {
		fmt.Fprintf(&b, " [%s err=%d id=%x internal=%v parts=%d", deref(t.Topic), t.ErrorCode, t.TopicID[:4], t.IsInternal, len(t.Partitions))
		for _, p := range t.Partitions {
			fmt.Fprintf(&b, " %d:%d/%d/%v/%v", p.Partition, p.ErrorCode, p.Leader, p.Replicas, p.LeaderEpoch)
		}
		b.WriteString("]")
	}
	return b.String()
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func topicOf(m *kmsg.MetadataResponse, name string) *kmsg.MetadataResponseTopic {
	for i := range m.Topics {
		if deref(m.Topics[i].Topic) == name {
			return &m.Topics[i]
		}
	}
	return nil
}

// A listing answered from kproxy's views, or from an encoded answer shared
// between requests, is the forwarded answer, field for field: across
// clients in a group canary and a client canary, older request versions,
// a route flip, topics created, grown and deleted through kproxy, and a
// change made on a cluster directly and picked up by a partial refresh.
func TestMetadataListingsFromViewsMatchForwarded(t *testing.T) {
	r := newMetadataViewRig(t)
	plain := r.client(kgo.ClientID("plain"))

	first := r.listing("first listing", plain, "views")
	if topicOf(first, "tgt-only") == nil || topicOf(first, "src-only") == nil || topicOf(first, "orders") == nil {
		t.Fatalf("first listing lacks topics: %s", describeListing(first))
	}
	if n := len(topicOf(first, "orders").Partitions); n != 2 {
		t.Fatalf("orders has %d partitions for a client outside the canary, want the source's 2", n)
	}
	r.listing("repeated listing", plain, "shared")

	// Older versions: v9 (flexible) from views, v5 forwarded (brokers
	// answer below v6 differently for unavailable listeners).
	r.listing("v9 listing", r.client(kgo.ClientID("plain"), kgo.MaxVersions(kversion.V2_4_0())), "views")
	r.listing("v5 listing", r.client(kgo.ClientID("plain"), kgo.MaxVersions(kversion.V1_0_0())), "clusters")

	// A client canary: pay comes from the target for shadow-1. Asked
	// after the shared answer exists, which must not be given to it.
	shadow := r.client(kgo.ClientID("shadow-1"))
	if got := r.listing("client canary", shadow, "views"); reflect.DeepEqual(*topicOf(got, "pay"), *topicOf(first, "pay")) {
		t.Fatalf("the canary client's pay equals the base route's: %s", describeListing(got))
	}

	// A group canary: a member of canary-g reading orders gets orders
	// from the target, where it has 3 partitions against the source's 2
	// (so the split-route check answers LEADER_NOT_AVAILABLE).
	// The member's instance is filed as a JoinGroup would file it
	// (group_membership.go). franz-go sends ApiVersions, which carries
	// the software name, only on its first connection to a broker, so a
	// real member's later connections would key without it; this key is
	// the one the listing's connections have.
	r.srv.members.hold(instanceKey{ip: "127.0.0.1", clientID: "member"}, "canary-g", topicSet{"orders": {}}, true)
	asMember := r.client(kgo.ClientID("member"), kgo.SoftwareNameAndVersion("", ""))
	got := r.listing("group canary member", asMember, "views")
	if o := topicOf(got, "orders"); o == nil || reflect.DeepEqual(*o, *topicOf(first, "orders")) {
		t.Fatalf("the canary member's orders equals the base route's: %s", describeListing(got))
	}
	r.listing("plain client after the canary's", plain, "shared")

	// A flip: a moves to the target. Views fetched before the new routes
	// answer no listing; once refreshed they do again.
	r.srv.SetRouter(tableFor(t, strings.Replace(metadataViewRoutes, "tgt-only: target", "tgt-only: target\n    a: target", 1)))
	r.listing("right after a flip", plain, "clusters")
	r.eventually("after a flip, views refreshed", plain, "views", "shared")

	// Created through kproxy: in the next listing.
	adm := kadm.NewClient(plain)
	if _, err := adm.CreateTopic(r.ctx, 3, 1, nil, "created"); err != nil {
		t.Fatal(err)
	}
	if got := r.listing("after CreateTopics", plain, ""); topicOf(got, "created") == nil {
		t.Fatalf("created topic missing: %s", describeListing(got))
	}
	r.eventually("after CreateTopics, views refreshed", plain, "views", "shared")

	// Grown through kproxy (a is on the target now).
	if _, err := adm.CreatePartitions(r.ctx, 2, "a"); err != nil {
		t.Fatal(err)
	}
	if got := r.listing("after CreatePartitions", plain, ""); len(topicOf(got, "a").Partitions) != 4 {
		t.Fatalf("a after CreatePartitions: %s", describeListing(got))
	}
	r.eventually("after CreatePartitions, views refreshed", plain, "views", "shared")

	// Deleted through kproxy.
	if _, err := adm.DeleteTopics(r.ctx, "created"); err != nil {
		t.Fatal(err)
	}
	if got := r.listing("after DeleteTopics", plain, ""); topicOf(got, "created") != nil {
		t.Fatalf("deleted topic still listed: %s", describeListing(got))
	}
	r.eventually("after DeleteTopics, views refreshed", plain, "views", "shared")

	// Grown on the source directly: a partial refresh (as after a
	// stale-leader error) patches the view.
	if _, err := kadm.NewClient(kfakeClient(t, r.src)).CreatePartitions(r.ctx, 1, "src-only"); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.clusters[Source].refresh(r.ctx, []string{"src-only"}); err != nil {
		t.Fatal(err)
	}
	if got := r.listing("after a partial refresh", plain, "views"); len(topicOf(got, "src-only").Partitions) != 2 {
		t.Fatalf("src-only after the partial refresh: %s", describeListing(got))
	}
	r.listing("canary member at the end", asMember, "views")
	r.listing("client canary at the end", shadow, "views")
}

// A refresh that changes nothing keeps the view, its generation and the
// answers encoded from it; one that changes something replaces them.
func TestMetadataViewPatchedByPartialRefresh(t *testing.T) {
	r := newMetadataViewRig(t)
	plain := r.client(kgo.ClientID("plain"))
	r.listing("first", plain, "views")
	r.listing("second", plain, "shared")
	uc := r.srv.clusters[Source]
	gen := uc.view.load().gen
	for _, topics := range [][]string{{"a"}, {"a", "orders", "pay"}, nil} {
		if err := uc.refresh(r.ctx, topics); err != nil {
			t.Fatal(err)
		}
		if g := uc.view.load().gen; g != gen {
			t.Fatalf("a refresh of %v that changed nothing moved the view from generation %d to %d", topics, gen, g)
		}
		r.listing(fmt.Sprintf("after an unchanged refresh of %v", topics), plain, "shared")
	}
	if _, err := kadm.NewClient(kfakeClient(t, r.src)).CreatePartitions(r.ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	if err := uc.refresh(r.ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if g := uc.view.load().gen; g == gen {
		t.Fatal("a refresh that grew a topic kept the view's generation")
	}
	if got := r.listing("after a changed refresh", plain, "views"); len(topicOf(got, "a").Partitions) != 3 {
		t.Fatalf("a after the refresh: %s", describeListing(got))
	}
}

// A view marked stale while a refresh was in flight does not take that
// refresh's answer: it predates the change.
func TestMetadataViewRefreshRacingAChangeIsNotInstalled(t *testing.T) {
	h := &viewHolder{translate: func(*kmsg.MetadataResponseTopic) {}}
	listing := func(names ...string) *kmsg.MetadataResponse {
		resp := kmsg.NewPtrMetadataResponse()
		for _, n := range names {
			rt := kmsg.NewMetadataResponseTopic()
			rt.Topic = kmsg.StringPtr(n)
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	h.learn(nil, listing("a"), h.dirtySeq(), time.Now())
	if v := h.load(); v == nil || !v.complete || len(v.topics) != 1 {
		t.Fatalf("view after a full listing: %+v", v)
	}
	seq := h.dirtySeq()
	h.markStale([]string{"b"}) // b created through kproxy meanwhile
	h.learn(nil, listing("a"), seq, time.Now())
	if h.load().complete {
		t.Fatal("a listing asked before the change made the view complete again")
	}
	h.learn(nil, listing("a", "b"), h.dirtySeq(), time.Now())
	if v := h.load(); !v.complete || len(v.topics) != 2 {
		t.Fatalf("view after a listing asked after the change: %+v", v)
	}
}
