package proxy

import (
	"fmt"
	"testing"
	"time"
)

// The member ids kproxy remembers for group moves are bounded: when full, a
// new id is remembered only after ids older than relayedMemberMaxAge go,
// and an old id stops counting as relayed.
func TestRelayedMembersAreBounded(t *testing.T) {
	now := time.Unix(0, 0)
	r := &relayedMembers{now: func() time.Time { return now }}
	for i := range relayedMembersMax {
		r.note(fmt.Sprintf("g%d", i%100), fmt.Sprintf("m%d", i))
	}
	if r.n != relayedMembersMax {
		t.Fatalf("n = %d after %d notes", r.n, relayedMembersMax)
	}
	r.note("g0", "late")
	if r.has("g0", "late") || r.n != relayedMembersMax {
		t.Fatalf("a full table took a new id (n = %d)", r.n)
	}
	now = now.Add(relayedMemberMaxAge + time.Second)
	if r.has("g0", "m0") {
		t.Fatal("an id older than the maximum age still counts as relayed")
	}
	r.note("g0", "late")
	if !r.has("g0", "late") || r.n != 1 {
		t.Fatalf("after expiry: has(late) = %v, n = %d, want true, 1", r.has("g0", "late"), r.n)
	}
	r.forget("g0", "late", "never-seen")
	if r.n != 0 || len(r.m) != 0 {
		t.Fatalf("after forget: n = %d, groups %d", r.n, len(r.m))
	}
}
