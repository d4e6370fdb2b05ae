package control

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func openTestStateTopic(t *testing.T, ctx context.Context, c *kfake.Cluster) *stateTopic {
	t.Helper()
	s, err := openStateTopic(ctx, hclog.NewNullLogger(), StateTopicName("kc"), func(o ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append(o, kgo.SeedBrokers(c.ListenAddrs()...))...)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// The control topic: what one instance puts, another reads, and an
// instance that opens it later reads every key's last value before open
// returns.
func TestStateTopicSharesLastValuesAcrossInstances(t *testing.T) {
	ctl := newKfake(t, kfake.NumBrokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := openTestStateTopic(t, ctx, ctl)
	b := openTestStateTopic(t, ctx, ctl)
	type home struct {
		Cluster string `json:"cluster"`
		Gen     int64  `json:"gen"`
	}
	if err := a.put(ctx, stateRecord{"home/orders", home{"source", 1}}, stateRecord{"home/orders", home{"target", 2}}, stateRecord{"home/pay", home{"source", 1}}); err != nil {
		t.Fatal(err)
	}
	var got home
	if ok, err := a.get("home/orders", &got); !ok || err != nil || got != (home{"target", 2}) {
		t.Fatalf("the writer reads %v %v %v after put, want target gen 2", got, ok, err)
	}
	for {
		ch := b.changes()
		if ok, _ := b.get("home/orders", &got); ok && got.Gen == 2 {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("the other instance never read the flip: %v", got)
		}
	}
	if err := a.put(ctx, stateRecord{Key: "home/pay"}); err != nil { // a tombstone
		t.Fatal(err)
	}
	c := openTestStateTopic(t, ctx, ctl)
	if ok, err := c.get("home/orders", &got); !ok || err != nil || got != (home{"target", 2}) {
		t.Fatalf("a later instance reads %v %v %v at open, want target gen 2", got, ok, err)
	}
	if ok, _ := c.get("home/pay", &got); ok {
		t.Fatal("a deleted key is still read at open")
	}
	if ks := c.keys("home/"); len(ks) != 1 || ks[0] != "home/orders" {
		t.Fatalf("keys(home/) = %v", ks)
	}
}
