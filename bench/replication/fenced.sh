#!/usr/bin/env bash
# The fenced copy's cost (issue 14): kproxy's replicator copying the same
# data (N records of SIZE bytes, PARTITIONS partitions, uncompressed) as the
# idempotent copy of one instance and as the fenced copy of several
# instances (a transactional producer per partition, one transaction per
# source fetch answer), ROUNDS interleaved rounds. Copy window and CPU as
# in run.sh (`replbench watch`). Prints one JSON line per copy and a summary;
# writes nothing.
#
# Knobs: ROUNDS=2 N=300000 SIZE=1024 PARTITIONS=6 SRC TGT (plaintext bootstraps)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${SRC:-127.0.0.1:19092}
TGT=${TGT:-127.0.0.1:29092}
ROUNDS=${ROUNDS:-2}
N=${N:-300000}
SIZE=${SIZE:-1024}
PARTITIONS=${PARTITIONS:-6}
WORK=$(mktemp -d /tmp/replfenced.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
BIN=$WORK/replbench
go build -o "$BIN" ./bench/replication

copy() { # topic mode
  local t=$1 m=$2 extra=()
  [[ $m == fenced ]] && extra=(-txn-prefix "kproxy-bench-copy-")
  w=$("$BIN" watch -src "$SRC" -tgt "$TGT" -topic "$t" -kill -out "$WORK/$t.json" -log "$WORK/$t.log" -timeout 600s -- \
      "$BIN" kproxy -src "$SRC" -tgt "$TGT" -topic "$t" -state "$WORK/state-$t" -timeout 600s "${extra[@]}") || { tail -30 "$WORK/$t.log" >&2; exit 1; }
  printf '{"mode":"%s","watch":%s}\n' "$m" "$w"
}

for r in $(seq 1 "$ROUNDS"); do
  id="fb$(date +%s%N | tail -c 9)"
  "$BIN" produce -brokers "$SRC" -topics "fenced-$id-i,fenced-$id-f" -partitions "$PARTITIONS" -n "$N" -size "$SIZE" -compression none >/dev/null
  if (( r % 2 == 1 )); then
    copy "fenced-$id-i" idempotent; copy "fenced-$id-f" fenced
  else
    copy "fenced-$id-f" fenced; copy "fenced-$id-i" idempotent
  fi
  "$BIN" delete -brokers "$SRC" -contains "$id" >/dev/null || true
  "$BIN" delete -brokers "$TGT" -contains "$id" >/dev/null || true
done
