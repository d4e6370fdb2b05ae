package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/statefile"
)

// Two kproxy instances on one state_dir would both copy the same batches
// into the target and overwrite each other's markers: the second refuses to
// start and names the first's pid and host; once the first closes, a new
// one starts.
func TestSecondInstanceOnAStateDirRefusesToStart(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	state := t.TempDir()
	cfgFor := func() *config.Config {
		listen, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(fmt.Appendf(nil, "listen: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\nroutes:\n  default: source\n",
			listen, state, src.ListenAddrs()[0]))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	first, err := Start(ctx, cfgFor(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	second, err := Start(ctx, cfgFor(), hclog.NewNullLogger())
	if err == nil {
		second.Close()
		first.Close()
		t.Fatal("a second instance started on the same state_dir")
	}
	host, _ := os.Hostname()
	var held *statefile.HeldError
	if !errors.As(err, &held) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d on host %s", os.Getpid(), host)) {
		first.Close()
		t.Fatalf("second start: %v; want a refusal naming pid %d on host %s", err, os.Getpid(), host)
	}
	first.Close()
	third, err := Start(ctx, cfgFor(), hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("start after the first closed: %v", err)
	}
	third.Close()
}

// replication.state_dir outside state_dir has its own lock; inside it (or
// equal to it) the state_dir lock covers it.
func TestLockStateDirsCoversAReplicationDirOutsideStateDir(t *testing.T) {
	base := t.TempDir()
	a := &config.Config{StateDir: filepath.Join(base, "a")}
	a.Replication.StateDir = filepath.Join(base, "maps")
	b := &config.Config{StateDir: filepath.Join(base, "b")}
	b.Replication.StateDir = filepath.Join(base, "maps")
	inside := &config.Config{StateDir: filepath.Join(base, "c")}
	inside.Replication.StateDir = filepath.Join(base, "c", "replicator")

	la, err := lockStateDirs(a)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range la {
			l.Release()
		}
	}()
	if _, err := lockStateDirs(b); err == nil || !strings.Contains(err.Error(), filepath.Join(base, "maps")) {
		t.Fatalf("a second owner of %s/maps: %v", base, err)
	}
	// b's own state_dir lock was given back when its second lock failed.
	if l, err := statefile.LockDir(b.StateDir); err != nil {
		t.Fatalf("b's state_dir still locked after the refusal: %v", err)
	} else {
		l.Release()
	}
	lc, err := lockStateDirs(inside)
	if err != nil || len(lc) != 1 {
		t.Fatalf("replication dir inside state_dir: %d locks, %v", len(lc), err)
	}
	lc[0].Release()
}
