package replicator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Two AddTopic calls for one topic at once (the control plane starting the
// copy back at a flip while a config reload syncs the same copy) start one
// copy: the second returns while the first is still setting the topic up,
// and every source record reaches the target once. Before the fix both
// passed the "already running" check during the (slow, over TLS and SASL)
// setup and two partition workers each wrote every batch; the secured
// cutover test found it as "something else wrote into the target
// partition" on the real clusters.
func TestConcurrentAddTopicStartsOneCopy(t *testing.T) {
	const topic, n = "twice", 50
	src, tgt := newClusters(t, kfake.SeedTopics(1, topic))
	prod := newClient(t, src.ListenAddrs(), kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond})
	defer r.Stop()

	// The first AddTopic's source metadata request for the topic is held
	// until the second AddTopic has returned (or, before the fix, has
	// sent its own).
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		src.KeepControl()
		for _, rt := range req.(*kmsg.MetadataRequest).Topics {
			if rt.Topic != nil && *rt.Topic == topic {
				once.Do(func() { close(entered); <-release })
			}
		}
		return nil, nil, false
	})
	first := make(chan error, 1)
	go func() { first <- r.AddTopic(ctx, topic) }()
	<-entered
	second := make(chan error, 1)
	go func() { second <- r.AddTopic(ctx, topic) }()
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second AddTopic: %v", err)
		}
	case <-time.After(2 * time.Second):
		// Before the fix the second call is stuck behind the held
		// metadata request too; release it and let the copy show.
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first AddTopic: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.WaitCopied(wctx, topic, 0, n); err != nil {
		t.Fatalf("the copy did not reach %d (a second copy of the partition stops with \"something else wrote into the target partition\"): %v", n, err)
	}
	// Give a second copy, if any, time to append its batches.
	time.Sleep(500 * time.Millisecond)
	tcl, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	ends, err := kadm.NewClient(tcl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(topic, 0); o.Offset != n {
		t.Errorf("the target partition ends at %d, want %d: the records were copied more than once", o.Offset, n)
	}
}

// PartitionCounts answers, in one pass, what Partitions answers topic by
// topic (the source watcher asks for every replicated topic each pass).
func TestPartitionCountsAgreeWithPartitions(t *testing.T) {
	src, tgt := newClusters(t, kfake.SeedTopics(3, "three"), kfake.SeedTopics(1, "one"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), StateDir: t.TempDir(), RetryBackoff: 20 * time.Millisecond})
	defer r.Stop()
	for _, topic := range []string{"three", "one"} {
		if err := r.AddTopic(ctx, topic); err != nil {
			t.Fatal(err)
		}
	}
	counts := r.PartitionCounts()
	want := map[string]int32{"three": 3, "one": 1}
	if len(counts) != len(want) {
		t.Fatalf("PartitionCounts = %v, want %v", counts, want)
	}
	for topic, n := range want {
		if counts[topic] != n || r.Partitions(topic) != n {
			t.Errorf("%s: PartitionCounts %d, Partitions %d, want %d", topic, counts[topic], r.Partitions(topic), n)
		}
	}
	if _, ok := counts["unknown"]; ok || r.Partitions("unknown") != 0 {
		t.Errorf("an unknown topic has a count: %v", counts)
	}
}
