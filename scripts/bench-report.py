#!/usr/bin/env python3
"""Summarise guest-bench.json: per job, the mean over rounds for each
implementation, the ratio vduse-blk / qemu-storage-daemon (IOPS for 4k
jobs, bandwidth for 1 MiB jobs) of those means, and the lowest and highest
ratio of a single round (both ran in the same round, back to back): the
spread says how much of a ratio is noise. Writes a gnuplot data file as well."""
import json
import sys
from collections import defaultdict

rows = json.load(open(sys.argv[1]))
dat = sys.argv[2] if len(sys.argv) > 2 else None
acc = defaultdict(list)
for r in rows:
    acc[(r["job"], r["impl"])].append(r)
jobs = []
for r in rows:
    if r["job"] not in jobs:
        jobs.append(r["job"])

def mean(xs, k):
    return sum(x[k] for x in xs) / len(xs) if xs else float("nan")

def round_ratios(job, impl, metric):
    qsd = {r["round"]: r[metric] for r in acc[(job, "qsd")]}
    return [r[metric] / qsd[r["round"]] for r in acc[(job, impl)] if qsd.get(r["round"], 0) > 0]

print(f'{"job":<22}{"impl":<12}{"IOPS":>10}{"MiB/s":>9}{"mean us":>10}{"p99 us":>10}{"ratio":>8}  per round')
lines = []
for job in jobs:
    metric = "mib_s" if job.startswith("seq") else "iops"
    q = mean(acc[(job, "qsd")], metric)
    v = mean(acc[(job, "vduse-blk")], metric)
    impls = ["vduse-blk"] + sorted({i for (j, i) in acc if j == job and i.startswith("vduse-") and i != "vduse-blk"})
    for impl in impls + ["qsd", "null_blk"]:
        xs = acc[(job, impl)]
        if not xs:
            continue
        mine = mean(xs, metric)
        ratio = f'{mine / q:7.2f}x' if impl.startswith("vduse") and q > 0 else ""
        spread = ""
        if ratio:
            rr = round_ratios(job, impl, metric)
            if rr:
                spread = f'  {min(rr):.2f}-{max(rr):.2f}'
        print(f'{job:<22}{impl:<12}{mean(xs, "iops"):>10.0f}{mean(xs, "mib_s"):>9.1f}'
              f'{mean(xs, "mean_us"):>10.0f}{mean(xs, "p99_us"):>10.0f}{ratio:>8}{spread}')
    n = mean(acc[(job, "null_blk")], metric)
    lines.append(f'"{job}" {v:.2f} {q:.2f} {n if n == n else 0:.2f}')
if dat:
    with open(dat, "w") as f:
        f.write("# job vduse-blk qsd null_blk (IOPS for 4k jobs, MiB/s for 1m jobs)\n")
        f.write("\n".join(lines) + "\n")
