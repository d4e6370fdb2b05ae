#!/usr/bin/env bash
# bench/produce_with_replication.sh — issue 12 item 6: produce latency through
# kproxy on topics its replicator is copying to the target at the same time,
# against the same load on topics nobody copies, in one run through one
# kproxy (and the source broker directly beside them, for scale).
#
# One kproxy (this tree) in front of SOURCE and TARGET with
# `replicate: ["<id>-repl-*"]`, routes on the source. Every round runs, in an
# order that rotates per round, bench/loadgen latency (RATE records/s, linger
# 0, LAT_SECONDS, 1 KiB values: the latency phase of `make bench`) on:
#   direct  the source broker, no kproxy;
#   plain   through kproxy, a topic not replicated;
#   repl    through kproxy, a topic the replicator copies while it is written
#           (its copy was started and caught up before the round).
# The goal (issue 12 item 6): repl's p99 within 2x of plain's. Prints one JSON
# line per measurement and a summary with medians, kproxy's CPU during each
# phase and whether the copy kept up (its lag after the phase).
#
# Knobs (env): ROUNDS=3 RATE=5000 LAT_SECONDS=15 SIZE=1024 PARTITIONS=6
#              SOURCE=127.0.0.1:19092 TARGET=127.0.0.1:29092 (or the lane's)
# Both clusters must be up (bash test/kafka/kafka.sh up). Takes the bench lock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-5000}"
LAT_SECONDS="${LAT_SECONDS:-15}"
SIZE="${SIZE:-1024}"
PARTITIONS="${PARTITIONS:-6}"
SOURCE="${SOURCE:-127.0.0.1:${KAFKA_SOURCE_BROKER_PORT:-19092}}"
TARGET="${TARGET:-127.0.0.1:${KAFKA_TARGET_BROKER_PORT:-29092}}"
GO="${GO:-go}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
say() { echo "produce_with_replication: $*" >&2; }
source bench/lib.sh
bench_lock "waiting for another benchmark to finish"

say "building kproxy and loadgen"
"$GO" build -o "$WORK/kproxy" ./cmd/kproxy
"$GO" build -o "$WORK/loadgen" ./bench/loadgen
LG="$WORK/loadgen"

ID="prodrepl-$(date +%s)"
topics=()
for r in $(seq 1 "$ROUNDS"); do topics+=("$ID-plain-r$r" "$ID-repl-r$r"); done
# Created before kproxy starts, so its replicator copies every repl topic
# from its first pass (empty: nothing to catch up but the warm-up below).
"$LG" create -brokers "$SOURCE" -partitions "$PARTITIONS" -topics "$(IFS=,; echo "${topics[*]}")" >/dev/null

LISTEN="127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"
cat >"$WORK/kproxy.yaml" <<YAML
listen: $LISTEN
admin: $ADMIN
state_dir: $WORK/state
clusters:
  source: { bootstrap: [$SOURCE] }
  target: { bootstrap: [$TARGET] }
routes: { default: source }
replicate: ["$ID-repl-*"]
log: { level: warn }
YAML
"$WORK/kproxy" run -c "$WORK/kproxy.yaml" >"$WORK/kproxy.log" 2>&1 &
KPID=$!
PIDS+=("$KPID")
for i in $(seq 1 150); do curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://$ADMIN/readyz" >/dev/null || { cat "$WORK/kproxy.log" >&2; exit 1; }

# repl_lag prints the replicated topics' total lag in records from /status
# (-1 when a repl topic is not copying yet).
repl_lag() {
  curl -fsS "http://$ADMIN/status" | python3 -c '
import json, sys
prefix = sys.argv[1]
parts = (json.load(sys.stdin).get("replication") or {}).get("partitions") or []
lag, seen = 0, set()
for p in parts:
    if p["Topic"].startswith(prefix):
        seen.add(p["Topic"])
        lag += p["LagRecords"]
print(lag if len(seen) == int(sys.argv[2]) else -1)' "$ID-repl-" "$ROUNDS"
}
say "waiting for the copy of $ROUNDS replicated topics to start"
for i in $(seq 1 150); do [[ "$(repl_lag)" == 0 ]] && break; sleep 0.2; done
[[ "$(repl_lag)" == 0 ]] || { say "the copy did not start: $(curl -fsS "http://$ADMIN/status" | head -c 2000)"; exit 1; }

# Warm-up: connections, producer ids and metadata on every path.
"$LG" latency -brokers "$SOURCE" -topic "$ID-plain-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
"$LG" latency -brokers "$LISTEN" -topic "$ID-plain-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
"$LG" latency -brokers "$LISTEN" -topic "$ID-repl-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
RAW="$WORK/raw.jsonl"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
PATHS=(direct plain repl)
for r in $(seq 1 "$ROUNDS"); do
  order=()
  for i in "${!PATHS[@]}"; do order+=("${PATHS[$(( (i + r - 1) % ${#PATHS[@]} ))]}"); done
  for p in "${order[@]}"; do
    case $p in
      direct) addr=$SOURCE topic="$ID-plain-r$r" ;;
      plain) addr=$LISTEN topic="$ID-plain-r$r" ;;
      repl) addr=$LISTEN topic="$ID-repl-r$r" ;;
    esac
    k0=$(cpu_ticks "$KPID")
    out="$("$LG" latency -brokers "$addr" -topic "$topic" -rate "$RATE" -duration "${LAT_SECONDS}s" -size "$SIZE")"
    k1=$(cpu_ticks "$KPID")
    lag=$(repl_lag)
    printf '{"round":%d,"path":"%s","kproxy_cpu_s":%s,"repl_lag_after":%s,"load1":%s,"result":%s}\n' "$r" "$p" \
      "$(awk -v a="$k0" -v b="$k1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" "$lag" "$(cut -d' ' -f1 /proc/loadavg)" "$out" | tee -a "$RAW"
  done
done
"$LG" delete -brokers "$SOURCE" -prefix "$ID-" >/dev/null || true
"$LG" delete -brokers "$TARGET" -prefix "$ID-" >/dev/null || true
grep -iE '"level":"(error|warn)"|level=(ERROR|WARN)|\[(ERROR|WARN)\]' "$WORK/kproxy.log" | head -5 | sed "s/^/kproxy log: /" >&2 || true
python3 - "$RAW" "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$RATE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
out = {"rate": int(sys.argv[4]), "load_start": sys.argv[2], "load_end": sys.argv[3]}
by = lambda p: sorted((r for r in rows if r["path"] == p), key=lambda r: r["round"])
for p in ("direct", "plain", "repl"):
    rs = by(p)
    o = out[p] = {}
    for q in ("p50_ms", "p99_ms", "p999_ms"):
        o[q + "_rounds"] = [round(x["result"][q], 3) for x in rs]
        o[q + "_median"] = round(med(o[q + "_rounds"]), 3)
    if p != "direct":
        o["kproxy_cpu_s_rounds"] = [x["kproxy_cpu_s"] for x in rs]
    if p == "repl":
        o["repl_lag_after_rounds"] = [x["repl_lag_after"] for x in rs]
for q in ("p50_ms", "p99_ms"):
    pairs = zip(by("repl"), by("plain"))
    out["repl_over_plain_" + q + "_rounds"] = [round(a["result"][q] / b["result"][q], 3) for a, b in pairs]
    out["repl_over_plain_" + q + "_median"] = round(med(out["repl_over_plain_" + q + "_rounds"]), 3)
print(json.dumps(out, indent=1))
PY
