#!/usr/bin/env python3
"""Plot produce ack latency over time with the topic flips marked.

usage: plot.py RATE [DIR]   reads DIR/latency-RATE.csv and DIR/flips-RATE.csv,
writes DIR/latency-RATE.png (per-100 ms p50/p99/max lines, log y axis; a
vertical line per flip request: green = flipped, red = aborted; shaded = hold).
"""
import csv, math, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rate = sys.argv[1]
d = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
bins = {}
with open(os.path.join(d, f"latency-{rate}.csv")) as f:
    r = csv.reader(f); next(r)
    for t, l in r:
        bins.setdefault(int(float(t) * 10), []).append(float(l))
xs, p50, p99, mx = [], [], [], []
for k in sorted(bins):
    v = sorted(bins[k]); n = len(v)
    xs.append(k / 10 + 0.05); p50.append(v[n // 2])
    p99.append(v[min(n - 1, math.ceil(0.99 * n) - 1)]); mx.append(v[-1])
flips = list(csv.DictReader(open(os.path.join(d, f"flips-{rate}.csv"))))

fig, ax = plt.subplots(figsize=(13, 5.5), dpi=110)
ax.plot(xs, mx, color="0.75", lw=0.8, label="max per 100 ms")
ax.plot(xs, p99, color="tab:orange", lw=1.2, label="p99 per 100 ms")
ax.plot(xs, p50, color="tab:blue", lw=1.2, label="p50 per 100 ms")
for i, fl in enumerate(flips):
    ok = fl["state"] == "flipped"
    t = float(fl["flip_requested_s"])
    ax.axvline(t, color="tab:green" if ok else "tab:red", lw=0.9, ls="--", alpha=0.8,
               label=("flip requested (flipped)" if ok else "flip requested (aborted)") if i == [j for j, g in enumerate(flips) if (g["state"] == "flipped") == ok][0] else None)
    s = float(fl["hold_started_s"])
    ax.axvspan(s, s + float(fl["hold_ms"]) / 1000, color="tab:green" if ok else "tab:red", alpha=0.08)
    ax.text(t, 1.02, fl["topic"][-2:], transform=ax.get_xaxis_transform(), fontsize=7, ha="center")
ax.set_yscale("log")
ax.set_xlabel("seconds since load start (record's scheduled send time)")
ax.set_ylabel("produce ack latency, ms (log)")
ax.set_title(f"kproxy cutover: produce latency at {int(rate):,} records/s, 20 topics flipped 1.5 s apart (last status attempt's hold shaded)", fontsize=10, pad=16)
ax.grid(True, which="major", alpha=0.3)
ax.legend(loc="upper left", fontsize=8)
fig.tight_layout()
out = os.path.join(d, f"latency-{rate}.png")
fig.savefig(out)
print(out)
