#!/usr/bin/env bash
# bench/run.sh — `make bench`: kproxy vs direct on the real source cluster.
#
# Builds kproxy and bench/loadgen, starts kproxy as its own process in front of
# the source cluster (routes: default source), and runs, in the same run, the
# same loadgen measurements against the broker directly and through kproxy:
# produce throughput, produce ack latency at a fixed rate, fetch throughput,
# plus kproxy's CPU-seconds per GB from /proc/<pid>/stat. ROUNDS rounds, the
# direct/proxy order alternating per round; bench/assemble.py takes medians and
# writes bench/results.json (merged) and bench/RESULTS.md.
#
# Knobs (env): ROUNDS=3 N=300000 SIZE=1024 RATE=5000 LAT_SECONDS=15
#              PARTITIONS=6 LISTEN=127.0.0.1:19192 ADMIN=127.0.0.1:19644
#              SOURCE=127.0.0.1:19092 TARGET=127.0.0.1:29092 PERF=0
# PERF=1 additionally records a `perf` CPU profile of kproxy during the first
# proxied produce phase and writes bench/profile-produce.txt.
#
# Peer: GREPPLABS_BIN=/path/to/kafka-proxy adds a third path, grepplabs/
# kafka-proxy in front of the same broker, measured in the same rounds (the
# order rotates per round over all paths). Build it from its public source
# with its vendored modules, outside this repository (it is a benchmark peer,
# never a dependency):
#   git clone https://github.com/grepplabs/kafka-proxy && cd kafka-proxy &&
#   go build -mod=vendor -o /tmp/grepplabs-kafka-proxy . 
# JAVA=1 (default when java is on PATH) adds Kafka's ProducerPerformance and
# ConsumerPerformance (tools classpath from test/kafka/kafka.sh tools-cp), JAVA_N
# records (default 30000), per path and round.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS="${ROUNDS:-3}"
N="${N:-300000}"
SIZE="${SIZE:-1024}"
RATE="${RATE:-5000}"
LAT_SECONDS="${LAT_SECONDS:-15}"
PARTITIONS="${PARTITIONS:-6}"
# Free ports picked at start unless given, so a second kproxy on the usual
# ports (another run, a dev instance) can neither block nor impersonate ours.
source bench/lib.sh
LISTEN="${LISTEN:-127.0.0.1:$(free_port)}"
ADMIN="${ADMIN:-127.0.0.1:$(free_port)}"
SOURCE="${SOURCE:-127.0.0.1:19092}"
TARGET="${TARGET:-127.0.0.1:29092}"
PERF="${PERF:-0}"
GREPPLABS_BIN="${GREPPLABS_BIN:-}"
PEER_LISTEN="${PEER_LISTEN:-127.0.0.1:$(free_port)}"
JAVA="${JAVA:-$(command -v java >/dev/null && echo 1 || echo 0)}"
JAVA_N="${JAVA_N:-30000}"
JAVA_ROUNDS="${JAVA_ROUNDS:-$ROUNDS}" # JVM start-up is slow on a loaded machine: fewer rounds may do
# Connections (issue 12 item 7): produce with each count of client
# connections (one franz-go client each), CONN_N records in all per run;
# and, before any load, kproxy's (and the peer's) resident memory per idle
# connection with HOLD_CLIENTS clients connected.
CONNS="${CONNS:-1 16 256}"
CONN_N="${CONN_N:-60000}"
HOLD_CLIENTS="${HOLD_CLIENTS:-256}"
PATHS=(direct proxy)
[[ -n "$GREPPLABS_BIN" ]] && PATHS+=(peer)
GO="${GO:-go}"

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_lock "another bench/run.sh is running; waiting for it (lock /tmp/kproxy-bench.lock)"
T0=$(date +%s)
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"

WORK="$(mktemp -d /tmp/kproxy-bench.XXXXXX)"
KPROXY_PID=""
PEER_PID=""
ID="bench-$(date +%s)"
cleanup() {
  local rc=$?
  stop_pid "$KPROXY_PID"
  stop_pid "$PEER_PID"
  if [[ -x "$WORK/loadgen" ]]; then
    "$WORK/loadgen" delete -brokers "$SOURCE" -prefix "$ID-" -timeout 30s >/dev/null 2>&1 ||
      say "warning: could not delete topics $ID-*"
  fi
  [[ $rc -eq 0 ]] && rm -rf "$WORK" || say "work dir kept: $WORK"
}
trap cleanup EXIT

