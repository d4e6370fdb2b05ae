#!/usr/bin/env bash
# e2e.sh: run every client driver against one bootstrap address and check the
# histories with kcheck.
#
#   bash test/clients/e2e.sh [--bootstrap 127.0.0.1:19092] [--clients "sarama kafkago franz rdkafka kafkajs java"]
#                            [--count 500] [--more 100] [--partitions 3] [--out DIR] [--tag TAG]
#                            [--idempotent] [--timeout SEC]
#
# Per client, on a fresh topic with --partitions partitions and a fresh group:
#   1. produce --count records (run 0), consume them in the group  -> kcheck: all acked records, nothing else
#   2. produce --more records (run 1), consume again in the same group
#      (must resume at the committed offsets)                       -> kcheck -require-acked: only the new ones
#   3. both runs together                                            -> kcheck: no loss, no duplicate
#   4. kcat reads the whole topic (plain reader, no group)           -> kcheck: every acked record
# Histories and logs stay in --out (default a new temp dir). Builds the
# drivers first (build.sh). Exits 1 if any step failed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bootstrap=127.0.0.1:19092
clients="sarama kafkago franz rdkafka kafkajs java"
count=500 more=100 partitions=3 out="" tag="" idem=false timeout=60
while [ $# -gt 0 ]; do
	case "$1" in
	--bootstrap) bootstrap=$2; shift 2 ;;
	--clients) clients=$2; shift 2 ;;
	--count) count=$2; shift 2 ;;
	--more) more=$2; shift 2 ;;
	--partitions) partitions=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--tag) tag=$2; shift 2 ;;
	--idempotent) idem=true; shift ;;
	--timeout) timeout=$2; shift 2 ;;
	*) echo "e2e.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -n "$tag" ] || tag="$(date +%H%M%S)-$$"
[ -n "$out" ] || out="$(mktemp -d /tmp/kproxy-e2e.XXXXXX)"
mkdir -p "$out"

needs=(go)
for c in $clients; do
	case "$c" in
	rdkafka) needs+=(rdkafka) ;;
	kafkajs) needs+=(js) ;;
	esac
done
needs+=(rdkafka) # kcat
bash "$here/build.sh" $(printf '%s\n' "${needs[@]}" | sort -u) || exit 1
bin="$here/bin"

say() { echo "e2e.sh: $*" >&2; }

produce() { # client topic n run start
	local c=$1 t=$2 n=$3 r=$4 s=$5
	case "$c" in
	sarama | kafkago | franz)
		local i=()
		[ "$idem" = true ] && [ "$c" != kafkago ] && i=(-idempotent)
		"$bin/gomatrix" produce -client "$c" -bootstrap "$bootstrap" -topic "$t" -count "$n" -run "$r" -start "$s" -timeout "$timeout" "${i[@]}" ;;
	rdkafka) "$bin/rdk" produce --bootstrap "$bootstrap" --topic "$t" --count "$n" --run "$r" --start "$s" --timeout "$timeout" --idempotent="$idem" ;;
	kafkajs) node "$here/js/driver.js" produce --bootstrap "$bootstrap" --topic "$t" --count "$n" --run "$r" --start "$s" --timeout "$timeout" --idempotent="$idem" ;;
	java)
		local cfg="$out/java-producer.properties"
		# VerifiableProducer sets retries=0, which idempotence refuses.
		{ echo "enable.idempotence=$idem"; [ "$idem" = true ] && echo "retries=2147483647"; } > "$cfg"
		bash "$here/java/verifiable.sh" --timeout "$timeout" producer --bootstrap-server "$bootstrap" --topic "$t" \
			--max-messages "$n" --acks -1 --value-prefix "$r" --command-config "$cfg" ;;
	esac
}

