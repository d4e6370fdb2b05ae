package membership

import (
	"fmt"
	"testing"
)

func members(ids ...string) []Member {
	var ms []Member
	for _, id := range ids {
		ms = append(ms, Member{ID: id})
	}
	return ms
}

func owners(keys []string, ms []Member) map[string]string {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		m, _ := Owner(k, ms)
		out[k] = m.ID
	}
	return out
}

// A membership change moves only the keys it must: those of a member that
// left, or the share a new member takes. The spread stays even.
func TestOwnerMovesOnlyWhatMembershipChangeForces(t *testing.T) {
	var keys []string
	for topic := 0; topic < 100; topic++ {
		for p := 0; p < 30; p++ {
			keys = append(keys, fmt.Sprintf("topic-%d/%d", topic, p))
		}
	}
	three := members("kproxy-0", "kproxy-1", "kproxy-2")
	before := owners(keys, three)

	count := map[string]int{}
	for _, o := range before {
		count[o]++
	}
	for _, m := range three {
		// 3,000 keys over 3 members: 1,000 each expected; allow ±15%.
		if c := count[m.ID]; c < 850 || c > 1150 {
			t.Errorf("%s owns %d of %d keys, want about a third", m.ID, c, len(keys))
		}
	}

	// kproxy-1 leaves: exactly its keys move, and they spread over both others.
	two := members("kproxy-0", "kproxy-2")
	after := owners(keys, two)
	moved := map[string]int{}
	for _, k := range keys {
		if before[k] != "kproxy-1" && after[k] != before[k] {
			t.Fatalf("key %s moved from %s to %s though its owner stayed", k, before[k], after[k])
		}
		if before[k] == "kproxy-1" {
			moved[after[k]]++
		}
	}
	if moved["kproxy-0"] == 0 || moved["kproxy-2"] == 0 {
		t.Errorf("kproxy-1's keys went to %v; want them spread over both survivors", moved)
	}

	// kproxy-3 joins the three: only keys that now belong to kproxy-3 move.
	four := members("kproxy-0", "kproxy-1", "kproxy-2", "kproxy-3")
	grown := owners(keys, four)
	took := 0
	for _, k := range keys {
		if grown[k] != before[k] {
			if grown[k] != "kproxy-3" {
				t.Fatalf("key %s moved from %s to %s, not to the new member", k, before[k], grown[k])
			}
			took++
		}
	}
	if took < 600 || took > 900 {
		t.Errorf("the new member took %d of %d keys, want about a quarter", took, len(keys))
	}

	// Order of the member list never matters.
	reversed := members("kproxy-2", "kproxy-1", "kproxy-0")
	for _, k := range keys[:200] {
		a, _ := Owner(k, three)
		b, _ := Owner(k, reversed)
		if a.ID != b.ID {
			t.Fatalf("key %s: owner %s or %s depending on list order", k, a.ID, b.ID)
		}
	}
	if _, ok := Owner("x", nil); ok {
		t.Error("Owner with no members reported an owner")
	}
}

// Node ids derived from instance ids are stable, non-negative, below 2^30
// and distinct for a StatefulSet's worth of pod names.
func TestNodeIDIsStableAndSpread(t *testing.T) {
	// Pinned: a change would give every instance a new broker id at the
	// next upgrade, and clients would see brokers vanish and appear.
	if got := NodeID("kproxy-0"); got != pinnedNodeID {
		t.Fatalf("NodeID(kproxy-0) = %d, was %d", got, pinnedNodeID)
	}
	seen := map[int32]string{}
	for i := range 1000 {
		id := fmt.Sprintf("kproxy-%d", i)
		n := NodeID(id)
		if n < 0 || n >= 1<<30 {
			t.Fatalf("NodeID(%s) = %d, outside [0, 2^30)", id, n)
		}
		if o, dup := seen[n]; dup {
			t.Fatalf("NodeID(%s) = NodeID(%s) = %d", id, o, n)
		}
		seen[n] = id
	}
}

// pinnedNodeID is NodeID("kproxy-0") as first released.
const pinnedNodeID = 696812955
