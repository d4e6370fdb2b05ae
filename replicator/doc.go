// Package replicator copies source partitions to the target batch for batch
// and owns the exact offset map of each partition (issue 4).
//
// Contract other packages may rely on:
//
//   - One goroutine per partition (runPartition, started by Start, stopped by
//     Stop) owns the copy. It fetches raw batches from the source leader
//     (read_committed), drops control batches and aborted data, rewrites only
//     header fields (batch.go) and produces one batch per request to the
//     target leader as the partition's idempotent producer (one id per
//     partition, kept across sessions and restarts in
//     <topic>/<partition>.producer, each session continuing the target's
//     sequence for it: session.go), on the
//     replicator's own pipelined connection to that broker
//     (produceconn.go): up to 5 batches in flight per partition, applied
//     to the map strictly in send order as their answers arrive; a batch
//     is written from where it lies in the fetch answer (writev), never
//     copied in user space. Source answers are read on the fetcher's own
//     connection into pooled frames, waking once a MiB has arrived
//     (SO_RCVLOWAT, fetchconn.go). A batch's CRC is checked by the copy
//     only when the copy computes a new one (small or rebuilt batches);
//     otherwise the new CRC is derived from the source's (internal/batchcrc), so
//     corruption reaches the target, which refuses it, and the refusal
//     stops the partition with a FatalError. Record bytes and the
//     compression codec arrive unchanged, except for batches with offset gaps
//     (compaction), records below the resume offset, or LogAppendTime, which
//     are decompressed, renumbered and recompressed with the same codec.
//   - The OffsetMap of a partition (Map) only grows: SourceEnd and TargetEnd
//     never decrease while the process runs. ToTarget/ToSource are exact;
//     a source offset on a gap maps to the next copied record.
//   - The target log is the checkpoint. Maps are persisted under
//     Options.StateDir when the copy catches up, at least once a second
//     while it is behind, and when a copy session ends, as a delta appended
//     to the partition's delta file or an atomic snapshot (mapjournal.go);
//     a map drops the runs below the source's log start once a fetch answer
//     shows it moved (retention, DeleteRecords). An error mid-pipeline ends
//     the session after every outstanding answer came back; after it, or after a crash, the target's
//     records beyond the persisted map are matched one by one with the next
//     committed source records. Records the source does not explain, a
//     truncated or recreated topic, or a source log start past the copy
//     position stop the partition with a FatalError (Status, WaitCopied); the
//     replicator never skips or duplicates silently.
//   - WaitCopied(topic, partition, end) returns once every source offset
//     below end is on the target or a gap: the cutover's drain condition.
//   - With Options.TransactionalIDPrefix (several instances), each
//     partition's copy is a transactional producer whose session starts with
//     InitProducerId, fencing any earlier owner at the broker; a batch
//     enters the map only once its transaction committed, and the commit
//     markers (and a fenced owner's aborted records) are target gaps of the
//     map. A copy the broker fenced stops without retrying (FencedError).
//     With Options.Owns only owned partitions are copied and have a map;
//     Reassign applies a new answer (txncopy.go, owners.go).
package replicator
