#!/usr/bin/env bash
# bench/produce_cpu.sh — the produce path's CPU, before and after, in one run:
# the same produce load sent to the source broker directly, through a kproxy
# built from BASE and through this tree's kproxy, both kproxy processes
# running side by side. ROUNDS rounds, the path order rotating per round;
# each round runs bench/loadgen produce (franz-go, idempotent, acks=all, 1 MiB
# batches, linger 5 ms: the throughput phase of `make bench`) and then
# bench/loadgen latency (RATE records/s, linger 0, LAT_SECONDS) on each path.
# Prints one JSON line per measurement and a summary with medians: MB/s and
# the ratio to direct, each kproxy's CPU-seconds per GB produced, and the
# latency p50/p99 with their difference to direct.
#
# GREPPLABS_BIN=/path/to/kafka-proxy adds grepplabs/kafka-proxy in front of
# the same broker as a fourth path, "peer" (see bench/run.sh for its build).
#
# PERF=1 records a `perf` profile of each kproxy during its round-1 produce
# phase into $PERF_DIR/perf-{before,after}.txt (top symbols).
#
# Knobs (env): BASE=<commit> (default d0b1442, before the produce CPU work) ROUNDS=3 N=1000000
#              SIZE=1024 PARTITIONS=6 RATE=5000 LAT_SECONDS=10 (0: produce phase only) PERF=0 PERF_DIR=.
#              SOURCE=127.0.0.1:19092 (or the lane's, after `source /work/lane.sh K`)
# The source cluster must be up (bash test/kafka/kafka.sh up). Run it under
# the bench lock with the broker at the same priority (bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE:-d0b1442}" # the last commit before the produce CPU work
ROUNDS="${ROUNDS:-3}"
# N=1,000,000 (1 GB of 1 KiB records) by default: kproxy's CPU is read in
# clock ticks (10 ms), and with 300 MB a round took 10-15 of them, so a
# CPU-s/GB figure moved in steps of 8% (session 17).
N="${N:-1000000}"
SIZE="${SIZE:-1024}"
PARTITIONS="${PARTITIONS:-6}"
RATE="${RATE:-5000}"
LAT_SECONDS="${LAT_SECONDS:-10}"
PERF="${PERF:-0}"
PERF_DIR="$(realpath "${PERF_DIR:-.}")"
SOURCE="${SOURCE:-127.0.0.1:${KAFKA_SOURCE_BROKER_PORT:-19092}}"
GO="${GO:-go}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
say() { echo "produce_cpu: $*" >&2; }
source bench/lib.sh

build_before_after
declare -A LISTEN PID
start_before_after
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
PATHS=(direct before after)
if [[ -n "${GREPPLABS_BIN:-}" ]]; then
  LISTEN[peer]="127.0.0.1:$(free_port)"
  "$GREPPLABS_BIN" server --bootstrap-server-mapping "$SOURCE,${LISTEN[peer]}" \
    --dynamic-listeners-disable --http-listen-address "127.0.0.1:$(free_port)" >"$WORK/peer.log" 2>&1 &
  PID[peer]=$!
  PIDS+=("$!")
  for i in $(seq 1 50); do (exec 3<>"/dev/tcp/${LISTEN[peer]%:*}/${LISTEN[peer]##*:}") 2>/dev/null && break; sleep 0.2; done
  PATHS+=(peer)
fi
addr() { case $1 in direct) echo "$SOURCE" ;; *) echo "${LISTEN[$1]}" ;; esac; }

