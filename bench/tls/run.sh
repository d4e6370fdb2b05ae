#!/usr/bin/env bash
# bench/tls/run.sh — `make bench-tls`: produce and fetch through kproxy with TLS on both
# sides vs a TLS client straight to a TLS broker, in the same run.
#
#   direct: loadgen --TLS + SASL SCRAM-SHA-512--> source broker's SASL_SSL listener
#   proxy:  loadgen --TLS + SASL SCRAM-SHA-512--> kproxy --TLS + SASL SCRAM-SHA-512--> the same listener
#
# Needs the harness up with its SASL_SSL listeners (KAFKA_SECURE=1 bash test/kafka/kafka.sh up;
# on a shared machine through your lane: /work/lane.sh K ...). kproxy's listener certificate is the
# harness's throwaway broker certificate (same CA, valid for 127.0.0.1); kproxy's client user and
# password are made here, into a temporary directory. ROUNDS rounds, the direct/proxy order rotating
# per round; bench/tls/assemble.py takes medians and spreads, writes its own section of
# bench/RESULTS.md and its entries of bench/results.json (tls_produce_throughput,
# tls_fetch_throughput, tls_kproxy_cpu).
#
# Knobs (env): ROUNDS=3 N=200000 SIZE=1024 PARTITIONS=6
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT="$PWD"
ROUNDS="${ROUNDS:-3}"
N="${N:-200000}"
SIZE="${SIZE:-1024}"
PARTITIONS="${PARTITIONS:-6}"
GO="${GO:-go}"

