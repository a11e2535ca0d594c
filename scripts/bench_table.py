#!/usr/bin/env python3
"""Prints scripts/bench.sh's tables from its results file.

Arguments: results failures per_agent_kib agent_idle_kib agent_after_run_kib mysql_table
[memory_split]: memory_split is "where" lines ("process: N MiB anonymous + M MiB file-backed")
separated by ';', printed under the RSS rows.
The results file has one "leg figure value" line per measurement (legs: direct, tunnel and
the peers; figures: rps, p99_32, p50, p99, gib, wan, two, rss). The MySQL table is
bench-mysql.sh's output, whose rows are "| leg | QPS | ratio |".
"""
import collections
import re
import statistics
import sys

results, failures, per_agent, idle_kib, run_kib, mysql = sys.argv[1:7]
split = [w.strip() for w in (sys.argv[7] if len(sys.argv) > 7 else "").split(";") if w.strip()]
runs = collections.defaultdict(list)
for line in open(results):
    leg, fig, val = line.split()
    runs[leg, fig].append(float(val))


def m(leg, fig):
    v = runs.get((leg, fig))
    return statistics.median(v) if v else None


qps = {leg: int(q) for leg, q in re.findall(r"^\| ([\w -]+?) \| (\d+) \|", mysql, re.M)}
peers = [leg for leg in ("rathole", "rathole-noise", "ssh-R", "bore") if (leg, "rps") in runs]
ratio = lambda leg, fig: m(leg, fig) / m("direct", fig)
rh = "rathole" in peers

print("| figure | direct | tunnel | ratio / added | target |")
print("|---|---|---|---|---|")
target = f"≥ rathole's {ratio('rathole', 'rps'):.2f}" if rh else ""
print(f"| HTTP req/s, 1 KiB, 32 conns | {m('direct','rps'):,.0f} | {m('tunnel','rps'):,.0f} "
      f"| {ratio('tunnel','rps'):.2f} | {target} |")
print(f"| p99 at 32 conns (ms) | {m('direct','p99_32'):.2f} | {m('tunnel','p99_32'):.2f} | | ≤ 3 ms |")
target = f"≤ rathole's {m('rathole', 'p50'):.3f} ms" if rh else ""
print(f"| latency c=1 p50 (ms) | {m('direct','p50'):.3f} | {m('tunnel','p50'):.3f} "
      f"| +{m('tunnel','p50') - m('direct','p50'):.3f} ms | {target} |")
print(f"| latency c=1 p99 (ms) | {m('direct','p99'):.3f} | {m('tunnel','p99'):.3f} "
      f"| +{m('tunnel','p99') - m('direct','p99'):.3f} ms | |")
target = f"≥ rathole's {ratio('rathole', 'gib'):.2f}" if rh else ""
print(f"| 1 GiB download (MiB/s) | {m('direct','gib'):.0f} | {m('tunnel','gib'):.0f} "
      f"| {ratio('tunnel','gib'):.2f} | {target} |")
if {"direct", "tunnel", "relay2"} <= qps.keys():
    d, t, r = qps["direct"], qps["tunnel"], qps["relay2"]
    print(f"| MySQL sysbench QPS, 8 threads | {d:,} | {t:,} | {t/d:.2f} | |")
    print(f"| ↳ two bare relays, the ceiling of any two-hop tunnel | {d:,} | {r:,} | {r/d:.2f} "
          f"| tunnel ≥ 0.9 of it: {t/r:.2f} |")
else:
    print("| MySQL sysbench QPS, 8 threads | skipped | | | |")
print(f"| gateway RSS per idle agent (1,000 agents) | | {per_agent} KiB | | ≤ 100 KiB |")
print(f"| one agent's idle RSS | | {int(idle_kib)/1024:.1f} MiB | | ≤ 5 MiB |")
print(f"| ↳ the same agent after the runs | | {int(run_kib)/1024:.1f} MiB | | |")
print(f"| gateway + agent RSS after the runs | | {m('tunnel','rss')/1024:.1f} MiB | | ≤ 16 MiB |")
for where in split:
    print(f"| ↳ {where.split(':', 1)[0]} | | {where.split(':', 1)[1].strip()} | | |")
if m("direct", "wan"):
    print(f"| 50 ms RTT bulk, 256 MiB (MiB/s) | {m('direct','wan'):.1f} (plain TCP) "
          f"| {m('tunnel','wan'):.1f} | {ratio('tunnel','wan'):.2f} | ≥ 0.80 |")
if m("direct", "two"):
    print(f"| two-write app (Nagle on), c=1 p50 (ms) | {m('direct','two'):.3f} | {m('tunnel','two'):.3f} "
          f"| {m('tunnel','two') - m('direct','two'):+.3f} ms | no 40 ms stall |")
print(f"\nfailed requests during load runs: {failures}")

if not peers:
    sys.exit()
legs = ["tunnel"] + peers
names = {"tunnel": "Ground2Cloud", "rathole": "rathole (plain TCP)", "rathole-noise": "rathole + Noise",
         "ssh-R": "OpenSSH `ssh -R`", "bore": "bore"}


def row(label, cells, best, fmt):
    """One row; the best cell (max or min) in bold."""
    vals = [c for c in cells if c is not None]
    pick = best(vals) if vals else None
    out = []
    for c in cells:
        s = "" if c is None else fmt(c)
        out.append(f"**{s}**" if c is not None and c == pick else s)
    print(f"| {label} | " + " | ".join(out) + " |")


print(f"\n| figure (ratio to direct, same run) | " + " | ".join(names[l] for l in legs) + " |")
print("|---|" + "---|" * len(legs))
two = lambda v: f"{v:.2f}"
row("HTTP req/s", [ratio(l, "rps") for l in legs], max, two)
row("p99 at 32 connections", [m(l, "p99_32") for l in legs], min, lambda v: f"{v:.1f} ms")
row(f"latency at concurrency 1, p50 (direct {m('direct','p50'):.3f} ms)", [m(l, "p50") for l in legs], min,
    lambda v: f"{v:.3f} ms")
row("1 GiB download", [ratio(l, "gib") for l in legs], max, two)
if "direct" in qps:
    row("MySQL QPS", [qps[l] / qps["direct"] if l in qps else None for l in legs], max, two)
row("RSS of the tunnel's processes after the run", [m(l, "rss") for l in legs], min,
    lambda v: f"{v / 1024:.1f} MiB")
