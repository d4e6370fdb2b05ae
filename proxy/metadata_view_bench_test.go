package proxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// BenchmarkMetadataListing: a full Metadata of 1,000 topics x 10
// partitions: directly to kfake, through kproxy forwarded (views off, as
// before) and through kproxy from the views (a shared encoded answer after
// the first). The client's decoding of the 10,000 partitions is in all.
func BenchmarkMetadataListing(b *testing.B) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%04d", i)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(10, names...))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	srv, err := New(Options{Listen: "127.0.0.1:0", Router: StaticRouter(Source), Registerer: prometheus.NewRegistry(),
		Clusters: map[string][]string{Source: c.ListenAddrs()}})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	direct, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	for _, mode := range []struct {
		name string
		off  bool
	}{{"direct", false}, {"forwarded", true}, {"views", false}} {
		b.Run(mode.name, func(b *testing.B) {
			srv.viewsOff.Store(mode.off)
			cl := cl
			if mode.name == "direct" {
				cl = direct
			}
			for i := 0; i < b.N; i++ {
				req := kmsg.NewPtrMetadataRequest()
				resp, err := req.RequestWith(ctx, cl)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.Topics) != len(names) {
					b.Fatalf("%d topics", len(resp.Topics))
				}
			}
		})
	}
}
