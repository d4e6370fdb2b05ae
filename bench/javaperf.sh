#!/usr/bin/env bash
# bench/javaperf.sh produce|consume BOOTSTRAP TOPIC N SIZE: runs Kafka's own
# ProducerPerformance / ConsumerPerformance (the test most users run first)
# and prints one JSON line like bench/loadgen's. TOOLS_CP is the tools
# classpath (bash test/kafka/kafka.sh tools-cp).
set -euo pipefail
what=$1 bs=$2 topic=$3 n=$4 size=$5
: "${TOOLS_CP:?set TOOLS_CP (bash test/kafka/kafka.sh tools-cp)}"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m}"
case $what in
produce)
  # Last line: "N records sent, R records/sec (M MB/sec), A ms avg latency,
  # X ms max latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
  line="$(java -Xmx512m -cp "$TOOLS_CP" org.apache.kafka.tools.ProducerPerformance \
    --topic "$topic" --num-records "$n" --record-size "$size" --throughput -1 \
    --producer-props bootstrap.servers="$bs" acks=all linger.ms=5 2>/dev/null | tail -1)"
  python3 - "$line" "$size" <<'PY'
import json, re, sys
line, size = sys.argv[1], int(sys.argv[2])
m = re.match(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", line)
if not m:
    sys.exit("ProducerPerformance printed no summary: " + line)
n, rps, mbs, avg, mx, p50, p95, p99, p999 = m.groups()
print(json.dumps({"records": int(n), "bytes": int(n) * size, "records_per_s": float(rps),
                  "mb_per_s": float(rps) * size / 1e6, "avg_ms": float(avg), "p50_ms": float(p50),
                  "p99_ms": float(p99), "p999_ms": float(p999)}))
PY
  ;;
consume)
  # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
  line="$(java -Xmx512m -cp "$TOOLS_CP" org.apache.kafka.tools.ConsumerPerformance \
    --bootstrap-server "$bs" --topic "$topic" --messages "$n" --timeout 60000 2>/dev/null | tail -1)"
  python3 - "$line" "$size" <<'PY'
import json, sys
line, size = sys.argv[1], int(sys.argv[2])
f = [x.strip() for x in line.split(",")]
try:
    n, rps = int(f[4]), float(f[5])
except (IndexError, ValueError):
    sys.exit("ConsumerPerformance printed no summary: " + line)
print(json.dumps({"records": n, "bytes": n * size, "records_per_s": rps, "mb_per_s": rps * size / 1e6}))
PY
  ;;
*) echo "usage: $0 produce|consume BOOTSTRAP TOPIC N SIZE" >&2; exit 2 ;;
esac
