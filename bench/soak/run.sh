#!/usr/bin/env bash
# make soak: TestSoak for KPROXY_SOAK (default 30m) on real Kafka, then the
# plot. Results: bench/soak/soak.csv, flips.csv, faults.csv, soak.png, soak.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export KPROXY_SOAK="${KPROXY_SOAK:-30m}"
out="$PWD/bench/soak"
bash test/clients/build.sh
bash test/kafka/kafka.sh fetch
trap 'bash test/kafka/kafka.sh down || true' EXIT
bash test/kafka/kafka.sh up
eval "$(bash test/kafka/kafka.sh env)"
KPROXY_SOAK_OUT="$out" go test -count=1 -timeout 0 -run '^TestSoak$' -v ./test/integration/ 2>&1 | tee "$out/soak.log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|soak_test|group:|flipped' || true
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
python3 bench/soak/plot.py "$out"
grep -q '^--- PASS: TestSoak' "$out/soak.log"
