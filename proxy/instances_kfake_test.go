package proxy

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	mbr "github.com/kproxy/kproxy/membership"
)

// With a membership view of two instances, this one answers as one of two
// brokers: both listed, each partition led by its rendezvous owner,
// produce and fetch for the other's partitions refused with
// NOT_LEADER_OR_FOLLOWER, the group's coordinator and the controller taken
// from the view. Without a view (one instance) it leads everything.
func TestInstancesSpreadLeadershipAndRefuseTheOthersPartitions(t *testing.T) {
	const partitions = 8
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(partitions, "orders"))
	srv := startProxy(t, Options{ClusterID: "v", NodeID: 7, Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)})
	// Versions before topic ids, so the requests name the topic.
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.MaxVersions(kversion.V3_0_0()))
	b := cl.SeedBrokers()[0]
	me := mbr.Member{ID: "a", NodeID: 7, Advertise: srv.Addr().String()}
	other := mbr.Member{ID: "b", NodeID: 8, Advertise: "b.example:9092"}
	view := []mbr.Member{me, other}
	if err := srv.SetInstances(&Instances{Self: "a", LeaderID: "b", Members: view}); err != nil {
		t.Fatal(err)
	}

	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("orders")}}
	r, err := b.Request(ctx, mreq)
	if err != nil {
		t.Fatal(err)
	}
	m := r.(*kmsg.MetadataResponse)
	var brokers []int32
	for _, br := range m.Brokers {
		brokers = append(brokers, br.NodeID)
		if br.NodeID == 8 && (br.Host != "b.example" || br.Port != 9092) {
			t.Fatalf("instance b listed at %s:%d", br.Host, br.Port)
		}
	}
	if !slices.Equal(brokers, []int32{7, 8}) || m.ControllerID != 8 {
		t.Fatalf("brokers %v controller %d; want [7 8] and b (8), the membership leader", brokers, m.ControllerID)
	}
	mine, theirs := int32(-1), int32(-1)
	for _, p := range m.Topics[0].Partitions {
		owner, _ := mbr.Owner(partitionKey("orders", p.Partition), view)
		if p.Leader != owner.NodeID || !slices.Equal(p.Replicas, []int32{owner.NodeID}) {
			t.Fatalf("partition %d: leader %d replicas %v, want the owner %s (%d)", p.Partition, p.Leader, p.Replicas, owner.ID, owner.NodeID)
		}
		if owner.ID == "a" {
			mine = p.Partition
		} else {
			theirs = p.Partition
		}
	}
	if mine < 0 || theirs < 0 {
		t.Fatalf("all %d partitions went to one instance", partitions)
	}

	produce := func(p int32) int16 {
		t.Helper()
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "orders"
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p, oneRecordBatch()
		rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
		req.Topics = []kmsg.ProduceRequestTopic{rt}
		r, err := b.Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode
	}
	fetch := func(p int32) kmsg.FetchResponseTopicPartition {
		t.Helper()
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes, req.SessionEpoch = 10, 1<<20, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "orders"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = p, 1<<20, -1
		rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
		req.Topics = []kmsg.FetchRequestTopic{rt}
		r, err := b.Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.(*kmsg.FetchResponse).Topics[0].Partitions[0]
	}
	if code := produce(theirs); code != kerr.NotLeaderForPartition.Code {
		t.Fatalf("produce to b's partition %d: code %d, want NOT_LEADER_OR_FOLLOWER", theirs, code)
	}
	// The refusal carries an empty record set, as a broker's does: on a
	// null one librdkafka drops the whole answer unread ("invalid
	// MessageSetSize -1") and fetches the partition here forever.
	if fp := fetch(theirs); fp.ErrorCode != kerr.NotLeaderForPartition.Code || fp.RecordBatches == nil {
		t.Fatalf("fetch of b's partition %d: code %d, records null %v; want NOT_LEADER_OR_FOLLOWER with an empty record set", theirs, fp.ErrorCode, fp.RecordBatches == nil)
	}
	if code := produce(mine); code != 0 {
		t.Fatalf("produce to own partition %d: %v", mine, kerr.ErrorForCode(code))
	}
	if fp := fetch(mine); fp.ErrorCode != 0 {
		t.Fatalf("fetch of own partition %d: %v", mine, kerr.ErrorForCode(fp.ErrorCode))
	}

	// Coordinators: each key's owner, with its address.
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorKeys = []string{"g1", "g2", "g3", "g4", "g5", "g6"}
	r, err = b.Request(ctx, fc)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[int32]bool{}
	for _, co := range r.(*kmsg.FindCoordinatorResponse).Coordinators {
		owner, _ := mbr.Owner(coordinatorKey(0, co.Key), view)
		if co.ErrorCode != 0 || co.NodeID != owner.NodeID {
			t.Fatalf("coordinator of %s: node %d code %d, want %d", co.Key, co.NodeID, co.ErrorCode, owner.NodeID)
		}
		if co.NodeID == 8 && co.Host != "b.example" {
			t.Fatalf("coordinator b answered at %s", co.Host)
		}
		owners[co.NodeID] = true
	}
	if len(owners) != 2 {
		t.Fatalf("six groups' coordinators all on one instance: %v", owners)
	}

	dc := kmsg.NewPtrDescribeClusterRequest()
	r, err = b.Request(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	if d := r.(*kmsg.DescribeClusterResponse); len(d.Brokers) != 2 || d.ControllerID != 8 {
		t.Fatalf("DescribeCluster: %d brokers, controller %d; want 2 and 8", len(d.Brokers), d.ControllerID)
	}

	// Back to one instance: this one leads everything again.
	if err := srv.SetInstances(nil); err != nil {
		t.Fatal(err)
	}
	if code := produce(theirs); code != 0 {
		t.Fatalf("alone, produce to partition %d: %v", theirs, kerr.ErrorForCode(code))
	}
}

