#!/usr/bin/env bash
# bench/produce_splice_clients.sh — real clients' large batches through the
# spliced Produce path (proxy/produce_splice.go, decision 009), checked by a
# real broker: franz-go (bench/loadgen, idempotent), kcat (librdkafka,
# idempotent) and Kafka's Java producer (ProducerPerformance, idempotent),
# each producing records of SIZE bytes in batches of up to 1 MiB through
# this tree's kproxy into the lane's source broker, which checks every
# batch's CRC (a wrong byte is refused: the producer reports the error).
# Then per client: the records read back from the broker directly (kcat,
# counted and compared by checksum where the client's values are known),
# and kproxy's kproxy_produce_splices_total{outcome="spliced"} before and
# after: the requests really went the spliced way.
#
# Knobs (env): SOURCE (default the lane's, after `source /work/lane.sh K`),
#              N=4000 records per client, SIZE=16384.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="${SOURCE:-127.0.0.1:${KAFKA_SOURCE_BROKER_PORT:-19092}}"
N="${N:-4000}"
SIZE="${SIZE:-16384}"
GO="${GO:-go}"
WORK="$(mktemp -d)"
KP=""
cleanup() { [[ -n $KP ]] && { kill -TERM "$KP" 2>/dev/null || true; wait "$KP" 2>/dev/null || true; }; rm -rf "$WORK"; }
trap cleanup EXIT
say() { echo "splice_clients: $*" >&2; }
source bench/lib.sh

"$GO" build -o "$WORK/kproxy" ./cmd/kproxy
"$GO" build -o "$WORK/loadgen" ./bench/loadgen
LISTEN="127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"
cat >"$WORK/kproxy.yaml" <<YAML
listen: $LISTEN
admin: $ADMIN
clusters:
  source: { bootstrap: [$SOURCE] }
routes: { default: source }
log: { level: warn }
YAML
"$WORK/kproxy" run -c "$WORK/kproxy.yaml" >"$WORK/kproxy.log" 2>&1 &
KP=$!
for _ in $(seq 1 100); do curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://$ADMIN/readyz" >/dev/null || { cat "$WORK/kproxy.log" >&2; exit 1; }
spliced() { curl -fsS "http://$ADMIN/metrics" | awk '/^kproxy_produce_splices_total\{outcome="spliced"\}/ {print $2} END {}' | tail -1; }
count_on_broker() { # topic -> records (one line per record: its partition and offset)
  kcat -C -b "$SOURCE" -t "$1" -o beginning -e -q -f '%p %o\n' 2>/dev/null | wc -l
}

ID="splice-$(date +%s)"
"$WORK/loadgen" create -brokers "$SOURCE" -partitions 3 -topics "$ID-franz,$ID-kcat,$ID-java" >/dev/null
fail=0
check() { # name topic want before
  local got after
  got="$(count_on_broker "$2")"
  after="$(spliced)"
  printf '{"client":"%s","records_sent":%d,"records_on_broker":%d,"spliced_requests":%d}\n' "$1" "$3" "$got" "$(awk -v a="$after" -v b="$4" 'BEGIN{print a-b}')"
  if [[ $got != "$3" ]] || awk -v a="$after" -v b="$4" 'BEGIN{exit !(a<=b)}'; then
    say "$1: FAILED (records $got of $3, spliced requests $4 -> $after)"
    fail=1
  fi
}

# franz-go: bench/loadgen produce (idempotent, acks=all, 1 MiB batches).
s0="$(spliced)"
"$WORK/loadgen" produce -brokers "$LISTEN" -topic "$ID-franz" -n "$N" -size "$SIZE" >/dev/null
check franz-go "$ID-franz" "$N" "$s0"

# kcat (librdkafka): idempotent, 1 MiB batches; each value distinct.
python3 -c "
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    p = 'kcat-%06d-' % i
    sys.stdout.write((p * (size // len(p) + 1))[:size] + '\n')
" "$N" "$SIZE" >"$WORK/kcat.in"
s0="$(spliced)"
kcat -P -b "$LISTEN" -t "$ID-kcat" -X enable.idempotence=true -X linger.ms=50 -X batch.size=1048576 \
  -X message.max.bytes=2000000 -X batch.num.messages=100000 -X queue.buffering.max.kbytes=262144 <"$WORK/kcat.in"
check kcat "$ID-kcat" "$N" "$s0"
kcat -C -b "$SOURCE" -t "$ID-kcat" -o beginning -e -q -f '%s\n' 2>/dev/null | sort >"$WORK/kcat.got"
if ! cmp -s <(sort "$WORK/kcat.in") "$WORK/kcat.got"; then
  say "kcat: the values on the broker differ from the ones sent"
  fail=1
fi

# Kafka's Java producer: ProducerPerformance (idempotent, acks=all).
CP="$(bash test/kafka/kafka.sh tools-cp)"
s0="$(spliced)"
java -cp "$CP" org.apache.kafka.tools.ProducerPerformance --topic "$ID-java" --num-records "$N" \
  --record-size "$SIZE" --throughput -1 --producer-props bootstrap.servers="$LISTEN" acks=all \
  enable.idempotence=true batch.size=1048576 linger.ms=50 max.request.size=4194304 buffer.memory=268435456 \
  >"$WORK/java.out" 2>&1 || { cat "$WORK/java.out" >&2; fail=1; }
tail -1 "$WORK/java.out" >&2
check java "$ID-java" "$N" "$s0"

grep -iE 'level=(ERROR|WARN)|\[(ERROR|WARN)\]' "$WORK/kproxy.log" | grep -v state_dir | head -5 >&2 || true
"$WORK/loadgen" delete -brokers "$SOURCE" -prefix "$ID-" >/dev/null || true
exit "$fail"
