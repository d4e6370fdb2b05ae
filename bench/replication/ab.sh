#!/usr/bin/env bash
# Same-run A/B of the replicator's copy CPU: the copier built from BEFORE (a
# git rev) and from the working tree, each copying its own identical topic
# in every round, alternating which goes first; no MirrorMaker 2. Prints
# CPU-s/GB per round with the load average at the copy's start, and the
# medians. The copy window and the CPU are replbench watch's, as in run.sh.
#
# Knobs: BEFORE=rev (default HEAD) ROUNDS=4 N=1000000 SIZE=1024 PARTITIONS=6
#        COMPRESSION=none SRC=127.0.0.1:19092 TGT=127.0.0.1:29092 (a lane's
#        ports: source $KAFKA_SOURCE_BROKER_PORT, target $KAFKA_TARGET_BROKER_PORT)
#        PROFILE_DIR=DIR (a CPU profile of each copy window, DIR/{before,after}-rROUND.pprof)
#        RAW=file (the rounds as JSON lines; default bench/replication/ab-last.jsonl)
set -euo pipefail
cd "$(dirname "$0")/../.."

SRC=${SRC:-127.0.0.1:${KAFKA_SOURCE_BROKER_PORT:-19092}}
TGT=${TGT:-127.0.0.1:${KAFKA_TARGET_BROKER_PORT:-29092}}
BEFORE=${BEFORE:-HEAD}
ROUNDS=${ROUNDS:-4}
# N=1,000,000 (1 GB of 1 KiB records) by default: kproxy's CPU is read in
# clock ticks (10 ms), and with 300 MB a round took 10-15 of them, so a
# CPU-s/GB figure moved in steps of 8% (session 17).
N=${N:-1000000}
SIZE=${SIZE:-1024}
PARTITIONS=${PARTITIONS:-6}
COMPRESSION=${COMPRESSION:-none}
RAW=${RAW:-bench/replication/ab-last.jsonl}

WORK=$(mktemp -d /tmp/replab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/before-src"
git archive "$BEFORE" | tar -x -C "$WORK/before-src"
(cd "$WORK/before-src" && go build -o "$WORK/before" ./bench/replication)
go build -o "$WORK/after" ./bench/replication
echo "before: $(git rev-parse --short "$BEFORE"), after: working tree of $(git rev-parse --short HEAD)" >&2
: >"$RAW.tmp"

run() { # which topic round
  local who=$1 t=$2 r=$3 w load
  load=$(cut -d' ' -f1 /proc/loadavg)
  if ! w=$("$WORK/after" watch -src "$SRC" -tgt "$TGT" -topic "$t" -kill -log "$WORK/$who-$t.log" -timeout 600s -- \
      "$WORK/$who" kproxy -src "$SRC" -tgt "$TGT" -topic "$t" -state "$WORK/state-$t" -timeout 600s \
        ${PROFILE_DIR:+-cpuprofile "$PROFILE_DIR/$who-r$r.pprof"}); then
    tail -30 "$WORK/$who-$t.log" >&2
    exit 1
  fi
  printf '{"copier":"%s","round":%d,"load":%s,"watch":%s}\n' "$who" "$r" "$load" "$w" >>"$RAW.tmp"
  python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print("  %-6s %.3f CPU-s/GB (load %s, %.1f s)" % (sys.argv[2], w["cpu_s"]/(w["window_records"]*int(sys.argv[3])/1e9), sys.argv[4], w["seconds"]))' "$w" "$who" "$SIZE" "$load" >&2
}

for r in $(seq 1 "$ROUNDS"); do
  id="ab$(date +%s%N | tail -c 9)"
  echo "round $r ($id)" >&2
  "$WORK/after" produce -brokers "$SRC" -topics "$id-before,$id-after" -partitions "$PARTITIONS" -n "$N" -size "$SIZE" -compression "$COMPRESSION" >/dev/null
  if (( r % 2 == 1 )); then
    run before "$id-before" "$r"; run after "$id-after" "$r"
  else
    run after "$id-after" "$r"; run before "$id-before" "$r"
  fi
  "$WORK/after" delete -brokers "$SRC" -contains "$id" >/dev/null || true
  "$WORK/after" delete -brokers "$TGT" -contains "$id" >/dev/null || true
done
mv "$RAW.tmp" "$RAW"
python3 - "$RAW" "$SIZE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
size = int(sys.argv[2])
for who in ("before", "after"):
    v = [r["watch"]["cpu_s"] / (r["watch"]["window_records"] * size / 1e9) for r in rows if r["copier"] == who]
    print(f"{who}: median {statistics.median(v):.3f} CPU-s/GB, rounds " + ", ".join(f"{x:.3f}" for x in v))
PY