# --- Kafka -----------------------------------------------------------------
status="$(bash test/kafka/kafka.sh status 2>&1 || true)"
if ! grep -q '^source: running' <<<"$status"; then
  say "source cluster not running; starting it (bash test/kafka/kafka.sh up)"
  bash test/kafka/kafka.sh up >&2
  status="$(bash test/kafka/kafka.sh status 2>&1 || true)"
fi
BROKER_PID="$(sed -n 's/^source: running (pid \([0-9]*\)).*/\1/p' <<<"$status" | head -1)"
SOURCE_VERSION="$(tr '\0' ' ' <"/proc/${BROKER_PID:-0}/cmdline" 2>/dev/null | grep -o 'broker-[0-9][0-9.]*[0-9]' | head -1 | sed 's/broker-//' || true)"

# --- build -----------------------------------------------------------------
say "building kproxy and loadgen"
"$GO" build -o "$WORK/kproxy" ./cmd/kproxy
"$GO" build -o "$WORK/loadgen" ./bench/loadgen
LG="$WORK/loadgen"

# --- kproxy ----------------------------------------------------------------
cat >"$WORK/kproxy.yaml" <<EOF
listen: $LISTEN
admin: $ADMIN
clusters:
  source: { bootstrap: [$SOURCE] }
  target: { bootstrap: [$TARGET] }
