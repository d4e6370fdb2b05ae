package proxy

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A client reads a topic's Metadata from one kproxy and fetches by topic
// id (Fetch v13+) from another of the same virtual cluster that never
// answered Metadata for the topic, created after both started: what a
// client of several instances does whenever a partition's leader is not
// the instance it asked (and what a client does after a restart without
// state_dir). The second must know the id, the topic name's derived one.
// It answered UNKNOWN_TOPIC_ID until it happened to answer Metadata for
// the topic itself: through three instances on real Kafka, franz-go
// consumers of a new topic waited 5-20 s on it.
func TestFetchByATopicIDAnotherInstanceHandedOut(t *testing.T) {
	c := newKfake(t, kfake.NumBrokers(1))
	opts := Options{ClusterID: "virtual", NodeID: 1, Clusters: map[string][]string{Source: c.ListenAddrs()}, Router: StaticRouter(Source)}
	a, b := startProxy(t, opts), startProxy(t, opts)

	direct := kfakeClient(t, c, kgo.DefaultProduceTopic("orders"))
	clA, ctx := proxyClient(t, a, 20*time.Second)
	if _, err := kadm.NewClient(direct).CreateTopic(ctx, 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := direct.ProduceSync(ctx, &kgo.Record{Value: []byte("r0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("orders")}}
	mresp, err := mreq.RequestWith(ctx, clA)
	if err != nil {
		t.Fatal(err)
	}
	if len(mresp.Topics) != 1 || mresp.Topics[0].TopicID == ([16]byte{}) {
		t.Fatalf("metadata through the first kproxy: %+v", mresp.Topics)
	}
	id := mresp.Topics[0].TopicID

	clB, _ := proxyClient(t, b, 20*time.Second)
	freq := kmsg.NewPtrFetchRequest()
	freq.MaxWaitMillis, freq.MaxBytes = 100, 1<<20
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes = 0, 0, 1<<20
	freq.Topics = []kmsg.FetchRequestTopic{{TopicID: id, Partitions: []kmsg.FetchRequestTopicPartition{fp}}}
	r, err := clB.SeedBrokers()[0].Request(ctx, freq)
	if err != nil {
		t.Fatal(err)
	}
	fresp := r.(*kmsg.FetchResponse)
	if fresp.Version < 13 {
		t.Fatalf("fetch v%d: the test needs v13+ (topic ids)", fresp.Version)
	}
	if len(fresp.Topics) != 1 || len(fresp.Topics[0].Partitions) != 1 {
		t.Fatalf("fetch through the second kproxy: %+v", fresp.Topics)
	}
	ft := fresp.Topics[0]
	p := ft.Partitions[0]
	if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
		t.Fatalf("fetch by the id the first kproxy handed out, through the second: %v", err)
	}
	if ft.TopicID != id || p.HighWatermark != 1 || len(p.RecordBatches) == 0 {
		t.Fatalf("fetch answer: topic id %x (want %x), high watermark %d, %d bytes of records", ft.TopicID, id, p.HighWatermark, len(p.RecordBatches))
	}
}
