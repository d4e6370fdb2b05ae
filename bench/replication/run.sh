#!/usr/bin/env bash
# Replicator benchmark: kproxy's replicator vs MirrorMaker 2 (dedicated mode,
# connect-mirror from test/kafka/kafka.sh mm2-cp) copying the same data
# (N records of SIZE bytes, 6 partitions) from the source cluster to the
# target cluster, uncompressed and lz4, ROUNDS interleaved rounds each.
#
# Each round produces two identical source topics (one per copier; MM2's
# identity policy needs the target name to equal the source name, and the
# target must not have the topic yet), then runs each copier as its own
# process under `replbench watch`, which opens the copy window when the first
# record lands on the target (JVM/process startup, bootstrap and target topic
# creation excluded for both) and closes it when the target's end offsets
# reach the source's; CPU is the copier's utime+stime over that window.
#
# Writes bench/replication/raw-last.jsonl, merges entries into
# bench/results.json and appends/replaces the replication section at the end of
# bench/RESULTS.md (bench/replication/assemble.py).
#
# Knobs: ROUNDS=3 N=300000 SIZE=1024 PARTITIONS=6 COMPRESSIONS="none lz4"
#        MM2_TASKS=2 MM2_HEAP="-Xms256m -Xmx1g" NO_WRITE=1 (only print)
#        PROFILE_DIR=DIR (a CPU profile of each kproxy copy window,
#        DIR/kproxy-COMPRESSION-rROUND.pprof)
set -euo pipefail
cd "$(dirname "$0")/../.."

SRC=${SRC:-127.0.0.1:19092}
TGT=${TGT:-127.0.0.1:29092}
ROUNDS=${ROUNDS:-3}
N=${N:-300000}
SIZE=${SIZE:-1024}
PARTITIONS=${PARTITIONS:-6}
COMPRESSIONS=${COMPRESSIONS:-none lz4}
MM2_TASKS=${MM2_TASKS:-2}
MM2_HEAP=${MM2_HEAP:--Xms256m -Xmx1g}

START=$(date +%s)
WORK=$(mktemp -d /tmp/replbench.XXXXXX)
RAW=bench/replication/raw-last.jsonl
: >"$RAW.tmp"
BIN=$WORK/replbench

cleanup() { rm -rf "$WORK"; } # the copiers are children of `replbench watch`, which stops them
trap cleanup EXIT

bash test/kafka/kafka.sh status >/dev/null 2>&1 || { echo "Kafka is not running: bash test/kafka/kafka.sh up" >&2; exit 1; }
bash test/kafka/kafka.sh fetch-mm2 >/dev/null
MM2_CP=$(bash test/kafka/kafka.sh mm2-cp)
go build -o "$BIN" ./bench/replication

mm2_props() { # file topic srcAlias tgtAlias compression
  local f=$1 t=$2 s=$3 d=$4 c=$5
  cat >"$f" <<EOF
clusters = $s, $d
$s.bootstrap.servers = $SRC
$d.bootstrap.servers = $TGT
$s->$d.enabled = true
$s->$d.topics = $t
$d->$s.enabled = false
replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy
replication.factor = 1
offset-syncs.topic.replication.factor = 1
checkpoints.topic.replication.factor = 1
heartbeats.topic.replication.factor = 1
config.storage.replication.factor = 1
offset.storage.replication.factor = 1
status.storage.replication.factor = 1
emit.heartbeats.enabled = false
emit.checkpoints.interval.seconds = 600
sync.group.offsets.enabled = false
sync.topic.configs.enabled = false
sync.topic.acls.enabled = false
refresh.topics.interval.seconds = 1
refresh.groups.interval.seconds = 600
tasks.max = $MM2_TASKS
# the usual high-volume tuning (bigger producer batches, 50 MB fetches)
$d.producer.batch.size = 327680
$d.producer.linger.ms = 10
$d.producer.compression.type = $c
$s.consumer.fetch.max.bytes = 52428800
$s.consumer.max.partition.fetch.bytes = 1048576
EOF
}

run_kproxy() { # topic compression round
  local t=$1 c=$2 r=$3 w
  if ! w=$("$BIN" watch -src "$SRC" -tgt "$TGT" -topic "$t" -kill -out "$WORK/kp-$t.json" -log "$WORK/kp-$t.log" -timeout 600s -- \
      "$BIN" kproxy -src "$SRC" -tgt "$TGT" -topic "$t" -state "$WORK/state-$t" -timeout 600s \
        ${PROFILE_DIR:+-cpuprofile "$PROFILE_DIR/kproxy-$c-r$r.pprof"}); then
    tail -30 "$WORK/kp-$t.log" >&2
    exit 1
  fi
  printf '{"copier":"kproxy","compression":"%s","round":%d,"watch":%s,"self":%s}\n' "$c" "$r" "$w" "$(head -1 "$WORK/kp-$t.json" | grep . || echo null)" >>"$RAW.tmp"
  echo "  kproxy: $w" >&2
}

run_mm2() { # topic compression round id
  local t=$1 c=$2 r=$3 id=$4 w
  local props=$WORK/mm2-$t.properties
  mm2_props "$props" "$t" "s$id" "t$id" "$c"
  # shellcheck disable=SC2086
  if ! w=$("$BIN" watch -src "$SRC" -tgt "$TGT" -topic "$t" -kill -log "$WORK/mm2-$t.log" -timeout 600s -- \
      java $MM2_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      -cp "$MM2_CP" org.apache.kafka.connect.mirror.MirrorMaker "$props"); then
    tail -30 "$WORK/mm2-$t.log" >&2
    exit 1
  fi
  printf '{"copier":"mm2","compression":"%s","round":%d,"watch":%s}\n' "$c" "$r" "$w" >>"$RAW.tmp"
  echo "  mm2:    $w" >&2
}

for r in $(seq 1 "$ROUNDS"); do
  for c in $COMPRESSIONS; do
    id="rb$(date +%s%N | tail -c 9)"
    tk="replbench-$id-kproxy"
    tm="replbench-$id-mm2"
    echo "round $r, compression $c ($id)" >&2
    p=$("$BIN" produce -brokers "$SRC" -topics "$tk,$tm" -partitions "$PARTITIONS" -n "$N" -size "$SIZE" -compression "$c")
    printf '{"copier":"produce","compression":"%s","round":%d,"result":%s}\n' "$c" "$r" "$p" >>"$RAW.tmp"
    # alternate which copier goes first
    if (( r % 2 == 1 )); then
      run_kproxy "$tk" "$c" "$r"; run_mm2 "$tm" "$c" "$r" "$id"
    else
      run_mm2 "$tm" "$c" "$r" "$id"; run_kproxy "$tk" "$c" "$r"
    fi
    # drop this round's topics (data and MM2's internal topics) from both clusters
    "$BIN" delete -brokers "$SRC" -contains "$id" >/dev/null || true
    "$BIN" delete -brokers "$TGT" -contains "$id" >/dev/null || true
  done
done
mv "$RAW.tmp" "$RAW"

ELAPSED=$(( $(date +%s) - START ))
ARGS=(--raw "$RAW" --rounds "$ROUNDS" --n "$N" --size "$SIZE" --partitions "$PARTITIONS"
  --mm2-tasks "$MM2_TASKS" --elapsed "$ELAPSED" --rev "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
if [[ "${NO_WRITE:-0}" == 1 ]]; then
  python3 bench/replication/assemble.py "${ARGS[@]}" --print
else
  python3 bench/replication/assemble.py "${ARGS[@]}" --results bench/results.json --md bench/RESULTS.md
fi
