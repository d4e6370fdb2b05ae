#!/usr/bin/env python3
"""Print the cost-growth sweep (DIR/sweep.jsonl) as a markdown table."""
import json, os, sys
d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
rows = sorted((json.loads(l) for l in open(os.path.join(d, "sweep.jsonl")) if l.strip()), key=lambda r: r["partitions"])
print("| replicated partitions | kproxy idle, % core | source broker idle, % core (before kproxy) | target broker idle, % core (before kproxy) | kproxy under load, % core | source / target broker under load, % core | kproxy RSS idle / load, MB | start-up until all copy, s | Metadata p50 kproxy / direct, ms | Metadata p99 kproxy / direct, ms | offset maps, bytes |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("startup_s", -1) < 0:
        print(f"| {r['partitions']:,} | not reached: {r.get('startup_partitions_copying', '?')} partitions copying when the run gave up |" + " |" * 9)
        continue
    print(f"| {r['partitions']:,} | {r['idle_kproxy_core_pct']:.2f} | {r['idle_source_broker_core_pct']:.1f} ({r['source_broker_quiet_core_pct']:.1f}) "
          f"| {r['idle_target_broker_core_pct']:.1f} ({r['target_broker_quiet_core_pct']:.1f}) | {r['load_kproxy_core_pct']:.1f} "
          f"| {r['load_source_broker_core_pct']:.1f} / {r['load_target_broker_core_pct']:.1f} | {r['idle_kproxy_rss_mb']:.0f} / {r['load_kproxy_rss_mb']:.0f} "
          f"| {r['startup_s']:.0f} | {r['metadata_kproxy_p50_ms']:.1f} / {r['metadata_direct_p50_ms']:.1f} | {r['metadata_kproxy_p99_ms']:.0f} / {r['metadata_direct_p99_ms']:.0f} "
          f"| {r['offset_map_bytes']:,.0f} |")
