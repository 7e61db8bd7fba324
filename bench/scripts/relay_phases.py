#!/usr/bin/env python3
"""Relay delay by phase of a streaming run, from `bench --relay-trace FILE`.

usage: relay_phases.py FILE [SETUP_END_MS] [END_START_MS]   (defaults 1300 and 4000)

Prints p50/p99 (ms) of the tokens sent while streams were being set up, in the middle, and
while they were ending, and the 50 ms windows whose p99 passed 8 ms (median/p99 in each).
"""
import sys
from collections import defaultdict

rows = [tuple(map(int, line.split())) for line in open(sys.argv[1]) if not line.startswith("#")]
setup_end = int(sys.argv[2]) if len(sys.argv) > 2 else 1300
end_start = int(sys.argv[3]) if len(sys.argv) > 3 else 4000


def pct(values):
    values = sorted(values)
    if not values:
        return "-"
    return f"{values[len(values) // 2] / 1000:.1f}/{values[int(len(values) * 0.99)] / 1000:.1f}"


phases = [("setup", 0, setup_end), ("middle", setup_end, end_start), ("end", end_start, 10**9)]
print(f"{sys.argv[1]}: all {pct(d for _, d, _ in rows)}", end="")
for name, lo, hi in phases:
    print(f"  {name} {pct(d for t, d, _ in rows if lo <= t / 1000 < hi)}", end="")
print()
windows = defaultdict(list)
for t, d, _ in rows:
    windows[t // 50_000].append(d)
slow = []
for k in sorted(windows):
    v = sorted(windows[k])
    if v[int(len(v) * 0.99)] > 8000:
        slow.append(f"{k * 50}ms:{pct(v)}")
print("  windows over 8 ms:", " ".join(slow) or "none")
