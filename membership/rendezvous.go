package membership

import "hash/fnv"

// Owner picks the member that owns key (a topic-partition, a group id, a
// replicated partition) by rendezvous hashing: every member scores the key
// and the highest score wins. Every instance that sees the same members
// picks the same owner, with no coordination; when a member leaves, only
// the keys it owned move (each to the member with the next highest score),
// and a member that joins takes about 1/N of the keys, from every other
// member alike. Returns false when members is empty.
func Owner(key string, members []Member) (Member, bool) {
	var best Member
	var bestScore uint64
	found := false
	for _, m := range members {
		s := score(key, m.ID)
		// Ties (astronomically rare) go to the smaller id, so the answer
		// never depends on the order of members.
		if !found || s > bestScore || s == bestScore && m.ID < best.ID {
			best, bestScore, found = m, s, true
		}
	}
	return best, found
}

// NodeID derives an instance's virtual broker id from its instance id:
// stable across restarts and the same on every instance, with no registry.
// It stays below 2^30, far from the ids Java clients derive for
// coordinators (MaxInt32 - id) and from the negative sentinels. Two ids
// that collide (about one chance in 2^30 per pair) are refused by the
// group's leader, which names both.
func NodeID(instanceID string) int32 {
	return int32(score("node-id", instanceID) >> 34)
}

// score mixes FNV-1a of key and id through the splitmix64 finalizer: FNV
// alone clusters on inputs that differ only in their last bytes (partition
// numbers, pod ordinals), which would make the spread uneven.
func score(key, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(id))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
