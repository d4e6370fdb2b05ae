#!/usr/bin/env bash
# kcat.sh: read a topic from the beginning to its current end with kcat (a
# plain, group-less reader built on librdkafka) and print the kproxy checker's
# "consume" JSON lines on stdout.
#
#   kcat.sh --bootstrap 127.0.0.1:9092 --topic t [--consumer kcat] [-- extra kcat args]
#
# Keys and values must not contain tabs or newlines (the drivers' k-<i> and
# <client>-<run>-<i> do not). Exits with kcat's status.
set -euo pipefail

bootstrap=127.0.0.1:9092 topic= consumer=kcat extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	-bootstrap | --bootstrap) bootstrap=$2; shift 2 ;;
	--bootstrap=* | -bootstrap=*) bootstrap=${1#*=}; shift ;;
	-topic | --topic) topic=$2; shift 2 ;;
	--topic=* | -topic=*) topic=${1#*=}; shift ;;
	-consumer | --consumer) consumer=$2; shift 2 ;;
	--consumer=* | -consumer=*) consumer=${1#*=}; shift ;;
	--) shift; extra=("$@"); break ;;
	*) echo "usage: kcat.sh --bootstrap H:P --topic T [--consumer NAME] [-- kcat args]" >&2; exit 2 ;;
	esac
done
[ -n "$topic" ] || { echo "kcat.sh: --topic is required" >&2; exit 2; }
command -v kcat >/dev/null || { echo "kcat.sh: kcat not installed (apt-get install kcat)" >&2; exit 2; }

# -C consume, -o beginning, -e exit at the end of every partition,
# -q no informational output, -u unbuffered. Tab-separated fields, then JSON.
set +e
kcat -C -q -u -b "$bootstrap" -t "$topic" -o beginning -e \
	-f '%t\t%p\t%o\t%k\t%s\n' "${extra[@]}" |
	awk -F '\t' -v consumer="$consumer" '
	function js(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
	NF >= 5 {
		printf "{\"ev\":\"consume\",\"client\":\"kcat\",\"consumer\":%s,\"topic\":%s,\"partition\":%d,\"offset\":%d,\"key\":%s,\"value\":%s}\n",
			js(consumer), js($1), $2, $3, js($4), js($5)
	}'
status=${PIPESTATUS[0]}
exit "$status"
