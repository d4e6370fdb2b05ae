package control

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/routing"
)

// A replicated topic routed to the target in the config kproxy starts with
// (edited while it was down, or on a first start) is cut over with a hold
// and a drain, never switched: producers writing straight to a target the
// copy has not caught up with would break the offset map.
func TestStartUpRoutesAReplicatedTopicThroughACutover(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceTo(t, ctx, src, "orders", 200)
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	inst := startYAML(t, ctx, fmt.Appendf(nil, "listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    orders: target\nreplicate: [orders]\n",
		listen, t.TempDir(), src.ListenAddrs()[0], tgt.ListenAddrs()[0]))
	defer inst.Close()
	var st CutoverStatus
	for ctx.Err() == nil {
		for _, c := range inst.Cutovers() {
			if c.Topic == "orders" {
				st = c
			}
		}
		if st.State == routing.Flipped.String() || st.State == routing.Aborted.String() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.State != routing.Flipped.String() || st.Home != "target" || st.From != "source" {
		t.Fatalf("orders after start-up: %+v", st)
	}
	ends, err := kadm.NewClient(mustClient(t, src)).ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	tcl, err := kgo.NewClient(kgo.SeedBrokers(tgt.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	tends, err := kadm.NewClient(tcl).ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	var m int64
	tends.Each(func(o kadm.ListedOffset) { m += o.Offset })
	if n != 200 || m != 200 {
		t.Fatalf("source holds %d records, target %d: the flip must come after the copy of all 200", n, m)
	}
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startYAML parses a config and starts an instance from it, failing the
// test on either error; the caller closes the instance.
func startYAML(t *testing.T, ctx context.Context, yaml []byte) *Instance {
	t.Helper()
	cfg, err := config.Parse(yaml)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := Start(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return inst
}
