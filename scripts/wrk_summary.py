#!/usr/bin/env python3
"""One wrk run's output (stdin) as one line: requests/s, p50 ms, p99 ms, failed requests.

The percentiles are nan unless wrk ran with --latency; failed requests are non-2xx answers plus
socket errors. Shared by scripts/bench.sh and scripts/cluster-bench.sh.
"""
import re
import sys

out = sys.stdin.read()
m = re.search(r"Requests/sec:\s+([\d.]+)", out)
if not m:
    sys.exit(f"not wrk output:\n{out}")
rps = float(m.group(1))


def ms(label):
    m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v


bad = 0
for line in out.splitlines():
    if "Non-2xx" in line or "Socket errors" in line:
        bad += sum(int(n) for n in re.findall(r"\b(\d+)\b", line.split(":", 1)[1]))
print(rps, ms(50), ms(99), bad)
