#!/usr/bin/env python3
"""Merge bench/cutover/summary-<rate>.json into bench/results.json and write
this benchmark's section (between its markers) at the end of bench/RESULTS.md.
usage: report.py [--rev REV] RATE..."""
import json, os, re, sys

args = sys.argv[1:]
rev = "unknown"
if args[:1] == ["--rev"]:
    rev, args = args[1], args[2:]
here = os.path.dirname(os.path.abspath(__file__))
bench = os.path.dirname(here)
sums = {}
for r in args:
    p = os.path.join(here, f"summary-{r}.json")
    if os.path.exists(p):
        sums[r] = json.load(open(p))

def e(b, m, unit, k, base=None):
    return {"benchmark": b, "metric": m, "unit": unit, "kproxy": round(k, 3),
            "baseline": None if base is None else round(base, 3),
            "ratio": None if not base else round(k / base, 4)}

new = []
for r, s in sums.items():
    b = f"cutover_{r}"
    w = s["windows"]
    new += [e(b, "hold_p50_ms", "ms", s["hold_p50_ms"]), e(b, "hold_p99_ms", "ms", s["hold_p99_ms"]),
            e(b, "produce_p99_ms_before", "ms", w["before"]["P99"]),
            e(b, "produce_p99_ms_during", "ms", w["during"]["P99"], w["before"]["P99"])]
rp = os.path.join(bench, "results.json")
res = json.load(open(rp)) if os.path.exists(rp) else []
keys = {(x["benchmark"], x["metric"]) for x in new}
res = [x for x in res if (x["benchmark"], x["metric"]) not in keys] + new
json.dump(res, open(rp, "w"), indent=2); open(rp, "a").write("\n")

L = ["<!-- bench/cutover/run.sh:begin -->", "", "## Cutover: latency during topic flips at steady load", "",
     "Setup: 20 topics (3 partitions each, fresh `bench-flip-<unix>-NN` per run) created on the source "
     "(Kafka 3.9.2), replicated by kproxy to the target (Kafka 4.4.0), `cutover.max_hold: 5s`. One franz-go "
     "producer through kproxy (idempotent, acks=all, linger 5 ms, 1 KiB values) at a fixed rate round-robin over "
     "the 20 topics. After 5 s of steady state one topic is routed to the target every 1.5 s (config file "
     "rewritten, tmp + rename), then 5 s more. Latency is the ack time measured from each record's *scheduled* "
     "send time (no coordinated omission). Windows: before = before the first flip request; during = from it to "
     "1.5 s after the last flip request (or the end of the last hold, if later); after = the rest. "
     "Hold = `hold_ms` from `/status` (one entry per topic: its last attempt).", "",
     "| rate (rec/s) | records / acked / errors | flipped / aborted (status) | aborted attempts (log) | hold p50 / p99 / max (ms) | produce p50 / p99 before (ms) | during | after |",
     "|---|---|---|---|---|---|---|---|"]
for r, s in sums.items():
    w = s["windows"]
    f = lambda k: f"{w[k]['P50']:.1f} / {w[k]['P99']:.1f}" if k in w else "-"
    L.append(f"| {int(r):,} (achieved {s['achieved_rate']:.0f}) | {s['records']:,} / {s['acked']:,} / {s['produce_errors']} | "
             f"{s['flipped']} / {s['aborts']} | {s['abort_attempts_in_log']} | "
             f"{s['hold_p50_ms']:.0f} / {s['hold_p99_ms']:.0f} / {s['hold_max_ms']:.0f} | {f('before')} | {f('during')} | {f('after')} |")
L.append("")
for r in sums:
    L.append(f"![produce latency during flips at {int(r):,} records/s](cutover/latency-{r}.png)")
    L.append("")
L.append("Raw data: `bench/cutover/latency-<rate>.csv` (t_seconds, latency_ms), `bench/cutover/flips-<rate>.csv`, "
         "`bench/cutover/summary-<rate>.json` (includes every attempt's hold parsed from kproxy's log).")
L.append("")
notes = os.path.join(here, "NOTES.md")
if os.path.exists(notes):
    L += open(notes).read().rstrip().splitlines() + [""]
L += [f"- Rev {rev}. Reproduce: `bash bench/cutover/run.sh` (knob RATES).", "", "<!-- bench/cutover/run.sh:end -->"]
mp = os.path.join(bench, "RESULTS.md")
txt = open(mp).read()
sec = "\n".join(L) + "\n"
m = re.search(r"<!-- bench/cutover/run.sh:begin -->.*?<!-- bench/cutover/run.sh:end -->\n?", txt, re.S)
txt = txt[:m.start()] + sec + txt[m.end():] if m else txt.rstrip("\n") + "\n\n" + sec
open(mp, "w").write(txt)
print("updated", rp, mp)