ID="producecpu-$(date +%s)"
topics=("$ID-warmup")
for r in $(seq 1 "$ROUNDS"); do for p in "${PATHS[@]}"; do topics+=("$ID-r$r-$p" "$ID-r$r-$p-lat"); done; done
"$LG" create -brokers "$SOURCE" -partitions "$PARTITIONS" -topics "$(IFS=,; echo "${topics[*]}")" >/dev/null
for p in "${PATHS[@]}"; do "$LG" produce -brokers "$(addr $p)" -topic "$ID-warmup" -n 20000 -size "$SIZE" >/dev/null; done
RAW="$WORK/raw.jsonl"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
# measure ROUND PATH PHASE loadgen-args...
measure() {
  local r=$1 p=$2 phase=$3; shift 3
  local pid="" k0=0 k1=0 out perf_pid=""
  [[ $p != direct ]] && pid=${PID[$p]}
  if [[ $PERF == 1 && $r == 1 && $phase == produce && -n $pid ]]; then
    perf record -F 999 -g -o "$WORK/perf-$p.data" -p "$pid" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
  fi
  [[ -n $pid ]] && k0=$(cpu_ticks "$pid")
  out="$("$LG" "$@")"
  [[ -n $pid ]] && k1=$(cpu_ticks "$pid")
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$WORK/perf-$p.data" --no-children --sort dso,symbol -g none --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -40 >"$PERF_DIR/perf-$p.txt" || true
    perf report -i "$WORK/perf-$p.data" --children --sort symbol -g none --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | head -60 >"$PERF_DIR/perf-$p-children.txt" || true
  fi
  printf '{"round":%d,"path":"%s","phase":"%s","cpu_s":%s,"load1":%s,"result":%s}\n' "$r" "$p" "$phase" \
    "$(awk -v a="$k0" -v b="$k1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" "$(cut -d' ' -f1 /proc/loadavg)" "$out" | tee -a "$RAW"
}
for r in $(seq 1 "$ROUNDS"); do
  order=()
  for i in "${!PATHS[@]}"; do order+=("${PATHS[$(( (i + r - 1) % ${#PATHS[@]} ))]}"); done
  for p in "${order[@]}"; do
    measure "$r" "$p" produce produce -brokers "$(addr $p)" -topic "$ID-r$r-$p" -n "$N" -size "$SIZE"
  done
  [[ $LAT_SECONDS == 0 ]] && continue # produce only
  for p in "${order[@]}"; do
    measure "$r" "$p" latency latency -brokers "$(addr $p)" -topic "$ID-r$r-$p-lat" -rate "$RATE" -duration "${LAT_SECONDS}s" -size "$SIZE"
  done
done
"$LG" delete -brokers "$SOURCE" -prefix "$ID-" >/dev/null || true
for v in before after; do
  grep -iE '"level":"(error|warn)"|level=(ERROR|WARN)|\[(ERROR|WARN)\]' "$WORK/$v.log" | head -5 | sed "s/^/kproxy-$v log: /" >&2 || true
done
python3 - "$RAW" "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" "${BASE:0:12}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
def get(phase, path):
    return sorted((r for r in rows if r["phase"] == phase and r["path"] == path), key=lambda r: r["round"])
out = {"base": sys.argv[4], "load_start": sys.argv[2], "load_end": sys.argv[3]}
d = get("produce", "direct")
for p in ("direct", "before", "after", "peer"):
    pr = get("produce", p)
    if not pr:
        continue
    o = {"mb_per_s_rounds": [round(x["result"]["mb_per_s"], 1) for x in pr]}
    o["mb_per_s_median"] = round(med(o["mb_per_s_rounds"]), 1)
    if p != "direct":
        o["ratio_rounds"] = [round(x["result"]["mb_per_s"] / y["result"]["mb_per_s"], 3) for x, y in zip(pr, d)]
        o["ratio_median"] = round(med(o["ratio_rounds"]), 3)
        o["cpu_s_per_gb_rounds"] = [round(x["cpu_s"] / (x["result"]["bytes"] / 1e9), 3) for x in pr]
        o["cpu_s_per_gb_median"] = round(med(o["cpu_s_per_gb_rounds"]), 3)
    la, ld = get("latency", p), get("latency", "direct")
    out[p] = o
    if not la:
        continue
    o["p50_ms_rounds"] = [round(x["result"]["p50_ms"], 3) for x in la]
    o["p99_ms_rounds"] = [round(x["result"]["p99_ms"], 3) for x in la]
    o["p50_ms_median"], o["p99_ms_median"] = round(med(o["p50_ms_rounds"]), 3), round(med(o["p99_ms_rounds"]), 3)
    if p != "direct":
        o["p50_added_ms_rounds"] = [round(x["result"]["p50_ms"] - y["result"]["p50_ms"], 3) for x, y in zip(la, ld)]
        o["p99_added_ms_rounds"] = [round(x["result"]["p99_ms"] - y["result"]["p99_ms"], 3) for x, y in zip(la, ld)]
        o["p50_added_ms_median"] = round(med(o["p50_added_ms_rounds"]), 3)
        o["p99_added_ms_median"] = round(med(o["p99_added_ms_rounds"]), 3)
        o["latency_cpu_s_rounds"] = [round(x["cpu_s"], 2) for x in la]
print(json.dumps(out, indent=1))
PY
