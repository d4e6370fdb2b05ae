package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/membership"
)

// Three kproxy memberships on the real target cluster (the default control
// cluster) form one generation, and the two that stay see the third leave.
// This is the group protocol under kproxy's own protocol type, which the
// broker's classic group coordinator must accept (Kafka 4.x kept it for
// Connect and custom protocols).
func TestMembershipGroupOnRealKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var groups []*membership.Group
	for _, id := range []string{"kproxy-0", "kproxy-1", "kproxy-2"} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(env.target))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		g, err := membership.Join(ctx, cl, membership.Config{
			Group: "_kproxy-membership-test-" + t.Name(),
			Self:  membership.Member{ID: id, Advertise: id + ":9092", NodeID: membership.NodeID(id)},
			// The broker's group.min.session.timeout.ms is 6 s by default.
			SessionTimeout: 6 * time.Second,
			Heartbeat:      200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	wait := func(want []string, gs ...*membership.Group) membership.View {
		t.Helper()
		for {
			var first membership.View
			agree := true
			for i, g := range gs {
				v, ok := g.View()
				var ids []string
				for _, m := range v.Members {
					ids = append(ids, m.ID)
				}
				if !ok || !slices.Equal(ids, want) || i > 0 && v.Generation != first.Generation {
					agree = false
					break
				}
				if i == 0 {
					first = v
				}
			}
			if agree {
				return first
			}
			select {
			case <-ctx.Done():
				t.Fatalf("members never agreed on %v", want)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	v1 := wait([]string{"kproxy-0", "kproxy-1", "kproxy-2"}, groups...)
	if err := groups[2].Close(ctx); err != nil {
		t.Fatal(err)
	}
	v2 := wait([]string{"kproxy-0", "kproxy-1"}, groups[0], groups[1])
	if v2.Generation <= v1.Generation {
		t.Errorf("generation %d after %d", v2.Generation, v1.Generation)
	}
	for _, g := range groups[:2] {
		_ = g.Close(ctx)
	}
}