routes: { default: source }
log: { level: warn }
EOF
"$WORK/kproxy" run -c "$WORK/kproxy.yaml" >"$WORK/kproxy.log" 2>&1 &
KPROXY_PID=$!
for i in $(seq 1 100); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  kill -0 "$KPROXY_PID" 2>/dev/null || { cat "$WORK/kproxy.log" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "http://$ADMIN/readyz" >/dev/null && kill -0 "$KPROXY_PID" 2>/dev/null ||
  { say "kproxy never became ready"; cat "$WORK/kproxy.log" >&2; exit 1; }
say "kproxy pid $KPROXY_PID ready on $LISTEN; source broker pid ${BROKER_PID:-?}"

# --- peer: grepplabs/kafka-proxy (optional) ---------------------------------
if [[ -n "$GREPPLABS_BIN" ]]; then
  # One mapping for the one source broker; no dynamic listeners (there are
  # no other brokers to discover); its metrics on a free port.
  "$GREPPLABS_BIN" server --bootstrap-server-mapping "$SOURCE,$PEER_LISTEN" \
    --dynamic-listeners-disable --http-listen-address "127.0.0.1:$(free_port)" \
    >"$WORK/peer.log" 2>&1 &
  PEER_PID=$!
  for i in $(seq 1 50); do
    (exec 3<>"/dev/tcp/${PEER_LISTEN%:*}/${PEER_LISTEN##*:}") 2>/dev/null && break
    kill -0 "$PEER_PID" 2>/dev/null || { cat "$WORK/peer.log" >&2; exit 1; }
    sleep 0.2
  done
  say "grepplabs/kafka-proxy pid $PEER_PID on $PEER_LISTEN"
fi
if [[ $JAVA == 1 ]]; then
  TOOLS_CP="$(bash test/kafka/kafka.sh tools-cp)"
  export TOOLS_CP
fi

CLK_TCK="$(getconf CLK_TCK)"
# cpu_ticks PID: utime+stime in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the comm field is stripped first since it may contain spaces).
cpu_ticks() {
  [[ -n "$1" && -r "/proc/$1/stat" ]] || { echo 0; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# --- topics ----------------------------------------------------------------
topics=()
for r in $(seq 1 "$ROUNDS"); do
  for p in "${PATHS[@]}"; do topics+=("$ID-r$r-$p" "$ID-r$r-$p-lat" "$ID-r$r-$p-java"); done
done
topics+=("$ID-warmup")
"$LG" create -brokers "$SOURCE" -partitions "$PARTITIONS" -topics "$(IFS=,; echo "${topics[*]}")" >/dev/null
say "created ${#topics[@]} topics ($ID-*), $PARTITIONS partitions each"

RAW="$WORK/raw.jsonl"
: >"$RAW"

# measure ROUND PATH PHASE -- loadgen args...: runs loadgen (or, when the
# first argument is "java", bench/javaperf.sh with the rest), records its
# JSON with the CPU ticks of the path's proxy (kproxy, or the peer; the
# field keeps its name kproxy_cpu_s) and the broker's during the run.
measure() {
  local round=$1 path=$2 phase=$3; shift 4
  local k0 b0 k1 b1 out pid=$KPROXY_PID
  [[ $path == peer ]] && pid=$PEER_PID
  k0=$(cpu_ticks "$pid"); b0=$(cpu_ticks "$BROKER_PID")
  kill -0 "$KPROXY_PID" 2>/dev/null || { say "kproxy (pid $KPROXY_PID) is gone"; cat "$WORK/kproxy.log" >&2; exit 1; }
  if [[ $1 == java ]]; then
    shift
    out="$(bash bench/javaperf.sh "$@")"
  elif ! out="$("$LG" "$@")"; then
    # The peer is a yardstick, not the subject: when it fails a phase (at
    # 256 client connections on an idle machine its upstream connections
    # were reset by the broker), that round has no peer figure, said here
    # and counted in the report, and the run goes on. kproxy or the direct
    # path failing still ends the run.
    [[ $path == peer ]] || exit 1
    say "round $round $phase peer: FAILED (no figure recorded for this round)"
    echo "$round $phase" >>"$WORK/peer-failed"
    return 0
  fi
  k1=$(cpu_ticks "$pid"); b1=$(cpu_ticks "$BROKER_PID")
  printf '{"round":%d,"path":"%s","phase":"%s","kproxy_cpu_s":%s,"broker_cpu_s":%s,"result":%s}\n' \
    "$round" "$path" "$phase" \
    "$(awk -v a="$k0" -v b="$k1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" \
    "$(awk -v a="$b0" -v b="$b1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" \
    "$out" >>"$RAW"
  say "round $round $phase $path: $out"
}
# profiled: measure, plus (PERF=1, round 1, proxied) a perf profile of kproxy
# written to bench/profile-PHASE.txt.
profiled() {
  local round=$1 path=$2 phase=$3
  if [[ $PERF == 1 && $round == 1 && $path == proxy ]] && command -v perf >/dev/null; then
    perf record -F 999 -o "$WORK/perf-$phase.data" -p "$KPROXY_PID" >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.5
    measure "$@"
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$WORK/perf-$phase.data" --no-children --sort dso,symbol -g none --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -30 \
      >"$ROOT/bench/profile-$phase.txt" || true
  else
    measure "$@"
  fi
}
addr() {
  case $1 in proxy) echo "$LISTEN" ;; peer) echo "$PEER_LISTEN" ;; *) echo "$SOURCE" ;; esac
}

# Memory per idle connection: VmRSS of the proxy before and while
# HOLD_CLIENTS clients hold a connection each. Measured first, on the
# freshly started proxies: after the throughput rounds kproxy's heap still
# holds their buffers and shrinks while the clients connect, which once gave
# a negative figure (-43.75 KiB per connection).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
for p in "${PATHS[@]}"; do
  [[ $p == direct ]] && continue
  pid=$KPROXY_PID; [[ $p == peer ]] && pid=$PEER_PID
  before=$(rss_kib "$pid")
  "$LG" hold -brokers "$(addr "$p")" -clients "$HOLD_CLIENTS" -duration 6s >/dev/null 2>"$WORK/hold.err" &
  hold_pid=$!
  for i in $(seq 1 300); do grep -q holding "$WORK/hold.err" 2>/dev/null && break; sleep 0.2; done
  sleep 2
  during=$(rss_kib "$pid")
  wait "$hold_pid" || say "warning: hold on $p failed: $(cat "$WORK/hold.err")"
  printf '{"round":1,"path":"%s","phase":"memory","kproxy_cpu_s":0,"broker_cpu_s":0,"result":{"bytes":0,"clients":%d,"rss_before_kib":%d,"rss_during_kib":%d,"kib_per_conn":%s}}\n' \
    "$p" "$HOLD_CLIENTS" "$before" "$during" "$(awk -v a="$before" -v b="$during" -v n="$HOLD_CLIENTS" 'BEGIN{printf "%.2f", (b-a)/n}')" >>"$RAW"
  say "memory $p: RSS $before KiB idle, $during KiB with $HOLD_CLIENTS connections"
done

# Warm-up (not recorded): connections, JIT, page cache.
"$LG" produce -brokers "$SOURCE" -topic "$ID-warmup" -n 20000 -size "$SIZE" >/dev/null
"$LG" produce -brokers "$LISTEN" -topic "$ID-warmup" -n 20000 -size "$SIZE" >/dev/null
"$LG" consume -brokers "$LISTEN" -topic "$ID-warmup" >/dev/null
if [[ -n "$GREPPLABS_BIN" ]]; then
  "$LG" produce -brokers "$PEER_LISTEN" -topic "$ID-warmup" -n 20000 -size "$SIZE" >/dev/null
  "$LG" consume -brokers "$PEER_LISTEN" -topic "$ID-warmup" >/dev/null
fi

for r in $(seq 1 "$ROUNDS"); do
  # Rotate the path order per round (direct proxy peer, proxy peer direct, ...).
  order=()
  for i in "${!PATHS[@]}"; do order+=("${PATHS[$(( (i + r - 1) % ${#PATHS[@]} ))]}"); done
  for p in "${order[@]}"; do
    profiled "$r" "$p" produce -- produce -brokers "$(addr "$p")" -topic "$ID-r$r-$p" -n "$N" -size "$SIZE"
  done
  for p in "${order[@]}"; do
    measure "$r" "$p" latency -- latency -brokers "$(addr "$p")" -topic "$ID-r$r-$p-lat" \
      -rate "$RATE" -duration "${LAT_SECONDS}s" -size "$SIZE"
  done
  for p in "${order[@]}"; do
    profiled "$r" "$p" consume -- consume -brokers "$(addr "$p")" -topic "$ID-r$r-$p"
  done
  for c in $CONNS; do
    for p in "${order[@]}"; do
      measure "$r" "$p" "produce_c$c" -- produce -brokers "$(addr "$p")" -topic "$ID-r$r-$p" -n "$CONN_N" -size "$SIZE" -clients "$c"
    done
  done
  if [[ $JAVA == 1 ]] && (( r <= JAVA_ROUNDS )); then
    for p in "${order[@]}"; do
      measure "$r" "$p" java_produce -- java produce "$(addr "$p")" "$ID-r$r-$p-java" "$JAVA_N" "$SIZE"
    done
    for p in "${order[@]}"; do
      measure "$r" "$p" java_consume -- java consume "$(addr "$p")" "$ID-r$r-$p-java" "$JAVA_N" "$SIZE"
    done
  fi
done

kill -0 "$KPROXY_PID" 2>/dev/null || { say "kproxy died during the run"; cat "$WORK/kproxy.log" >&2; exit 1; }
if grep -qiE '"level":"(error|warn)"|level=(ERROR|WARN)' "$WORK/kproxy.log"; then
  say "kproxy logged warnings/errors:"; grep -iE 'error|warn' "$WORK/kproxy.log" | head -20 >&2
fi

"$LG" delete -brokers "$SOURCE" -prefix "$ID-" >/dev/null && say "deleted topics $ID-*"

ELAPSED=$(( $(date +%s) - T0 ))
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git status --porcelain -- cmd proxy config routing 2>/dev/null)" ]] && REV="$REV + uncommitted changes"
python3 bench/assemble.py \
  --raw "$RAW" --results bench/results.json --md bench/RESULTS.md \
  --rounds "$ROUNDS" --n "$N" --size "$SIZE" --rate "$RATE" --lat-seconds "$LAT_SECONDS" \
  --partitions "$PARTITIONS" --kafka "${SOURCE_VERSION:-unknown}" --elapsed "$ELAPSED" --rev "$REV" \
  --profile "$([[ $PERF == 1 ]] && echo bench/profile-produce.txt,bench/profile-consume.txt || true)"
cp "$RAW" bench/raw-last.jsonl
# Notes at the end of this run's section of RESULTS.md: the machine's load
# (other work on the same cores moves every figure), and which peer phases
# have fewer rounds than the others.
printf -- '- Load average (1, 5, 15 min) at the start: %s; at the end: %s.\n' "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$WORK/notes"
if [[ -s "$WORK/peer-failed" ]]; then
  printf -- '- grepplabs/kafka-proxy failed these phases (round phase), which have no peer figure for that round: %s\n' \
    "$(paste -sd, "$WORK/peer-failed")" >>"$WORK/notes"
fi
python3 - "$WORK/notes" bench/RESULTS.md <<'PY'
import sys
note = open(sys.argv[1]).read()
md = open(sys.argv[2]).read()
end = "<!-- bench/run.sh:end -->"
if end in md:
    md = md.replace(end, note.strip("\n") + "\n\n" + end, 1)
open(sys.argv[2], "w").write(md)
PY
say "done in ${ELAPSED}s: bench/RESULTS.md, bench/results.json (raw: bench/raw-last.jsonl)"
