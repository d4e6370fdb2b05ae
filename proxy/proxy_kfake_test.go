package proxy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// newKfakeProxy starts a kfake cluster with n brokers and a proxy in front.
func newKfakeProxy(t *testing.T, brokers int, opts ...kfake.Opt) (*Server, *kfake.Cluster) {
	t.Helper()
	c := newKfake(t, append([]kfake.Opt{kfake.NumBrokers(brokers), kfake.ClusterID("upstream-src"), kfake.AllowAutoTopicCreation()}, opts...)...)
	srv := startProxy(t, Options{
		ClusterID: "virtual-cluster",
		NodeID:    7,
		Clusters:  map[string][]string{Source: c.ListenAddrs()},
		Router:    StaticRouter(Source),
	})
	return srv, c
}

// Records produced through the proxy to a three-broker cluster come back in
// order through a consumer group, with the offsets the producer was told.
func TestProduceConsumeThroughProxyFanOut(t *testing.T) {
	srv, _ := newKfakeProxy(t, 3, kfake.SeedTopics(6, "orders"))
	addr := srv.Addr().String()

	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 600
	acked := map[string]int64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		r := &kgo.Record{Key: []byte(fmt.Sprintf("k-%d", i%17)), Value: []byte(fmt.Sprintf("v-%d", i))}
		prod.Produce(context.Background(), r, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			mu.Lock()
			acked[fmt.Sprintf("%d/%d", r.Partition, r.Offset)] = 1
			mu.Unlock()
		})
	}
	wg.Wait()

	cons, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("g1"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := 0
	last := map[int32]int64{}
	for seen < n {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d before timeout", seen, n)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Errorf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if prev, ok := last[r.Partition]; ok && r.Offset != prev+1 {
				t.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, prev)
			}
			last[r.Partition] = r.Offset
			if _, ok := acked[fmt.Sprintf("%d/%d", r.Partition, r.Offset)]; !ok {
				t.Errorf("consumed %d/%d which was never acked", r.Partition, r.Offset)
			}
			seen++
		})
	}
	if seen != n {
		t.Fatalf("consumed %d, want %d", seen, n)
	}
}
