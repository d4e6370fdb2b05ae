package replicator

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkCopy copies 6 partitions of 1 KiB records in 16 KiB batches
// between two kfake clusters; for profiling the copy path (kfake's own CPU
// dominates the total, so read profiles by function).
func BenchmarkCopy(b *testing.B) {
	const parts, perPart = 6, 5000
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(parts, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.DefaultProduceTopic("bench"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	val := bytes.Repeat([]byte("v"), 1024)
	for p := int32(0); p < parts; p++ {
		for i := 0; i < perPart; i++ {
			cl.Produce(context.Background(), &kgo.Record{Partition: p, Value: val}, nil)
		}
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(parts * perPart * 1024)
	for b.Loop() {
		b.StopTimer()
		tgt, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			b.Fatal(err)
		}
		r, err := New(Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(), Topics: []string{"bench"}, StateDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := r.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		// Polled: the steady-state copy is profiled here, with nothing
		// waiting on or urging the partitions.
		for p := int32(0); p < parts; p++ {
			for r.CopiedThrough("bench", p) < perPart {
				time.Sleep(time.Millisecond)
			}
		}
		b.StopTimer()
		r.Stop()
		tgt.Close()
		b.StartTimer()
	}
}