consume() { # client topic group n linger name
	local c=$1 t=$2 g=$3 n=$4 l=$5 name=$6
	case "$c" in
	sarama | kafkago | franz)
		"$bin/gomatrix" consume -client "$c" -bootstrap "$bootstrap" -topic "$t" -group "$g" -count "$n" -linger "$l" -timeout "$timeout" -consumer "$name" ;;
	rdkafka) "$bin/rdk" consume --bootstrap "$bootstrap" --topic "$t" --group "$g" --count "$n" --linger "$l" --timeout "$timeout" --consumer "$name" ;;
	kafkajs) node "$here/js/driver.js" consume --bootstrap "$bootstrap" --topic "$t" --group "$g" --count "$n" --linger "$l" --timeout "$timeout" --consumer "$name" ;;
	java)
		# VerifiableConsumer stops at --max-messages; lingering means running
		# without a limit until the timeout.
		local lim=(--max-messages "$n") to=$timeout
		if [ "$l" != 0 ]; then lim=(); to=$l; [ "$n" -gt 0 ] && to=$((l + 20)); fi
		bash "$here/java/verifiable.sh" --timeout "$to" consumer --bootstrap-server "$bootstrap" --topic "$t" \
			--group-id "$g" "${lim[@]}" --verbose --reset-policy earliest ;;
	esac
}

declare -A result
fail=0
step() { # name command...
	local name=$1
	shift
	if "$@"; then
		return 0
	fi
	say "FAILED: $name (see $out)"
	fail=1
	return 1
}

for c in $clients; do
	t="kp-e2e-$c-$tag" g="kp-e2e-$c-$tag" pre="$out/$c"
	say "== $c: topic $t"
	verdict="FAIL"
	if step "$c create" "$bin/gomatrix" create -bootstrap "$bootstrap" -topic "$t" -partitions "$partitions" >"$pre-create.log" 2>&1 &&
		step "$c produce 1" produce "$c" "$t" "$count" 0 0 >"$pre-p1.jsonl" 2>"$pre-p1.log" &&
		step "$c consume 1" consume "$c" "$t" "$g" "$count" 0 c1 >"$pre-c1.jsonl" 2>"$pre-c1.log" &&
		step "$c check 1" "$bin/kcheck" -acks "$pre-p1.jsonl" -consumed "$pre-c1.jsonl" >"$pre-check1.txt" &&
		step "$c produce 2" produce "$c" "$t" "$more" 1 "$count" >"$pre-p2.jsonl" 2>"$pre-p2.log" &&
		step "$c consume 2" consume "$c" "$t" "$g" "$more" 3 c2 >"$pre-c2.jsonl" 2>"$pre-c2.log" &&
		step "$c check 2 (only new records)" "$bin/kcheck" -require-acked -acks "$pre-p2.jsonl" -consumed "$pre-c2.jsonl" >"$pre-check2.txt" &&
		step "$c check all" "$bin/kcheck" -acks "$pre-p1.jsonl" "$pre-p2.jsonl" -consumed "$pre-c1.jsonl" "$pre-c2.jsonl" >"$pre-check.txt" &&
		step "$c kcat read" bash "$here/rdkafka/kcat.sh" --bootstrap "$bootstrap" --topic "$t" >"$pre-kcat.jsonl" 2>"$pre-kcat.log" &&
		step "$c kcat check" "$bin/kcheck" -acks "$pre-p1.jsonl" "$pre-p2.jsonl" -consumed "$pre-kcat.jsonl" >"$pre-kcat-check.txt"; then
		verdict="OK"
	fi
	for f in "$pre"-check*.txt "$pre"-kcat-check.txt; do
		[ -f "$f" ] && sed "s|^|  $(basename "$f" .txt): |" "$f" >&2
	done
	result[$c]="$verdict $(head -n1 "$pre-check.txt" 2>/dev/null)"
done

echo "e2e against $bootstrap (histories in $out)"
for c in $clients; do
	printf '  %-8s %s\n' "$c" "${result[$c]}"
done
exit "$fail"
