#!/usr/bin/env python3
"""Plot a soak run's resources over time with the flips marked.

usage: plot.py DIR   reads DIR/soak.csv, DIR/flips.csv and DIR/faults.csv
(written by TestSoak with KPROXY_SOAK_OUT=DIR), writes DIR/soak.png:
goroutines, open files, heap in use and resident memory of kproxy; a thin
line per flip of the first topic (green: to the target, blue: back to the
source), a thick one where the groups' home moved too, a dotted one per
flip of the second topic, and a red band per injected fault (blackholes as
long as they lasted).
"""
import csv, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
rows = list(csv.DictReader(open(os.path.join(d, "soak.csv"))))
flips = list(csv.DictReader(open(os.path.join(d, "flips.csv"))))
t = [float(r["seconds"]) / 60 for r in rows]
# Only the flips the run reached (a failed run stops early).
flips = [f for f in flips if float(f["seconds"]) / 60 <= t[-1]]
fpath = os.path.join(d, "faults.csv")
faults = list(csv.DictReader(open(fpath))) if os.path.exists(fpath) else []
panels = [("goroutines", "goroutines"), ("open_fds", "open files"),
          ("heap_inuse_mib", "heap in use (MiB)"), ("rss_mib", "resident memory (MiB)")]
fig, axes = plt.subplots(len(panels), 1, figsize=(12, 9), dpi=100, sharex=True)
for ax, (col, label) in zip(axes, panels):
    ax.plot(t, [float(r[col]) for r in rows], color="black", lw=1.1)
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    for f in flips:
        x = float(f["seconds"]) / 60
        ax.axvline(x, color="tab:green" if f["home"] == "target" else "tab:blue",
                   lw=2.2 if f["groups_moved"] == "true" else 0.5, alpha=0.5,
                   ls=":" if f.get("topic") == "b" else "-")
    for f in faults:
        x = float(f["seconds"]) / 60
        ax.axvspan(x, x + max(float(f["seconds_long"]), 3) / 60, color="tab:red", alpha=0.35, lw=0)
axes[-1].set_xlabel("minutes since the producers started")
na = sum(1 for f in flips if f.get("topic", "a") == "a")
axes[0].set_title(f"kproxy soak, {t[-1]:.0f} min: {na} + {len(flips) - na} flips of two topics (green: to target, blue: back; "
                  f"dotted: 2nd topic; thick: groups moved too), {len(faults)} faults (red)", fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(d, "soak.png"))
print("wrote", os.path.join(d, "soak.png"))
