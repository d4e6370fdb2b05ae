#!/usr/bin/env python3
"""Assemble bench/tls/run.sh's raw loadgen output into its own section of bench/RESULTS.md
and its own entries of bench/results.json (tls_produce_throughput, tls_fetch_throughput,
tls_kproxy_cpu). Entries with the same (benchmark, metric) are replaced, all others kept;
in RESULTS.md only the text between this script's markers is replaced (appended the
first time)."""
import argparse
import json
import os
import statistics
from collections import defaultdict

BEGIN = "<!-- bench/tls:begin -->"
END = "<!-- bench/tls:end -->"


def main():
    ap = argparse.ArgumentParser()
    for k in ("raw", "results", "md", "kafka", "rev", "load-before", "load-after"):
        ap.add_argument("--" + k, required=k in ("raw", "results", "md"), default="unknown")
    for k in ("rounds", "n", "size", "partitions", "elapsed"):
        ap.add_argument("--" + k, type=int, required=True)
    a = ap.parse_args()

    vals = defaultdict(list)  # (phase, path, metric) -> values in round order
    for line in open(a.raw):
        if not line.strip():
            continue
        r = json.loads(line)
        ph, p, res = r["phase"], r["path"], r["result"]
        for k in ("mb_per_s", "records_per_s"):
            vals[(ph, p, k)].append(res[k])
        gb = res["bytes"] / 1e9
        if gb > 0:
            if p == "proxy":
                vals[(ph, p, "cpu_s_per_gb")].append(r["kproxy_cpu_s"] / gb)
            else:
                vals[(ph, p, "broker_cpu_s_per_gb")].append(r["broker_cpu_s"] / gb)

    def med(ph, p, k):
        v = vals.get((ph, p, k))
        return statistics.median(v) if v else None

    def entry(bench, metric, unit, ph, k, base_k=None):
        x, y = med(ph, "proxy", k), med(ph, "direct", base_k or k)
        return {"benchmark": bench, "metric": metric, "unit": unit,
                "kproxy": round(x, 4) if x is not None else None,
                "baseline": round(y, 4) if y is not None else None,
                "ratio": round(x / y, 4) if x is not None and y else None}

    new = [
        entry("tls_produce_throughput", "mb_per_s", "MB/s", "produce", "mb_per_s"),
        entry("tls_produce_throughput", "records_per_s", "records/s", "produce", "records_per_s"),
        entry("tls_fetch_throughput", "mb_per_s", "MB/s", "consume", "mb_per_s"),
        entry("tls_fetch_throughput", "records_per_s", "records/s", "consume", "records_per_s"),
        # baseline = the source broker's own CPU-s/GB for the same phase on the direct TLS path
        entry("tls_kproxy_cpu", "cpu_s_per_gb_produce", "CPU-s/GB", "produce", "cpu_s_per_gb", "broker_cpu_s_per_gb"),
        entry("tls_kproxy_cpu", "cpu_s_per_gb_fetch", "CPU-s/GB", "consume", "cpu_s_per_gb", "broker_cpu_s_per_gb"),
    ]
    old = []
    if os.path.exists(a.results):
        try:
            old = json.load(open(a.results))
        except (ValueError, OSError):
            old = []
    keys = {(e["benchmark"], e["metric"]) for e in new}
    merged = [e for e in old if (e.get("benchmark"), e.get("metric")) not in keys] + new
    with open(a.results, "w") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")

    def fmt(v, d=1):
        return "n/a" if v is None else f"{v:,.{d}f}"

    def spread(ph, p, k, d=1):
        v = vals.get((ph, p, k)) or []
        if not v:
            return "n/a"
        return f"{fmt(min(v), d)}–{fmt(max(v), d)} (rounds: {', '.join(fmt(x, d) for x in v)})"

    lines = [
        BEGIN,
        "## TLS on both sides: kproxy vs a TLS client direct to a TLS broker (issue 11 item 7)",
        "",
        "- Paths, same run: **direct** = loadgen (franz-go) over TLS 1.2+/1.3 with SASL SCRAM-SHA-512 to the "
        "source broker's SASL_SSL listener; **proxy** = the same client over TLS with SCRAM-SHA-512 to kproxy, "
        "which reaches the same listener over TLS with SCRAM-SHA-512 (its upstream TLS/SASL is `secure.UpstreamFor`, "
        "the same code loadgen's direct client is built with). The certificates are the harness's throwaway "
        "ECDSA P-256 ones (test/kafka/kafkasecrets).",
        f"- Kafka {a.kafka}, single broker, KRaft, harness started with `KAFKA_SECURE=1`. Records: {a.size} B "
        f"random values, no compression, acks=all, idempotent producer, {a.partitions} partitions; produce = "
        f"{a.n:,} records as fast as possible; fetch = the produced topic read from start to end without a group.",
        f"- {a.rounds} rounds, the direct/proxy order rotating per round; figures are medians, spreads are "
        "min–max over rounds. kproxy CPU = utime+stime of its process around each proxied phase per GB of "
        "payload; its baseline column is the broker's own CPU-s/GB on the direct path.",
        f"- **The machine was shared**: other agents' builds, tests and Kafka clusters ran on the same 2 cores "
        f"(load average {a.load_before} at the start, {a.load_after} at the end). Absolute numbers are "
        "low and noisy; the same-run ratio is the figure to read, and even it varies with the neighbours.",
        f"- kproxy built from {a.rev}. This run took {a.elapsed} s.",
        "",
        "| benchmark | metric | kproxy | direct | ratio (kproxy/direct) |",
        "|---|---|---:|---:|---:|",
    ]
    for e in new:
        lines.append(f"| {e['benchmark']} | {e['metric']} ({e['unit']}) | {fmt(e['kproxy'], 2)} | "
                     f"{fmt(e['baseline'], 2)} | {fmt(e['ratio'], 3)} |")
    lines += [
        "",
        "Spreads:",
        "",
        f"- produce MB/s direct {spread('produce', 'direct', 'mb_per_s')}; proxy {spread('produce', 'proxy', 'mb_per_s')}",
        f"- fetch MB/s direct {spread('consume', 'direct', 'mb_per_s')}; proxy {spread('consume', 'proxy', 'mb_per_s')}",
        f"- kproxy CPU-s/GB produce {spread('produce', 'proxy', 'cpu_s_per_gb', 2)}; fetch {spread('consume', 'proxy', 'cpu_s_per_gb', 2)}",
        "",
        "Reproduce: `KAFKA_SECURE=1 bash test/kafka/kafka.sh up && make bench-tls` "
        f"(knobs: ROUNDS={a.rounds} N={a.n} SIZE={a.size} PARTITIONS={a.partitions}); raw rounds in "
        "`bench/tls/raw-last.jsonl`.",
        END,
    ]
    section = "\n".join(lines)
    cur = open(a.md).read() if os.path.exists(a.md) else ""
    if BEGIN in cur and END in cur:
        pre, rest = cur.split(BEGIN, 1)
        out = pre + section + rest.split(END, 1)[1]
    else:
        out = cur.rstrip("\n") + "\n\n" + section + "\n"
    with open(a.md, "w") as f:
        f.write(out)


if __name__ == "__main__":
    main()