// idempotentBatch is oneRecordBatch from producer (pid, epoch) at sequence seq.
func idempotentBatch(pid int64, epoch int16, seq int32) []byte {
	raw := oneRecordBatch()
	binary.BigEndian.PutUint64(raw[43:], uint64(pid))
	binary.BigEndian.PutUint16(raw[51:], uint16(epoch))
	binary.BigEndian.PutUint32(raw[53:], uint32(seq))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// A partition that moves away from this instance and comes back (the other
// instance left) meets the client's sequence where the other instance left
// it: this instance's old upstream session would refuse it as out of order,
// so a partition gained gives its topic fresh upstream sessions.
func TestInstancesPartitionComingBackGetsAFreshProducerSession(t *testing.T) {
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(8, "orders"))
	srv := startProxy(t, Options{ClusterID: "v", NodeID: 7, Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)})
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.MaxVersions(kversion.V3_0_0()))
	b := cl.SeedBrokers()[0]
	me := mbr.Member{ID: "a", NodeID: 7, Advertise: srv.Addr().String()}
	other := mbr.Member{ID: "b", NodeID: 8, Advertise: "b.example:9092"}
	p := int32(-1)
	for i := range int32(8) {
		if o, _ := mbr.Owner(partitionKey("orders", i), []mbr.Member{me, other}); o.ID == "b" {
			p = i
			break
		}
	}
	if p < 0 {
		t.Fatal("b owns none of 8 partitions")
	}
	vpid := virtualPIDBit | 12345
	produce := func(seq int32) int16 {
		t.Helper()
		return produceIdempotentBatch(t, ctx, b, "orders", p, vpid, seq)
	}
	alone := &Instances{Self: "a", LeaderID: "a", Members: []mbr.Member{me}}
	if err := srv.SetInstances(alone); err != nil {
		t.Fatal(err)
	}
	for seq := range int32(2) {
		if code := produce(seq); code != 0 {
			t.Fatalf("sequence %d: %v", seq, kerr.ErrorForCode(code))
		}
	}
	// b joins and takes the partition; the producer writes sequences 2-4
	// through b (another upstream session, not simulated here); b leaves.
	if err := srv.SetInstances(&Instances{Self: "a", LeaderID: "a", Members: []mbr.Member{me, other}}); err != nil {
		t.Fatal(err)
	}
	if code := produce(2); code != kerr.NotLeaderForPartition.Code {
		t.Fatalf("while b owns partition %d: code %d, want NOT_LEADER_OR_FOLLOWER", p, code)
	}
	if err := srv.SetInstances(alone); err != nil {
		t.Fatal(err)
	}
	if code := produce(5); code != 0 {
		t.Fatalf("sequence 5 after the partition came back: %v", kerr.ErrorForCode(code))
	}
}

