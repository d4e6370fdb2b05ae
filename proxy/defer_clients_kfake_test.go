package proxy

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// After DeferClients, a started server answers no client until
// AcceptClients (the control plane first pins replicated topics to their
// homes, control/instance.go), and is not ready meanwhile; the client
// that connected early is then served.
func TestDeferredClientsWaitUntilAccepted(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	srv := startProxy(t, Options{Clusters: map[string][]string{Source: src.ListenAddrs()}, Router: StaticRouter(Source)}, func(s *Server) { s.DeferClients() })
	if ok, why := srv.ReadyFor([]string{Source}); ok {
		t.Fatalf("ready before AcceptClients")
	} else {
		t.Logf("before AcceptClients: %s", why)
	}
	cl, ctx := proxyClient(t, srv, 20*time.Second)
	answered := make(chan error, 1)
	go func() {
		_, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a client was answered before AcceptClients (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	srv.AcceptClients()
	if err := <-answered; err != nil {
		t.Fatalf("the early client after AcceptClients: %v", err)
	}
	if ok, why := srv.ReadyFor([]string{Source}); !ok {
		t.Fatalf("not ready after AcceptClients: %s", why)
	}
}
