package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kproxy/kproxy/config"
)

// A reload that edits a cluster is refused as a whole, naming the key, and
// the instance keeps serving the config it started with. Before, the edit
// was counted as applied: the replicator and the admin clients followed the
// new bootstrap while the proxy kept the start-up clusters.
func TestApplyRefusesClusterEdits(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	tgt := newKfake(t, kfake.NumBrokers(1))
	other := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	parse := func(target, rest string) *config.Config {
		t.Helper()
		c, err := config.Parse(fmt.Appendf(nil, "listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n%s",
			listen, dir, src.ListenAddrs()[0], target, rest))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := parse(tgt.ListenAddrs()[0], "replicate: [orders]\n")
	inst, err := Start(ctx, running, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	gen := inst.Generation()

	err = inst.Apply(parse(other.ListenAddrs()[0], "replicate: [orders]\n"))
	var re *config.RestartError
	if !errors.As(err, &re) || len(re.Lines) != 1 || !strings.HasPrefix(re.Lines[0], "clusters.target.bootstrap: ") {
		t.Fatalf("Apply(target bootstrap edited) = %v, want a restart error naming clusters.target.bootstrap", err)
	}
	if inst.Generation() != gen || inst.Config() != running || !strings.Contains(inst.LastReloadError(), "clusters.target.bootstrap") {
		t.Errorf("after a refused cluster edit: generation %d (was %d), config replaced %v, last error %q",
			inst.Generation(), gen, inst.Config() != running, inst.LastReloadError())
	}

	// A route edit in the same config as a cluster edit is refused too:
	// kproxy never runs half of a config.
	err = inst.Apply(parse(other.ListenAddrs()[0], "replicate: [orders]\ngroups: { default: source }\n"))
	if !errors.As(err, &re) {
		t.Fatalf("Apply(cluster and group edits) = %v, want a restart error", err)
	}
	// The same edit without the cluster change applies.
	if err := inst.Apply(parse(tgt.ListenAddrs()[0], "replicate: [orders]\ngroups: { default: source }\n")); err != nil {
		t.Fatalf("Apply(a group edit) = %v", err)
	}
	if inst.Generation() != gen+1 || inst.LastReloadError() != "" {
		t.Errorf("after a live edit: generation %d (want %d), last error %q", inst.Generation(), gen+1, inst.LastReloadError())
	}
}
