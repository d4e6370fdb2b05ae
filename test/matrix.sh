#!/usr/bin/env bash
# matrix.sh: the broker-version matrix. For each source:target pair, start real Kafka at those
# versions (test/kafka/kafka.sh: ZooKeeper mode for 2.8.x, KRaft for 3.3+), run the
# integration tests that prove the pair, stop the clusters, and write one summary line per
# pair and test.
#
#   bash test/matrix.sh                      every pair in MATRIX_PAIRS, every test in MATRIX_RUN
#   bash test/matrix.sh 2.8.2:4.4.0          one pair
#   MATRIX_RUN='TestCutoverAndRollbackUnderLoad' bash test/matrix.sh 2.8.2:4.4.0
#
# Per pair (MATRIX_RUN): the client matrix (every client row of the README table), the
# no-leak capture (it reads the matrix's frames, so it runs in the same process), the
# replicator's exact copy (plain, compressed, transactional on the source), one cutover and
# rollback under load with the checker, the version floors seen live, and the end state
# (source removed, Fetch with topic ids).
#
# Environment: MATRIX_PAIRS, MATRIX_RUN, MATRIX_OUT (summary directory, default
# $KPROXY_CACHE/matrix), KPROXY_KAFKA_LOCK (a file to flock around each pair's
# up..down, for machines where several checkouts share the harness ports), MATRIX_AFTER_UP
# (a command run once the pair's clusters are up, with the harness env exported; e.g. to
# record a new Kafka version's ApiVersions into docs/compatibility.md:
#   MATRIX_AFTER_UP='KPROXY_COMPAT_BROKER=$KPROXY_SOURCE_VERSION=$KPROXY_KAFKA_RUN/source/apiversions.txt,$KPROXY_TARGET_VERSION=$KPROXY_KAFKA_RUN/target/apiversions.txt KPROXY_UPDATE_COMPAT=1 go test -count=1 -run TestCompatibilityDocTable ./proxy/').
# The clusters of pair S:T live in $KPROXY_CACHE/kafka-run-S-T (kept after the run).
# Exit status: 0 when every pair passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export KPROXY_CACHE="${KPROXY_CACHE:-$REPO/.cache}"

MATRIX_PAIRS="${MATRIX_PAIRS:-2.8.2:4.4.0 3.5.2:4.4.0 3.9.2:4.4.0 4.4.0:3.9.2}"
MATRIX_RUN="${MATRIX_RUN:-^(TestClientMatrix|TestReplicatorPlainTopic|TestReplicatorCompressedBatchesArriveByteForByte|TestReplicatorTransactions|TestCutoverAndRollbackUnderLoad|TestVersionFloorsLive|TestEndStateFetchUsesTopicIDs|TestZZNoUpstreamIdentityReachesClients)$}"
MATRIX_OUT="${MATRIX_OUT:-$KPROXY_CACHE/matrix}"
MATRIX_TIMEOUT="${MATRIX_TIMEOUT:-25m}"

say() { echo "== matrix: $*" >&2; }

pairs=("$@")
((${#pairs[@]} == 0)) && read -r -a pairs <<<"$MATRIX_PAIRS"
mkdir -p "$MATRIX_OUT"
summary="$MATRIX_OUT/summary.tsv"
: >"$summary"

# run_pair SOURCE TARGET: up, tests, down; prints the go test log path.
run_pair() {
  local sv="$1" tv="$2" log="$MATRIX_OUT/$1-to-$2.log"
  export KAFKA_SOURCE_VERSION="$sv" KAFKA_TARGET_VERSION="$tv"
  export KAFKA_RUN_DIR="$KPROXY_CACHE/kafka-run-$sv-$tv"
  : >"$log"
  if ! bash test/kafka/kafka.sh up >>"$log" 2>&1; then
    bash test/kafka/kafka.sh logs 60 >>"$log" 2>&1
    bash test/kafka/kafka.sh down >>"$log" 2>&1
    echo "kafka.sh up failed" >>"$log"
    return 1
  fi
  local rc=0
  (
    eval "$(bash test/kafka/kafka.sh env)"
    if [[ -n "${MATRIX_AFTER_UP:-}" ]]; then bash -c "$MATRIX_AFTER_UP" || exit 1; fi
    go test -count=1 -timeout "$MATRIX_TIMEOUT" -run "$MATRIX_RUN" -v ./test/integration/
  ) >>"$log" 2>&1 || rc=$?
  ((rc != 0)) && bash test/kafka/kafka.sh logs 60 >>"$log" 2>&1
  bash test/kafka/kafka.sh down >>"$log" 2>&1
  return $rc
}

failed=0
for pair in "${pairs[@]}"; do
  sv="${pair%%:*}" tv="${pair##*:}"
  say "$sv -> $tv (log: $MATRIX_OUT/$sv-to-$tv.log)"
  t0=$SECONDS rc=0
  if [[ -n "${KPROXY_KAFKA_LOCK:-}" ]]; then
    exec 7>>"$KPROXY_KAFKA_LOCK"
    flock 7
    run_pair "$sv" "$tv" || rc=$?
    exec 7>&-
  else
    run_pair "$sv" "$tv" || rc=$?
  fi
  log="$MATRIX_OUT/$sv-to-$tv.log"
  # One line per top-level test: pair, test, PASS/FAIL.
  grep -E '^--- (PASS|FAIL): Test' "$log" | awk -v p="$sv -> $tv" '{print p "\t" $3 "\t" substr($2, 1, 4)}' >>"$summary"
  if ((rc != 0)); then
    failed=1
    grep -q '^--- ' "$log" || printf '%s\t(no test ran)\tFAIL\n' "$sv -> $tv" >>"$summary"
    say "$sv -> $tv FAILED in $((SECONDS - t0)) s"
  else
    say "$sv -> $tv passed in $((SECONDS - t0)) s"
  fi
done
say "summary ($summary):"
column -t -s $'\t' "$summary" >&2 || cat "$summary" >&2
exit $failed
