// Package routing answers "where does this go?" for the proxy: which cluster
// serves a topic's produce or fetch for a given client, which cluster is a
// consumer group's home, and which topics are replicated.
//
// The contract:
//
//   - Pure. No I/O, no goroutines, no timers, no clocks, no randomness: the
//     same Table and the same question always give the same answer.
//   - Immutable. A Table is built once from a validated *config.Config by
//     NewTable and never changes, so it is safe for concurrent use without
//     locks. A reload builds a new Table; the proxy swaps it in with an
//     atomic.Pointer and loads it once per request, so one request never sees
//     two tables.
//   - Precedence, for topics and for groups: an exact name beats every glob;
//     among matching globs the longest wins (config.GlobLength); otherwise
//     the default applies. Configs from config.Parse have no ambiguous globs;
//     for other configs a tie goes to the glob that sorts first.
//   - Canaries only ever change where a fetch goes, never a produce. A
//     consumer is in a topic's canary when its client.id matches one of the
//     canary's client globs, or its group id matches one of its group globs,
//     or the FNV-1a 32-bit hash of its client.id modulo 100 is below the
//     canary's percent. The hash is fixed so that a client stays on the same
//     side across restarts, reloads and kproxy instances. An empty client.id
//     or group id means "unknown" and matches no glob (the percent rule still
//     hashes the empty client.id).
//
// Cutovers (cutover.go) follow the same rules: a Cutover is an immutable
// value, and Step(c, event, now, policy) returns the next value plus the
// Actions the control plane (control/cutover.go) executes, in order and
// nothing else; time and cutover.max_hold come in as arguments, and the
// control plane owns the timers, the held requests (through the proxy) and
// the replicator. One topic's attempt goes steady → holding (produce queued,
// in-flight produce drained) → draining (until the replicator has copied the
// frozen end offsets) → flipped, or to aborted (max_hold exceeded, failure,
// route reverted) with the held requests released to the old cluster. A
// revert after the flip is a rollback: the same attempt in the other
// direction. A cutover moves a topic's produce (its home); fetch routes move
// without a hold and are not cutovers. Step's doc comment gives every rule.
package routing
