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
#           (its copy was started and caught up before the round);
#   plain_twin  the plain topic through kproxy while a second producer writes
#           the same load straight to a target topic: the target broker's
#           share of a copy, without the copy (on one machine the target
#           broker shares the cores with everything measured).
# The goal (issue 12 item 6): repl's p99 within 2x of plain's; repl against
# plain_twin is what kproxy's copy adds beyond its target broker. Prints one JSON
# line per measurement and a summary with medians, kproxy's and both brokers' CPU during each
# phase and whether the copy kept up (its lag after the phase).
#
# BASE=<git rev>: a same-run A/B. A second kproxy built from BASE runs beside
# this tree's, with topics of its own (base_plain, base_repl: its replicate
# pattern is "<id>-brepl-*"), and every round rotates over direct, plain,
# repl, base_plain and base_repl; the summary gives both binaries' ratios.
# Unset: one kproxy, as before.
#
# Knobs (env): ROUNDS=3 RATE=5000 LAT_SECONDS=15 SIZE=1024 PARTITIONS=6 BASE=
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
BASE="${BASE:-}"
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
if [[ -n "$BASE" ]]; then
  say "building kproxy from $BASE ($(git rev-parse --short "$BASE"))"
  mkdir -p "$WORK/base-src"
  git archive "$BASE" | tar -x -C "$WORK/base-src"
  (cd "$WORK/base-src" && "$GO" build -o "$WORK/kproxy-base" ./cmd/kproxy)
fi

ID="prodrepl-$(date +%s)"
topics=()
for r in $(seq 1 "$ROUNDS"); do topics+=("$ID-plain-r$r" "$ID-repl-r$r"); done
if [[ -n "$BASE" ]]; then
  for r in $(seq 1 "$ROUNDS"); do topics+=("$ID-bplain-r$r" "$ID-brepl-r$r"); done
fi
# Created before kproxy starts, so its replicator copies every repl topic
# from its first pass (empty: nothing to catch up but the warm-up below).
"$LG" create -brokers "$SOURCE" -partitions "$PARTITIONS" -topics "$(IFS=,; echo "${topics[*]}")" >/dev/null
# The twins, on the target: plain_twin writes to them directly while it
# measures the plain topic, so the target broker takes the copy's load
# without kproxy's copy (below).
twins=()
for r in $(seq 1 "$ROUNDS"); do twins+=("$ID-twin-r$r"); done
"$LG" create -brokers "$TARGET" -partitions "$PARTITIONS" -topics "$(IFS=,; echo "${twins[*]}")" >/dev/null

# start_kproxy NAME BINARY PATTERN: a kproxy replicating the topics of
# PATTERN; sets LISTEN_<NAME>, ADMIN_<NAME>, KPID_<NAME>.
start_kproxy() {
  local name=$1 bin=$2 pattern=$3 listen admin pid
  listen="127.0.0.1:$(free_port)"
  admin="127.0.0.1:$(free_port)"
  cat >"$WORK/$name.yaml" <<YAML
listen: $listen
admin: $admin
state_dir: $WORK/state-$name
clusters:
  source: { bootstrap: [$SOURCE] }
  target: { bootstrap: [$TARGET] }
routes: { default: source }
replicate: ["$pattern"]
log: { level: warn }
YAML
  "$bin" run -c "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for i in $(seq 1 150); do curl -fsS "http://$admin/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://$admin/readyz" >/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
  printf -v "LISTEN_$name" %s "$listen"
  printf -v "ADMIN_$name" %s "$admin"
  printf -v "KPID_$name" %s "$pid"
}
start_kproxy kproxy "$WORK/kproxy" "$ID-repl-*"
LISTEN=$LISTEN_kproxy ADMIN=$ADMIN_kproxy KPID=$KPID_kproxy
if [[ -n "$BASE" ]]; then
  start_kproxy base "$WORK/kproxy-base" "$ID-brepl-*"
fi

