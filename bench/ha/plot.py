#!/usr/bin/env python3
"""Plot produce latency around the first SIGKILL of bench/ha (kill-latency.csv).

Each point is one record: when it was sent (seconds from the kill) and how
long until it was acknowledged. Usage: plot.py DIR (reads DIR/kill-latency.csv
and DIR/summary.json, writes DIR/failover-latency.png).
"""
import csv
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

d = sys.argv[1] if len(sys.argv) > 1 else "bench/ha"
xs, ys = [], []
with open(f"{d}/kill-latency.csv") as f:
    for row in csv.DictReader(f):
        xs.append(float(row["sent_s"]))
        ys.append(max(float(row["latency_ms"]), 0.01))
summary = json.load(open(f"{d}/summary.json"))
first = summary["failover"]["seconds"][0]

fig, ax = plt.subplots(figsize=(9, 4.5))
ax.scatter(xs, ys, s=2, alpha=0.4, label="one record (12 partitions, %d records/s)" % summary["failover"]["rate_records_per_s"])
ax.axvline(0, color="red", linestyle="--", label="SIGKILL of one of three instances")
ax.axvline(first, color="green", linestyle="--", label="every partition resumed (%.1f s)" % first)
ax.set_yscale("log")
ax.set_xlabel("record sent at (s, from the kill)")
ax.set_ylabel("produce latency (ms, log)")
ax.set_title("kproxy, three instances: produce latency around an instance's SIGKILL (session timeout %gs)" % summary["session_timeout_s"], fontsize=9)
ax.legend(loc="upper right", fontsize=8)
fig.tight_layout()
fig.savefig(f"{d}/failover-latency.png", dpi=110)
print(f"wrote {d}/failover-latency.png")
