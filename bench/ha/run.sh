#!/usr/bin/env bash
# bench/ha/run.sh: kproxy's multi-instance mode on real Kafka (issue 14).
# Builds kproxy and bench/ha, runs three `kproxy run` instances on loopback
# against the lane's target (also the control cluster), and writes
# bench/ha/summary.json, kill-latency.csv and failover-latency.png.
# Run it under the bench lock at raised priority, with the brokers reniced
# alike (bench/RESULTS.md says how it was measured):
#   source /work/lane.sh K; eval "$(bash test/kafka/kafka.sh env)"
#   flock /tmp/kproxy-bench.lock nice -n -15 bash bench/ha/run.sh
# Knobs (env): KILLS=10 PHASE=10s RATE=2400; FLIPS=N runs only the flip-hold
# phase (N flips of a replicated topic, to the target and back) into flips.json
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${KPROXY_TARGET_BOOTSTRAP:?eval \"\$(bash test/kafka/kafka.sh env)\" first}"
WORK="$(mktemp -d /tmp/kproxy-ha.XXXXXX)"
go build -o "$WORK/kproxy" ./cmd/kproxy
go build -o "$WORK/ha" ./bench/ha
uptime | sed 's/^/load before: /'
"$WORK/ha" -kproxy "$WORK/kproxy" -source "${KPROXY_SOURCE_BOOTSTRAP:-}" -target "$KPROXY_TARGET_BOOTSTRAP" \
  -work "$WORK" -out bench/ha -kills "${KILLS:-10}" -phase "${PHASE:-10s}" -rate "${RATE:-2400}" ${FLIPS:+-flips "$FLIPS"}
uptime | sed 's/^/load after: /'
[ -n "${FLIPS:-}" ] || python3 bench/ha/plot.py bench/ha
echo "work dir (kproxy logs): $WORK"
