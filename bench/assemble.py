#!/usr/bin/env python3
"""Assemble bench/run.sh's raw loadgen output into bench/results.json and bench/RESULTS.md.

results.json is a list of {"benchmark","metric","unit","kproxy","baseline","ratio"}.
It is merged: entries with the same (benchmark, metric) are replaced, all others
(e.g. from later benchmarks) are kept. RESULTS.md: only the section between this
script's markers is replaced, the rest of the file is kept.
"""
import argparse
import json
import os
import platform
import statistics
from collections import defaultdict

BEGIN = "<!-- bench/run.sh:begin -->"
END = "<!-- bench/run.sh:end -->"


def machine():
    cores = os.cpu_count()
    mem_gib = None
    model = platform.processor() or ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = int(line.split()[1]) / 1024 / 1024
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cores, mem_gib, model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--lat-seconds", type=int, required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--kafka", default="unknown")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--profile", default="")
    ap.add_argument("--rev", default="unknown")
    a = ap.parse_args()

    rows = [json.loads(l) for l in open(a.raw) if l.strip()]
    # vals[(phase, path, metric)] -> list over rounds
    vals = defaultdict(list)
    for r in rows:
        ph, p, res = r["phase"], r["path"], r["result"]
        for k, v in res.items():
            if isinstance(v, (int, float)):
                vals[(ph, p, k)].append(v)
        # kproxy_cpu_s is the CPU of the path's proxy: kproxy, or the peer
        if p in ("proxy", "peer"):
            vals[(ph, p, "kproxy_cpu_s_total")].append(r["kproxy_cpu_s"])
        gb = res["bytes"] / 1e9
        if gb > 0:
            if p in ("proxy", "peer"):
                vals[(ph, p, "cpu_s_per_gb")].append(r["kproxy_cpu_s"] / gb)
            vals[(ph, p, "broker_cpu_s_per_gb")].append(r["broker_cpu_s"] / gb)

    def med(ph, p, k):
        v = vals.get((ph, p, k))
        return statistics.median(v) if v else None

    def entry(bench, metric, unit, ph, k, base_k=None, base_path="direct"):
        x = med(ph, "proxy", k)
        y = med(ph, base_path, base_k or k)
        e = {
            "benchmark": bench, "metric": metric, "unit": unit,
            "kproxy": round(x, 4) if x is not None else None,
            "baseline": round(y, 4) if y is not None else None,
            "ratio": round(x / y, 4) if x is not None and y else None,
        }
        # grepplabs/kafka-proxy in the same rounds (GREPPLABS_BIN): its own
        # figure (for CPU: its process's CPU-s/GB) and its ratio to the baseline
        z = med(ph, "peer", k)
        if z is not None:
            e["peer"] = round(z, 4)
            e["peer_ratio"] = round(z / y, 4) if y else None
        return e

    new = [
        entry("produce_throughput", "mb_per_s", "MB/s", "produce", "mb_per_s"),
        entry("produce_throughput", "records_per_s", "records/s", "produce", "records_per_s"),
        entry("produce_latency", "p50_ms", "ms", "latency", "p50_ms"),
        entry("produce_latency", "p99_ms", "ms", "latency", "p99_ms"),
        entry("produce_latency", "p999_ms", "ms", "latency", "p999_ms"),
        entry("fetch_throughput", "mb_per_s", "MB/s", "consume", "mb_per_s"),
        entry("fetch_throughput", "records_per_s", "records/s", "consume", "records_per_s"),
        # baseline here = the source broker's own CPU-s/GB for the same phase on the direct path
        entry("kproxy_cpu", "cpu_s_per_gb_produce", "CPU-s/GB", "produce", "cpu_s_per_gb", "broker_cpu_s_per_gb"),
        entry("kproxy_cpu", "cpu_s_per_gb_fetch", "CPU-s/GB", "consume", "cpu_s_per_gb", "broker_cpu_s_per_gb"),
    ]
    if any(r["phase"].startswith("java_") for r in rows):
        new += [
            entry("java_producer_performance", "mb_per_s", "MB/s", "java_produce", "mb_per_s"),
            entry("java_producer_performance", "p50_ms", "ms", "java_produce", "p50_ms"),
            entry("java_producer_performance", "p99_ms", "ms", "java_produce", "p99_ms"),
            entry("java_producer_performance", "p999_ms", "ms", "java_produce", "p999_ms"),
            entry("java_consumer_performance", "mb_per_s", "MB/s", "java_consume", "mb_per_s"),
        ]
    conns = sorted({int(r["phase"][len("produce_c"):]) for r in rows if r["phase"].startswith("produce_c")})
    for c in conns:
        new.append(entry("produce_throughput_connections", f"mb_per_s_{c}_clients", "MB/s", f"produce_c{c}", "mb_per_s"))
    if any(r["phase"] == "memory" for r in rows):
        # no baseline: the direct path has no proxy process
        new.append(entry("memory_per_connection", "kib_per_idle_connection", "KiB", "memory", "kib_per_conn"))
    has_peer = any(r["path"] == "peer" for r in rows)

    old = []
    if os.path.exists(a.results):
        try:
            old = json.load(open(a.results))
        except (ValueError, OSError):
            old = []
    keys = {(e["benchmark"], e["metric"]) for e in new}
    merged = [e for e in old if (e.get("benchmark"), e.get("metric")) not in keys]
    merged += new
    with open(a.results, "w") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")

    # ---- RESULTS.md section ----
    cores, mem, model = machine()
    by = {(e["benchmark"], e["metric"]): e for e in new}

    def fmt(v, d=1):
        return "n/a" if v is None else f"{v:,.{d}f}"

    def spread(ph, p, k, d=1):
        v = vals.get((ph, p, k)) or []
        return ", ".join(fmt(x, d) for x in v)

    mb = a.n * a.size / 1e6
    lines = [
        BEGIN,
        "# kproxy benchmark: proxied vs direct",
        "",
        "## Setup",
        "",
        f"- Machine: {cores} cores ({model}), {fmt(mem, 0)} GiB RAM. **The source broker, the load generator "
        f"and kproxy all share these {cores} cores** (plus an idle target cluster), so absolute numbers are "
        "CPU-bound and noisy; the ratio is what matters, and even it is pessimistic for kproxy, whose CPU "
        "is taken from the same cores the broker and client need.",
        f"- Kafka: source {a.kafka} (single broker, KRaft, replication factor 1) at 127.0.0.1:19092; the target "
        "4.4.0 cluster runs but carries no traffic (routes: default source).",
        f"- Records: {a.size} B random (incompressible) values, no keys, compression off, acks=all, "
        f"idempotent franz-go producer, round-robin over {a.partitions} partitions.",
        f"- Produce throughput: {a.n:,} records (~{mb:,.0f} MB) as fast as possible, linger 5 ms, "
        "1 MiB max batch, 20k buffered records.",
        f"- Produce latency: {a.rate:,} records/s for {a.lat_seconds} s, linger 0, time from `Produce` "
        "to the promise callback per record.",
        "- Fetch throughput: the produce topic read from start to its end offsets, no group "
        "(`ConsumePartitions`, `AtStart`), 64 MiB fetch max; data is in the page cache.",
        "- kproxy CPU: utime+stime from /proc/<pid>/stat around each proxied phase, per GB of record "
        "payload moved; baseline column = the source broker's own CPU-s/GB for the same phase on the direct path.",
        f"- kproxy built from {a.rev} (the working tree at run time), started as its own process.",
        f"- {a.rounds} rounds; within a round each phase runs direct and proxied back to back, the order "
        "alternating per round; every figure is the **median over rounds**. One unrecorded warm-up first. "
        "Fresh topics per run (bench-<unix>-*), deleted at the end.",
        "",
        "## Results (medians)",
        "",
        "| benchmark | metric | kproxy | direct | ratio (kproxy/direct) |"
        + (" grepplabs/kafka-proxy | ratio (peer/direct) |" if has_peer else ""),
        "|---|---|---:|---:|---:|" + ("---:|---:|" if has_peer else ""),
    ]
    for e in new:
        lines.append(f"| {e['benchmark']} | {e['metric']} ({e['unit']}) | {fmt(e['kproxy'], 2)} | "
                     f"{fmt(e['baseline'], 2)} | {fmt(e['ratio'], 3)} |"
                     + (f" {fmt(e.get('peer'), 2)} | {fmt(e.get('peer_ratio'), 3)} |" if has_peer else ""))
    p99 = by[("produce_latency", "p99_ms")]
    p50 = by[("produce_latency", "p50_ms")]
    add = lambda e: None if e["kproxy"] is None or e["baseline"] is None else e["kproxy"] - e["baseline"]
    lines += [
        "",
        "For throughput a ratio below 1 means kproxy is slower; for latency and CPU a ratio above 1 means worse.",
        "",
        f"- **Added produce latency**: p50 {fmt(add(p50), 2)} ms, **p99 {fmt(add(p99), 2)} ms** at "
        f"{a.rate:,} records/s.",
        f"- **kproxy CPU**: {fmt(by[('kproxy_cpu', 'cpu_s_per_gb_produce')]['kproxy'], 2)} CPU-s/GB produced, "
        f"{fmt(by[('kproxy_cpu', 'cpu_s_per_gb_fetch')]['kproxy'], 2)} CPU-s/GB fetched "
        f"(latency phase, {a.rate:,} records/s with linger 0: {fmt(med('latency', 'proxy', 'cpu_s_per_gb'), 2)} CPU-s/GB, "
        f"i.e. {fmt(100 * (med('latency', 'proxy', 'kproxy_cpu_s_total') or 0) / a.lat_seconds, 0)}% of one core).",
        "",
        "Per-round values (in run order of rounds):",
        "",
        f"- produce MB/s direct: {spread('produce', 'direct', 'mb_per_s')}; proxy: {spread('produce', 'proxy', 'mb_per_s')}",
        f"- latency p50/p99 ms direct: {spread('latency', 'direct', 'p50_ms', 2)} / {spread('latency', 'direct', 'p99_ms', 2)}; "
        f"proxy: {spread('latency', 'proxy', 'p50_ms', 2)} / {spread('latency', 'proxy', 'p99_ms', 2)}",
        f"- fetch MB/s direct: {spread('consume', 'direct', 'mb_per_s')}; proxy: {spread('consume', 'proxy', 'mb_per_s')}",
        f"- kproxy CPU-s/GB produce: {spread('produce', 'proxy', 'cpu_s_per_gb', 2)}; fetch: {spread('consume', 'proxy', 'cpu_s_per_gb', 2)}",
    ]
    if has_peer:
        lines += [
            f"- grepplabs/kafka-proxy: produce MB/s {spread('produce', 'peer', 'mb_per_s')}; fetch MB/s "
            f"{spread('consume', 'peer', 'mb_per_s')}; latency p50/p99 ms {spread('latency', 'peer', 'p50_ms', 2)} / "
            f"{spread('latency', 'peer', 'p99_ms', 2)}; CPU-s/GB produce {spread('produce', 'peer', 'cpu_s_per_gb', 2)}, "
            f"fetch {spread('consume', 'peer', 'cpu_s_per_gb', 2)}",
        ]
    if any(r["phase"].startswith("java_") for r in rows):
        lines += [
            f"- Java ProducerPerformance MB/s direct: {spread('java_produce', 'direct', 'mb_per_s')}; proxy: "
            f"{spread('java_produce', 'proxy', 'mb_per_s')}; p99 ms direct: {spread('java_produce', 'direct', 'p99_ms', 0)}; "
            f"proxy: {spread('java_produce', 'proxy', 'p99_ms', 0)}",
            f"- Java ConsumerPerformance MB/s direct: {spread('java_consume', 'direct', 'mb_per_s')}; proxy: "
            f"{spread('java_consume', 'proxy', 'mb_per_s')} (includes the consumer group join)",
        ]
    if conns:
        lines.append("- produce MB/s by client connections: " + "; ".join(
            f"{c}: direct {spread(f'produce_c{c}', 'direct', 'mb_per_s')}, proxy {spread(f'produce_c{c}', 'proxy', 'mb_per_s')}"
            + (f", peer {spread(f'produce_c{c}', 'peer', 'mb_per_s')}" if has_peer else "") for c in conns))
    for p in ("proxy", "peer"):
        for r in rows:
            if r["phase"] == "memory" and r["path"] == p:
                m = r["result"]
                lines.append(f"- memory ({'kproxy' if p == 'proxy' else 'grepplabs/kafka-proxy'}): VmRSS {m['rss_before_kib']:,} KiB idle, "
                             f"{m['rss_during_kib']:,} KiB with {m['clients']} client connections: {m['kib_per_conn']} KiB per connection")
    lines += [""]
    for prof in [x for x in a.profile.split(",") if x and os.path.exists(x)]:
        what = "fetch" if "consume" in prof else "produce"
        lines += [f"## kproxy CPU profile, proxied {what}, round 1 (perf, 999 Hz, top symbols by self time)",
                  "", "```"]
        lines += [l.rstrip() for l in open(prof)][:25]
        lines += ["```", ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "bash test/kafka/kafka.sh up   # if the clusters are not running",
        ("PERF=1 " if a.profile else "") + "make bench   # = bash bench/run.sh",
        f"# knobs and their values in this run: ROUNDS={a.rounds} N={a.n} SIZE={a.size} RATE={a.rate} "
        f"LAT_SECONDS={a.lat_seconds}; PERF=1 adds the perf profiles",
        "```",
        "",
        f"This run took {a.elapsed} s end to end. Raw per-round loadgen output: `bench/raw-last.jsonl`.",
        END,
    ]
    section = "\n".join(lines) + "\n"
    if os.path.exists(a.md):
        cur = open(a.md).read()
        if BEGIN in cur and END in cur:
            pre, rest = cur.split(BEGIN, 1)
            post = rest.split(END, 1)[1]
            section = pre + section.rstrip("\n") + post
            if not section.endswith("\n"):
                section += "\n"
    with open(a.md, "w") as f:
        f.write(section)


if __name__ == "__main__":
    main()
