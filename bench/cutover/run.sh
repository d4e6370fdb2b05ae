#!/usr/bin/env bash
# bench/cutover/run.sh — latency during topic flips at steady load (issue 5 item 10).
# Builds kproxy and bench/cutover, runs the cutover benchmark at each RATE
# (fresh topics bench-flip-<unix>-NN and a fresh kproxy per rate), plots
# bench/cutover/latency-<rate>.png and updates bench/results.json and this
# benchmark's section of bench/RESULTS.md (bench/cutover/report.py).
# Knobs (env): RATES="5000 20000" SOURCE=127.0.0.1:19092 TARGET=127.0.0.1:29092
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES="${RATES:-5000 20000}"
SOURCE="${SOURCE:-127.0.0.1:19092}"
TARGET="${TARGET:-127.0.0.1:29092}"
source bench/lib.sh
exec 9>/tmp/kproxy-bench.lock
flock 9   # benchmarks on 2 shared cores measure each other: serialize
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
WORK="$(mktemp -d /tmp/kproxy-cutover.XXXXXX)"
go build -o "$WORK/kproxy" ./cmd/kproxy
go build -o "$WORK/cutover" ./bench/cutover
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
for rate in $RATES; do
  "$WORK/cutover" -kproxy "$WORK/kproxy" -rate "$rate" -source "$SOURCE" -target "$TARGET" \
    -listen "127.0.0.1:$(free_port)" -admin "127.0.0.1:$(free_port)" -work "$WORK/run-$rate" \
    -out bench/cutover | tee "bench/cutover/report-$rate.txt" || echo "rate $rate: FAILED (see $WORK/run-$rate/kproxy.log)"
  python3 bench/cutover/plot.py "$rate" bench/cutover
done
python3 bench/cutover/report.py --rev "$REV" $RATES
echo "work dir (kproxy logs): $WORK"
