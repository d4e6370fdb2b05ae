package migrate

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The manifest walked against a real kproxy instance (on kfake clusters,
// reloading the file it is given as `kproxy run` does): the canary starts,
// the replicated topic flips to the target, the group moves, and a second
// apply finds every step done.
func TestApplyAgainstKproxyOnKfake(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	listen, admin := freeAddr(t), freeAddr(t)
	path := filepath.Join(dir, "kproxy.yaml")
	text := fmt.Sprintf("# the operator's config\nlisten: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\nreplicate: [orders]\ngroups:\n  default: source\n",
		listen, admin, filepath.Join(dir, "state"), src.ListenAddrs()[0], tgt.ListenAddrs()[0])
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := control.Start(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() { _ = config.NewReloader(path, cfg, hclog.NewNullLogger(), inst.Apply).Run(wctx) }()

	cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.DefaultProduceTopic("orders"), kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 50 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Append(nil, i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for n := 0; n < 50 && ctx.Err() == nil; {
		fs := cl.PollFetches(ctx)
		n += fs.NumRecords()
		if n > 0 {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	m := &Manifest{Waves: []Wave{{Name: "orders", Topics: []string{"orders"}, Canary: []int{50}, Groups: []string{"billing"}}}}
	var out bytes.Buffer
	r := &Runner{Manifest: m, ConfigPath: path, Admin: HTTPAdmin{Addr: admin}, Out: &out, Poll: 50 * time.Millisecond, Timeout: time.Minute}
	if err := r.Apply(ctx, false); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	st := inst.Status()
	flipped, moved := false, false
	for _, c := range st.Cutovers {
		flipped = flipped || (c.Topic == "orders" && c.State == "flipped" && c.Home == "target")
	}
	for _, g := range st.GroupMoves {
		moved = moved || (g.Group == "billing" && g.State == "moved" && g.To == "target")
	}
	if !flipped || !moved {
		t.Fatalf("after apply: cutovers %+v, group moves %+v", st.Cutovers, st.GroupMoves)
	}
	out.Reset()
	if err := r.Apply(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out.Bytes(), []byte("step 3 done already")) {
		t.Errorf("a second apply redid work:\n%s", out.String())
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte("# the operator's config")) {
		t.Errorf("the config lost its comment:\n%s", raw)
	}
}
