#!/usr/bin/env bash
# run-all.sh: everything `make test` does, in order, on a fresh machine:
# install what is missing (apt, npm, Maven jars, Go modules), lint, unit tests
# with the race detector, a short fuzz run, then real Kafka (two KRaft
# clusters, 3.9 and 4.x) and the integration and client-matrix tests through
# kproxy (plaintext and, through a SASL_SSL listener beside it, secured), then a
# 2.8.2 (ZooKeeper, plaintext-only) source with a 4.4.0 target for the cutover
# under load. Real Kafka is required: if it cannot start, this fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "== run-all: $*"; }

say "go modules"
go mod download

say "lint (gofmt, go vet)"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^test/clients/') || true)
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
go vet ./...

say "unit tests (race)"
# Every package of the module but the real-Kafka ones (they need the brokers started below).
go test -race -count=1 $(go list ./... | grep -v '/test/integration$')

say "Helm chart (render, validate against the Kubernetes API types, kproxy validate)"
make helm

say "fuzz (short)"
# Budgets are execution counts, not durations: Go 1.26's fuzz coordinator can
# fail a target with a bare "context deadline exceeded" when a duration
# -fuzztime ends while a starved worker is mid-call (golang/go#75804, fixed in
# Go 1.27); a count has no deadline to race. 20,000 executions is a few
# seconds per target here.
for target in FuzzParseRequest FuzzReadFrame FuzzUpstreamResponse; do
  go test ./proxy/ -run '^$' -fuzz "^$target\$" -fuzztime "${FUZZTIME:-20000x}"
done
# The file and SASL targets (their seed corpora run in the unit tests above too).
for pt in config:FuzzParse replicator:FuzzOffsetMapFile replicator:FuzzOffsetMapRoundTrip \
	proxy:FuzzProducerSessionsFile secure:FuzzSASLServer proxy:FuzzFetchRelay config:FuzzGlobAgreesWithPathMatch; do
  go test "./${pt%%:*}/" -run '^$' -fuzz "^${pt#*:}\$" -fuzztime "${FUZZTIME_NEW:-20000x}"
done

say "client drivers"
bash test/clients/build.sh

say "real Kafka"
bash test/kafka/kafka.sh fetch
trap 'bash test/kafka/kafka.sh down || true' EXIT
# KAFKA_SECURE=1: each cluster also gets a SASL_SSL listener (the secured client matrix, the
# secured cutover, certificate rotation and the no-secret test use it).
if ! KAFKA_SECURE=1 bash test/kafka/kafka.sh up; then
	echo "run-all: real Kafka did not start; the integration tests require it" >&2
	bash test/kafka/kafka.sh logs 80 || true
	exit 1
fi
eval "$(bash test/kafka/kafka.sh env)"

say "integration and client matrix"
go test -count=1 -timeout 25m -v ./test/integration/... 2>&1 | tee /tmp/kproxy-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' || true
if ! grep -q '^ok' /tmp/kproxy-integration.log || grep -q '^FAIL' /tmp/kproxy-integration.log; then
	echo "run-all: integration tests failed; broker logs follow" >&2
	tail -n 200 /tmp/kproxy-integration.log
	bash test/kafka/kafka.sh logs 40 || true
	exit 1
fi
bash test/kafka/kafka.sh down

# The oldest supported source (Kafka 2.8.2, ZooKeeper mode) in front of today's target:
# the cutover + rollback under load and the end state, on the same ports with their own
# run directory (the full broker-version matrix is `make test-matrix`).
say "old-source pair: 2.8.2 -> 4.4.0 (cutover under load, end state)"
if ! MATRIX_OUT=/tmp/kproxy-matrix-2.8.2 \
	MATRIX_RUN='^(TestCutoverAndRollbackUnderLoad|TestEndStateFetchUsesTopicIDs|TestVersionFloorsLive)$' \
	bash test/matrix.sh 2.8.2:4.4.0; then
	echo "run-all: the 2.8.2 -> 4.4.0 pair failed; its log follows" >&2
	tail -n 200 /tmp/kproxy-matrix-2.8.2/2.8.2-to-4.4.0.log
	exit 1
fi
say "all passed"
