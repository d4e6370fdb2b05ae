#!/usr/bin/env python3
"""Plot the cost-growth sweep (bench/scale -sweep) against partition count.

usage: plot.py [DIR]   reads DIR/sweep.jsonl (one JSON line per size), writes
DIR/cost-growth.png: kproxy and both brokers' extra CPU idle and under load,
kproxy RSS and offset-map memory, start-up time, and full Metadata p50/p99
through kproxy vs direct; the x axis is the partition count (log).
"""
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(d, "sweep.jsonl")) if l.strip()]
rows = [r for r in rows if r.get("startup_s", -1) >= 0]
rows.sort(key=lambda r: r["partitions"])
x = [r["partitions"] for r in rows]

fig, ax = plt.subplots(2, 3, figsize=(15, 8))
def panel(a, title, ylabel, series, logy=False):
    for label, key, style in series:
        a.plot(x, [key(r) for r in rows], style, label=label)
    a.set_xscale("log"); a.set_title(title); a.set_xlabel("replicated partitions"); a.set_ylabel(ylabel)
    if logy: a.set_yscale("log")
    a.grid(True, which="both", alpha=0.3); a.legend(fontsize=8)

panel(ax[0][0], "idle: CPU", "% of a core", [
    ("kproxy", lambda r: r["idle_kproxy_core_pct"], "o-"),
    ("source broker with kproxy", lambda r: r["idle_source_broker_core_pct"], "s-"),
    ("source broker before kproxy", lambda r: r["source_broker_quiet_core_pct"], "s:"),
    ("target broker with kproxy", lambda r: r["idle_target_broker_core_pct"], "^-"),
    ("target broker before kproxy", lambda r: r["target_broker_quiet_core_pct"], "^:")])
panel(ax[0][1], "modest load: CPU", "% of a core", [
    ("kproxy", lambda r: r["load_kproxy_core_pct"], "o-"),
    ("source broker", lambda r: r["load_source_broker_core_pct"], "s--"),
    ("target broker", lambda r: r["load_target_broker_core_pct"], "^--")])
panel(ax[0][2], "memory", "MB", [
    ("kproxy RSS idle", lambda r: r["idle_kproxy_rss_mb"], "o-"),
    ("kproxy RSS under load", lambda r: r["load_kproxy_rss_mb"], "s-"),
    ("offset maps", lambda r: r["offset_map_bytes"] / 1e6, "^--")], logy=True)
panel(ax[1][0], "start-up until every partition copies", "s", [
    ("kproxy", lambda r: r["startup_s"], "o-")])
panel(ax[1][1], "full Metadata latency", "ms", [
    ("through kproxy p50", lambda r: r["metadata_kproxy_p50_ms"], "o-"),
    ("through kproxy p99", lambda r: r["metadata_kproxy_p99_ms"], "o:"),
    ("direct p50", lambda r: r["metadata_direct_p50_ms"], "s-"),
    ("direct p99", lambda r: r["metadata_direct_p99_ms"], "s:")], logy=True)
panel(ax[1][2], "Metadata through kproxy / direct", "ratio", [
    ("p50", lambda r: r["metadata_kproxy_p50_ms"] / r["metadata_direct_p50_ms"], "o-"),
    ("p99", lambda r: r["metadata_kproxy_p99_ms"] / r["metadata_direct_p99_ms"], "s-")])
fig.suptitle("kproxy cost growth with replicated partitions (shared 2-core machine, loaded by other work)")
fig.tight_layout()
fig.savefig(os.path.join(d, "cost-growth.png"), dpi=80)