# repl_lag [ADMIN PREFIX] prints the replicated topics' total lag in records
# from /status (-1 when a repl topic is not copying yet).
repl_lag() {
  curl -fsS "http://${1:-$ADMIN}/status" | python3 -c '
import json, sys
prefix = sys.argv[1]
parts = (json.load(sys.stdin).get("replication") or {}).get("partitions") or []
lag, seen = 0, set()
for p in parts:
    if p["Topic"].startswith(prefix):
        seen.add(p["Topic"])
        lag += p["LagRecords"]
print(lag if len(seen) == int(sys.argv[2]) else -1)' "${2:-$ID-repl-}" "$ROUNDS"
}
say "waiting for the copy of $ROUNDS replicated topics to start"
for i in $(seq 1 150); do [[ "$(repl_lag)" == 0 ]] && break; sleep 0.2; done
[[ "$(repl_lag)" == 0 ]] || { say "the copy did not start: $(curl -fsS "http://$ADMIN/status" | head -c 2000)"; exit 1; }
if [[ -n "$BASE" ]]; then
  for i in $(seq 1 150); do [[ "$(repl_lag "$ADMIN_base" "$ID-brepl-")" == 0 ]] && break; sleep 0.2; done
  [[ "$(repl_lag "$ADMIN_base" "$ID-brepl-")" == 0 ]] || { say "the base copy did not start"; exit 1; }
fi

# Warm-up: connections, producer ids and metadata on every path.
"$LG" latency -brokers "$SOURCE" -topic "$ID-plain-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
"$LG" latency -brokers "$LISTEN" -topic "$ID-plain-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
"$LG" latency -brokers "$LISTEN" -topic "$ID-repl-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
if [[ -n "$BASE" ]]; then
  "$LG" latency -brokers "$LISTEN_base" -topic "$ID-bplain-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
  "$LG" latency -brokers "$LISTEN_base" -topic "$ID-brepl-r1" -rate "$RATE" -duration 3s -size "$SIZE" >/dev/null
fi

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# The brokers' CPU in each phase too: on one machine the copy's cost
# includes what the target broker spends taking its Produce requests and
# the source broker answering its fetches, which share the cores with the
# producer and its broker (0 when kafka.sh does not know the broker).
broker_pid() { bash test/kafka/kafka.sh status 2>/dev/null | sed -n "s/^$1: running (pid \([0-9]*\)).*/\1/p"; }
SPID="$(broker_pid source)" TPID="$(broker_pid target)"
broker_ticks() { if [[ -n "$1" && -r "/proc/$1/stat" ]]; then cpu_ticks "$1"; else echo 0; fi; }
secs() { awk -v a="$1" -v b="$2" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}'; }
RAW="$WORK/raw.jsonl"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
# plain_twin: the plain topic through kproxy while a second producer
# writes the same load (RATE one-record batches a second, linger 0)
# straight to a target topic. On one machine the target broker then does
# what the copy makes it do, without the copy: repl against plain_twin is
# what kproxy's copy adds beyond the target broker's own work.
PATHS=(direct plain repl plain_twin)
[[ -z "$BASE" ]] || PATHS+=(base_plain base_repl)
for r in $(seq 1 "$ROUNDS"); do
  order=()
  for i in "${!PATHS[@]}"; do order+=("${PATHS[$(( (i + r - 1) % ${#PATHS[@]} ))]}"); done
  for p in "${order[@]}"; do
    kpid=$KPID admin=$ADMIN prefix="$ID-repl-"
    case $p in
      direct) addr=$SOURCE topic="$ID-plain-r$r" ;;
      plain) addr=$LISTEN topic="$ID-plain-r$r" ;;
      repl) addr=$LISTEN topic="$ID-repl-r$r" ;;
      plain_twin) addr=$LISTEN topic="$ID-plain-r$r" ;;
      base_plain) addr=$LISTEN_base topic="$ID-bplain-r$r" kpid=$KPID_base admin=$ADMIN_base prefix="$ID-brepl-" ;;
      base_repl) addr=$LISTEN_base topic="$ID-brepl-r$r" kpid=$KPID_base admin=$ADMIN_base prefix="$ID-brepl-" ;;
    esac
    k0=$(cpu_ticks "$kpid") s0=$(broker_ticks "$SPID") t0=$(broker_ticks "$TPID")
    twin=
    if [[ $p == plain_twin ]]; then
      "$LG" latency -brokers "$TARGET" -topic "$ID-twin-r$r" -rate "$RATE" -duration "${LAT_SECONDS}s" -size "$SIZE" >/dev/null &
      twin=$!
    fi
    out="$("$LG" latency -brokers "$addr" -topic "$topic" -rate "$RATE" -duration "${LAT_SECONDS}s" -size "$SIZE")"
    [[ -z "$twin" ]] || wait "$twin"
    k1=$(cpu_ticks "$kpid") s1=$(broker_ticks "$SPID") t1=$(broker_ticks "$TPID")
    lag=$(repl_lag "$admin" "$prefix")
    printf '{"round":%d,"path":"%s","kproxy_cpu_s":%s,"source_broker_cpu_s":%s,"target_broker_cpu_s":%s,"repl_lag_after":%s,"load1":%s,"result":%s}\n' "$r" "$p" \
      "$(secs "$k0" "$k1")" "$(secs "$s0" "$s1")" "$(secs "$t0" "$t1")" "$lag" "$(cut -d' ' -f1 /proc/loadavg)" "$out" | tee -a "$RAW"
  done
