#!/usr/bin/env bash
# bench/fetch_stream.sh — the streaming Fetch relay, before and after, in one
# run: the same topic read from the source broker directly, through a kproxy
# built from BASE (default: the commit before the relay), and through this
# tree's kproxy. ROUNDS rounds, the path order rotating per round; each read
# is bench/loadgen consume (franz-go, 64 MiB fetches, whole topic from the
# start). Prints one JSON line per measurement and a summary with medians:
# MB/s, the ratio to direct, and each kproxy's CPU-seconds per GB.
#
# Knobs (env): BASE=<commit> (default: the parent of the commit that added this script) ROUNDS=5 N=1000000 SIZE=1024 PARTITIONS=6
#              SOURCE=127.0.0.1:19092 (or the lane's, after `source /work/lane.sh K`)
# The source cluster must be up (bash test/kafka/kafka.sh up).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BASE="${BASE:-$(git rev-parse "$(git log --format=%H --diff-filter=A -1 -- bench/fetch_stream.sh)^")}"
ROUNDS="${ROUNDS:-5}"
# N=1,000,000 (1 GB of 1 KiB records) by default: kproxy's CPU is read in
# clock ticks (10 ms), and with 300 MB a round took 10-15 of them, so a
# CPU-s/GB figure moved in steps of 8% (session 17).
N="${N:-1000000}"
SIZE="${SIZE:-1024}"
PARTITIONS="${PARTITIONS:-6}"
SOURCE="${SOURCE:-127.0.0.1:${KAFKA_SOURCE_BROKER_PORT:-19092}}"
GO="${GO:-go}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
say() { echo "fetch_stream: $*" >&2; }
source bench/lib.sh
bench_lock "waiting for another benchmark to finish"

build_before_after
declare -A LISTEN PID
start_before_after
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
addr() { case $1 in direct) echo "$SOURCE" ;; *) echo "${LISTEN[$1]}" ;; esac; }

TOPIC="fetchstream-$(date +%s)"
"$LG" create -brokers "$SOURCE" -partitions "$PARTITIONS" -topics "$TOPIC" >/dev/null
"$LG" produce -brokers "$SOURCE" -topic "$TOPIC" -n "$N" -size "$SIZE" >/dev/null
for p in direct before after; do "$LG" consume -brokers "$(addr $p)" -topic "$TOPIC" >/dev/null; done # warm-up
RAW="$WORK/raw.jsonl"
PATHS=(direct before after)
for r in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2; do
    p=${PATHS[$(( (i + r - 1) % 3 ))]}
    pid=""; [[ $p != direct ]] && pid=${PID[$p]}
    k0=0; [[ -n $pid ]] && k0=$(cpu_ticks "$pid")
    out="$("$LG" consume -brokers "$(addr $p)" -topic "$TOPIC")"
    k1=0; [[ -n $pid ]] && k1=$(cpu_ticks "$pid")
    load="$(cut -d' ' -f1 /proc/loadavg)"
    line="$(printf '{"round":%d,"path":"%s","cpu_s":%s,"load1":%s,"result":%s}' "$r" "$p" \
      "$(awk -v a="$k0" -v b="$k1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" "$load" "$out")"
    echo "$line" | tee -a "$RAW"
  done
done
"$LG" delete -brokers "$SOURCE" -prefix "$TOPIC" >/dev/null || true
for v in before after; do
  grep -iE '"level":"(error|warn)"|level=(ERROR|WARN)|\[(ERROR|WARN)\]' "$WORK/$v.log" | head -5 | sed "s/^/kproxy-$v log: /" >&2 || true
done
python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["path"], []).append(r)
med = lambda xs: statistics.median(xs)
mb = {p: [x["result"]["mb_per_s"] for x in v] for p, v in by.items()}
rounds = sorted({r["round"] for r in rows})
ratio = {p: [next(x for x in by[p] if x["round"] == k)["result"]["mb_per_s"] /
             next(x for x in by["direct"] if x["round"] == k)["result"]["mb_per_s"] for k in rounds]
         for p in ("before", "after")}
cpu = {p: [x["cpu_s"] / (x["result"]["bytes"] / 1e9) for x in by[p]] for p in ("before", "after")}
print(json.dumps({
    "mb_per_s_median": {p: round(med(v), 1) for p, v in mb.items()},
    "ratio_to_direct_median": {p: round(med(v), 3) for p, v in ratio.items()},
    "ratio_to_direct_rounds": {p: [round(x, 3) for x in v] for p, v in ratio.items()},
    "cpu_s_per_gb_median": {p: round(med(v), 3) for p, v in cpu.items()},
    "cpu_s_per_gb_rounds": {p: [round(x, 3) for x in v] for p, v in cpu.items()},
    "load1": [r["load1"] for r in rows],
}, indent=1))
PY
