#!/usr/bin/env bash
# verifiable.sh: run Kafka's own Java test clients, whose JSON output
# test/checker (kcheck) reads directly.
#
#   verifiable.sh [--timeout SEC] producer ARGS...   org.apache.kafka.tools.VerifiableProducer
#   verifiable.sh [--timeout SEC] consumer ARGS...   org.apache.kafka.tools.VerifiableConsumer
#
# ARGS are the tool's own options, for example:
#
#   verifiable.sh producer --bootstrap-server 127.0.0.1:19092 --topic t \
#       --max-messages 500 --acks -1 --value-prefix 1 > java-p.jsonl
#   verifiable.sh --timeout 60 consumer --bootstrap-server 127.0.0.1:19092 --topic t \
#       --group-id g --max-messages 500 --verbose --reset-policy earliest > java-c.jsonl
#   kcheck -acks java-p.jsonl -consumed java-c.jsonl
#
# Notes: VerifiableProducer values are "<value-prefix>.<i>" (use a distinct
# --value-prefix per run so values stay unique) and keys are null unless
# --repeating-keys. VerifiableConsumer needs --verbose to print record_data
# events, and runs until --max-messages (or forever): --timeout stops it with
# SIGTERM (it then closes the consumer, committing per its commit mode) and
# counts as success. Idempotence and other client settings go in a properties
# file passed with --command-config (4.x) / --producer.config / --consumer.config.
#
# The classpath is $KPROXY_TOOLS_CP, else `test/kafka/kafka.sh tools-cp`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
timeout_s=""
if [ "${1:-}" = "--timeout" ] || [ "${1:-}" = "-timeout" ]; then
	timeout_s=$2
	shift 2
fi
case "${1:-}" in
producer) class=org.apache.kafka.tools.VerifiableProducer ;;
consumer) class=org.apache.kafka.tools.VerifiableConsumer ;;
*)
	echo "usage: verifiable.sh [--timeout SEC] producer|consumer ARGS..." >&2
	exit 2
	;;
esac
shift

cp="${KPROXY_TOOLS_CP:-}"
if [ -z "$cp" ]; then
	cp="$(bash "$here/../../kafka/kafka.sh" tools-cp)" ||
		{ echo "verifiable.sh: set KPROXY_TOOLS_CP or run: bash test/kafka/kafka.sh fetch" >&2; exit 2; }
fi

cmd=(java ${KPROXY_JAVA_OPTS:--Xmx256m} -cp "$cp" "$class" "$@")
if [ -z "$timeout_s" ]; then
	exec "${cmd[@]}"
fi
set +e
timeout --signal=TERM --kill-after=30 "$timeout_s" "${cmd[@]}"
rc=$?
set -e
if [ "$rc" -eq 124 ]; then
	echo "verifiable.sh: stopped after ${timeout_s}s" >&2
	rc=0
fi
exit "$rc"