done
# The copy's target Produce requests and the batches in them, warm-up
# included (decision 017's counters; a kproxy without them sent one
# request per batch).
copy_requests() {
  curl -fsS "http://$1/metrics" | awk '/^kproxy_replicator_produce_(requests|batches)_total/{sub("kproxy_replicator_produce_", "", $1); printf "%s=%s ", $1, $2}'
}
say "copy's target Produce requests: kproxy: $(copy_requests "$ADMIN")"
[[ -z "$BASE" ]] || say "copy's target Produce requests: base: $(copy_requests "$ADMIN_base")"
"$LG" delete -brokers "$SOURCE" -prefix "$ID-" >/dev/null || true
"$LG" delete -brokers "$TARGET" -prefix "$ID-" >/dev/null || true  # the twins too
grep -iE '"level":"(error|warn)"|level=(ERROR|WARN)|\[(ERROR|WARN)\]' "$WORK/kproxy.log" | head -5 | sed "s/^/kproxy log: /" >&2 || true
python3 - "$RAW" "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$RATE" "$BASE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
base = sys.argv[5]
out = {"rate": int(sys.argv[4]), "load_start": sys.argv[2], "load_end": sys.argv[3]}
if base:
    out["base"] = base
by = lambda p: sorted((r for r in rows if r["path"] == p), key=lambda r: r["round"])
paths = ("direct", "plain", "repl", "plain_twin") + (("base_plain", "base_repl") if base else ())
for p in paths:
    rs = by(p)
    o = out[p] = {}
    for q in ("p50_ms", "p99_ms", "p999_ms"):
        o[q + "_rounds"] = [round(x["result"][q], 3) for x in rs]
        o[q + "_median"] = round(med(o[q + "_rounds"]), 3)
    if p != "direct":
        o["kproxy_cpu_s_rounds"] = [x["kproxy_cpu_s"] for x in rs]
    for b in ("source_broker", "target_broker"):
        o[b + "_cpu_s_rounds"] = [x[b + "_cpu_s"] for x in rs]
    if p.endswith("repl"):
        o["repl_lag_after_rounds"] = [x["repl_lag_after"] for x in rs]
    o["load1_rounds"] = [x["load1"] for x in rs]
for pre in ("", "base_") if base else ("",):
    for q in ("p50_ms", "p99_ms"):
        pairs = zip(by(pre + "repl"), by(pre + "plain"))
        k = pre + "repl_over_" + pre + "plain_" + q
        out[k + "_rounds"] = [round(a["result"][q] / b["result"][q], 3) for a, b in pairs]
        out[k + "_median"] = round(med(out[k + "_rounds"]), 3)
for q in ("p50_ms", "p99_ms"):
    pairs = zip(by("repl"), by("plain_twin"))
    k = "repl_over_plain_twin_" + q
    out[k + "_rounds"] = [round(a["result"][q] / b["result"][q], 3) for a, b in pairs]
    out[k + "_median"] = round(med(out[k + "_rounds"]), 3)
print(json.dumps(out, indent=1))
PY
