// Package replicator copies source partitions to the target batch for batch
// and owns the exact offset map of each partition (issue 4).
//
// Contract other packages may rely on:
//
//   - One goroutine per partition (runPartition, started by Start, stopped by
//     Stop) owns the copy. It fetches raw batches from the source leader
//     (read_committed), drops control batches and aborted data, rewrites only
//     header fields (batch.go) and produces one batch per request to the
//     target leader with its own idempotent producer id. Record bytes and the
//     compression codec arrive unchanged, except for batches with offset gaps
//     (compaction), records below the resume offset, or LogAppendTime, which
//     are decompressed, renumbered and recompressed with the same codec.
//   - The OffsetMap of a partition (Map) only grows: SourceEnd and TargetEnd
//     never decrease while the process runs. ToTarget/ToSource are exact;
//     a source offset on a gap maps to the next copied record.
//   - The target log is the checkpoint. Maps are persisted atomically under
//     Options.StateDir when the copy catches up, at least once a second
//     while it is behind, and when a copy session ends; after a crash the target's
//     records beyond the persisted map are matched one by one with the next
//     committed source records. Records the source does not explain, a
//     truncated or recreated topic, or a source log start past the copy
//     position stop the partition with a FatalError (Status, WaitCopied); the
//     replicator never skips or duplicates silently.
//   - WaitCopied(topic, partition, end) returns once every source offset
//     below end is on the target or a gap: the cutover's drain condition.
package replicator