say() { printf '[bench-tls %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
source bench/lib.sh

eval "$(bash test/kafka/kafka.sh env 2>/dev/null)"
[[ -n "${KPROXY_SOURCE_SECURE_BOOTSTRAP:-}" && -n "${KPROXY_KAFKA_SECURE_DIR:-}" ]] ||
  die "the harness has no SASL_SSL listener: KAFKA_SECURE=1 bash test/kafka/kafka.sh up"
SEC="$KPROXY_KAFKA_SECURE_DIR"
PLAIN_SOURCE="$KPROXY_SOURCE_BOOTSTRAP"
TLS_SOURCE="$KPROXY_SOURCE_SECURE_BOOTSTRAP"

bench_lock "another benchmark is running; waiting for it (lock /tmp/kproxy-bench.lock)"
T0=$(date +%s)
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

WORK="$(mktemp -d /tmp/kproxy-bench-tls.XXXXXX)"
chmod 700 "$WORK"
KPROXY_PID=""
ID="benchtls-$(date +%s)"
cleanup() {
  local rc=$?
  stop_pid "$KPROXY_PID"
  if [[ -x "$WORK/loadgen" ]]; then
    "$WORK/loadgen" delete -brokers "$PLAIN_SOURCE" -prefix "$ID-" -timeout 30s >/dev/null 2>&1 ||
      say "warning: could not delete topics $ID-*"
  fi
  # The work dir holds a password and kproxy's users file: removed either way.
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

status="$(bash test/kafka/kafka.sh status 2>&1 || true)"
BROKER_PID="$(sed -n 's/^source: running (pid \([0-9]*\)).*/\1/p' <<<"$status" | head -1)"
[[ -n "$BROKER_PID" ]] || die "the source broker is not running"

say "building kproxy, kproxy-users and loadgen"
"$GO" build -o "$WORK/kproxy" ./cmd/kproxy
"$GO" build -o "$WORK/kproxy-users" ./cmd/kproxy-users
"$GO" build -o "$WORK/loadgen" ./bench/loadgen
LG="$WORK/loadgen"

# kproxy's client credential: a random password, salted into the users file.
head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$WORK/bench.password"
"$WORK/kproxy-users" -f "$WORK/users.yaml" -u bench <"$WORK/bench.password" >/dev/null

LISTEN="127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"
cat >"$WORK/kproxy.yaml" <<EOF
listeners:
  - name: tls
    listen: $LISTEN
    tls: { cert_file: $SEC/broker.crt, key_file: $SEC/broker.key, min_version: "1.2" }
    sasl: { users_file: $WORK/users.yaml, mechanisms: [SCRAM-SHA-512] }
admin: $ADMIN
state_dir: $WORK/state
clusters:
  source:
    bootstrap: [$TLS_SOURCE]
    tls: { ca_file: $SEC/ca.pem }
    sasl: { mechanism: SCRAM-SHA-512, username: kproxy, password_file: $SEC/kproxy.password }
  target: { bootstrap: [$KPROXY_TARGET_BOOTSTRAP] }
routes: { default: source }
log: { level: warn }
EOF
"$WORK/kproxy" run -c "$WORK/kproxy.yaml" >"$WORK/kproxy.log" 2>&1 &
KPROXY_PID=$!
for _ in $(seq 1 150); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  kill -0 "$KPROXY_PID" 2>/dev/null || { cat "$WORK/kproxy.log" >&2; die "kproxy exited"; }
  sleep 0.2
done
curl -fsS "http://$ADMIN/readyz" >/dev/null || { cat "$WORK/kproxy.log" >&2; die "kproxy never became ready"; }
say "kproxy pid $KPROXY_PID ready on $LISTEN (TLS + SCRAM-SHA-512) in front of $TLS_SOURCE (SASL_SSL)"

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() {
  [[ -n "$1" && -r "/proc/$1/stat" ]] || { echo 0; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Both paths: TLS trusting the harness CA and SCRAM-SHA-512; only the user differs.
sec_args() {
  if [[ $1 == proxy ]]; then
    echo "-brokers $LISTEN -tls-ca $SEC/ca.pem -sasl SCRAM-SHA-512 -sasl-user bench -sasl-password-file $WORK/bench.password"
  else
    echo "-brokers $TLS_SOURCE -tls-ca $SEC/ca.pem -sasl SCRAM-SHA-512 -sasl-user kproxy -sasl-password-file $SEC/kproxy.password"
  fi
}

topics=("$ID-warmup")
for r in $(seq 1 "$ROUNDS"); do topics+=("$ID-r$r-direct" "$ID-r$r-proxy"); done
"$LG" create -brokers "$PLAIN_SOURCE" -partitions "$PARTITIONS" -topics "$(IFS=,; echo "${topics[*]}")" >/dev/null

RAW="$WORK/raw.jsonl"
: >"$RAW"
measure() { # ROUND PATH PHASE -- loadgen args
  local round=$1 path=$2 phase=$3; shift 4
  local k0 b0 k1 b1 out
  kill -0 "$KPROXY_PID" 2>/dev/null || { cat "$WORK/kproxy.log" >&2; die "kproxy is gone"; }
  k0=$(cpu_ticks "$KPROXY_PID"); b0=$(cpu_ticks "$BROKER_PID")
  out="$("$LG" "$@")"
  k1=$(cpu_ticks "$KPROXY_PID"); b1=$(cpu_ticks "$BROKER_PID")
  printf '{"round":%d,"path":"%s","phase":"%s","kproxy_cpu_s":%s,"broker_cpu_s":%s,"result":%s}\n' \
    "$round" "$path" "$phase" \
    "$(awk -v a="$k0" -v b="$k1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" \
    "$(awk -v a="$b0" -v b="$b1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}')" \
    "$out" >>"$RAW"
  say "round $round $phase $path: $out"
}

# Warm-up (not recorded): connections, TLS sessions, page cache.
# shellcheck disable=SC2046 # sec_args is split on purpose
"$LG" produce $(sec_args direct) -topic "$ID-warmup" -n 20000 -size "$SIZE" >/dev/null
# shellcheck disable=SC2046
"$LG" produce $(sec_args proxy) -topic "$ID-warmup" -n 20000 -size "$SIZE" >/dev/null
# shellcheck disable=SC2046
"$LG" consume $(sec_args proxy) -topic "$ID-warmup" >/dev/null

for r in $(seq 1 "$ROUNDS"); do
  if ((r % 2 == 1)); then order=(direct proxy); else order=(proxy direct); fi
  for p in "${order[@]}"; do
    # shellcheck disable=SC2046
    measure "$r" "$p" produce -- produce $(sec_args "$p") -topic "$ID-r$r-$p" -n "$N" -size "$SIZE"
  done
  for p in "${order[@]}"; do
    # shellcheck disable=SC2046
    measure "$r" "$p" consume -- consume $(sec_args "$p") -topic "$ID-r$r-$p"
  done
done

kill -0 "$KPROXY_PID" 2>/dev/null || { cat "$WORK/kproxy.log" >&2; die "kproxy died during the run"; }
if grep -qE '\[(ERROR|WARN)\]' "$WORK/kproxy.log"; then
  say "kproxy logged warnings/errors:"; grep -E '\[(ERROR|WARN)\]' "$WORK/kproxy.log" | head -20 >&2
fi
SOURCE_VERSION="$(tr '\0' ' ' <"/proc/$BROKER_PID/cmdline" 2>/dev/null | grep -o 'broker-[0-9][0-9.]*[0-9]' | head -1 | sed 's/broker-//' || true)"
ELAPSED=$(($(date +%s) - T0))
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git status --porcelain -- cmd proxy config routing secure 2>/dev/null)" ]] && REV="$REV + uncommitted changes"
python3 bench/tls/assemble.py --raw "$RAW" --results bench/results.json --md bench/RESULTS.md \
  --rounds "$ROUNDS" --n "$N" --size "$SIZE" --partitions "$PARTITIONS" --kafka "${SOURCE_VERSION:-unknown}" \
  --elapsed "$ELAPSED" --rev "$REV" --load-before "$LOAD_BEFORE" --load-after "$(cut -d' ' -f1-3 /proc/loadavg)"
cp "$RAW" bench/tls/raw-last.jsonl
say "done in ${ELAPSED}s: bench/RESULTS.md (TLS section), bench/results.json (raw: bench/tls/raw-last.jsonl)"