// Listings (every topic) come from cached, translated views
// (metadata_view.go) whose leaders are the owner instances of the
// membership at translation: a new membership must not be answered from a
// view or a shared answer built under the old one.
func TestListingLeadersFollowAMembershipChange(t *testing.T) {
	const partitions = 12
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(partitions, "orders"))
	srv := startProxy(t, Options{ClusterID: "v", NodeID: 7, Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)})
	cl, ctx := proxyClient(t, srv, 30*time.Second)
	b := cl.SeedBrokers()[0]
	me := mbr.Member{ID: "a", NodeID: 7, Advertise: srv.Addr().String()}
	two := []mbr.Member{me, {ID: "b", NodeID: 8, Advertise: "b.example:9092"}}
	three := append(slices.Clone(two), mbr.Member{ID: "c", NodeID: 9, Advertise: "c.example:9092"})
	check := func(view []mbr.Member) {
		t.Helper()
		// Twice: the second listing is the one a view or a shared answer serves.
		for range 2 {
			r, err := b.Request(ctx, kmsg.NewPtrMetadataRequest()) // Topics nil: every topic
			if err != nil {
				t.Fatal(err)
			}
			m := r.(*kmsg.MetadataResponse)
			if len(m.Brokers) != len(view) {
				t.Fatalf("%d brokers listed, want %d", len(m.Brokers), len(view))
			}
			for _, tp := range m.Topics {
				if tp.Topic == nil || *tp.Topic != "orders" {
					continue
				}
				for _, p := range tp.Partitions {
					owner, _ := mbr.Owner(partitionKey("orders", p.Partition), view)
					if p.Leader != owner.NodeID {
						t.Fatalf("with %d instances: partition %d led by %d, want its owner %s (%d)", len(view), p.Partition, p.Leader, owner.ID, owner.NodeID)
					}
				}
			}
		}
	}
	if err := srv.SetInstances(&Instances{Self: "a", LeaderID: "a", Members: two}); err != nil {
		t.Fatal(err)
	}
	check(two)
	if err := srv.SetInstances(&Instances{Self: "a", LeaderID: "a", Members: three}); err != nil {
		t.Fatal(err)
	}
	check(three)
}

// An instance handing over after it left the membership stays listed as a
// broker but leads and coordinates nothing: Metadata names the other
// instance as every partition's leader and the coordinator of every group,
// and still lists this one (a transactional franz-go producer failed its
// buffered batches with "unknown broker" when the broker vanished from
// Metadata before its partitions moved).
func TestLeavingInstanceStaysListedAndLeadsNothing(t *testing.T) {
	const partitions = 8
	c := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(partitions, "orders"))
	srv := startProxy(t, Options{ClusterID: "v", NodeID: 7, Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)})
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.MaxVersions(kversion.V3_0_0()))
	b := cl.SeedBrokers()[0]
	me := mbr.Member{ID: "a", NodeID: 7, Advertise: srv.Addr().String()}
	other := mbr.Member{ID: "b", NodeID: 8, Advertise: "b.example:9092"}
	if err := srv.SetInstances(&Instances{Self: "a", LeaderID: "b", Members: []mbr.Member{me, other}, Leaving: "a"}); err != nil {
		t.Fatal(err)
	}
	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("orders")}}
	r, err := b.Request(ctx, mreq)
	if err != nil {
		t.Fatal(err)
	}
	m := r.(*kmsg.MetadataResponse)
	var brokers []int32
	for _, br := range m.Brokers {
		brokers = append(brokers, br.NodeID)
	}
	if !slices.Equal(brokers, []int32{7, 8}) {
		t.Fatalf("brokers %v, want the leaving instance still listed: [7 8]", brokers)
	}
	for _, p := range m.Topics[0].Partitions {
		if p.Leader != 8 {
			t.Fatalf("partition %d led by %d while instance a leaves; want b (8)", p.Partition, p.Leader)
		}
		if code := srv.leadsHere("orders", p.Partition); code != kerr.NotLeaderForPartition.Code {
			t.Fatalf("partition %d: the leaving instance answers %d, want NOT_LEADER_OR_FOLLOWER", p.Partition, code)
		}
	}
	for _, g := range []string{"g1", "g2", "g3", "g4"} {
		if resp := srv.notCoordinator(0, g, kmsg.NewPtrHeartbeatRequest()); resp == nil {
			t.Fatalf("the leaving instance still coordinates group %s", g)
		}
	}
}

// produceIdempotentBatch sends one idempotent batch of a virtual producer
// (epoch 0, sequence seq) to partition p of topic through broker b and
// returns the partition's error code.
func produceIdempotentBatch(t *testing.T, ctx context.Context, b *kgo.Broker, topic string, p int32, vpid int64, seq int32) int16 {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = p, idempotentBatch(vpid, 0, seq)
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
	req.Topics = []kmsg.ProduceRequestTopic{rt}
	r, err := b.Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode
}
