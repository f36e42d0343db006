#!/usr/bin/env python3
"""bench-report.py - the table of scripts/bench-guest.sh.

  bench-report.py --collect RAWDIR OUT.json   fio JSON + .cpu records -> rows
  bench-report.py ROWS.json [--dat FILE] [--callgrind FILE] [--markdown | --pairs]
  bench-report.py ROWS.json --ab LABEL_A LABEL_B   (A/B of two labels only)

Rows are (fs, impl, job, round). impl labels are KIND-CONFIG: vduse-uring,
qsd-uring, before-uring, ...; every vduse-blk label is compared with the
qemu-storage-daemon of the same configuration and file system (qsd-CONFIG),
round by round (both ran back to back in that round): the ratio shown is the
median of the per-round ratios, with their min-max (the spread says how much
is noise). IOPS for 4 KiB jobs, bandwidth for 1 MiB jobs; CPU/req is the
daemon's utime+stime over the fio run divided by the requests it served (bytes
moved / block size), median over rounds, in microseconds. A baseline label
(BENCH_BASELINE_BIN, default "before") also gets vduse/baseline ratios.
Instructions per request of the engine alone (scripts/bench-engine.sh,
valgrind --tool=callgrind) are printed from bench/engine-callgrind.json when
it exists. Finally the issue-16 targets on ext4 (same run): >= 1.1x at QD1,
>= 1.5x at QD32x4, >= 1.0x on 1 MiB rows, lower CPU/request on every row."""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def device_service_time(before, after):
    """vduse-blk's own service time over one job (its `stats --json` before
    and after): mean, and p99 as the upper bound of the histogram bucket
    holding the 99th percentile (us); None when either snapshot is missing."""
    try:
        a, b = json.load(open(before)), json.load(open(after))
    except (OSError, ValueError):
        return None
    qa = {q["queue"]: q for q in a.get("queues", [])}
    n = total = 0
    buckets = None
    bounds = []
    for q in b.get("queues", []):
        p = qa.get(q["queue"], {})
        n += q.get("completed", 0) - p.get("completed", 0)
        total += q.get("service_time_sum_ns", 0) - p.get("service_time_sum_ns", 0)
        cur, old = q.get("service_time_buckets", []), p.get("service_time_buckets", [])
        bounds = q.get("service_time_bounds_us", bounds)
        d = [c - (old[i] if i < len(old) else 0) for i, c in enumerate(cur)]
        buckets = d if buckets is None else [x + y for x, y in zip(buckets, d)]
    if n <= 0 or not buckets:
        return None
    seen, p99 = 0, float("inf")
    for i, c in enumerate(buckets):
        seen += c
        if seen >= 0.99 * n:
            p99 = bounds[i] if i < len(bounds) else float("inf")
            break
    return total / n / 1000, p99


def collect(rawdir, out):
    rows = []
    for path in sorted(glob.glob(os.path.join(rawdir, "*.json"))):
        fs, impl, job, rnd = os.path.basename(path)[:-5].split("__")
        try:
            j = json.load(open(path))["jobs"][0]
        except (ValueError, KeyError, IndexError):
            print(f"skipping unreadable {path}", file=sys.stderr)
            continue
        sides = [j[k] for k in ("read", "write") if j[k]["io_bytes"] > 0]
        if not sides:
            continue
        ios = sum(s["total_ios"] for s in sides) or 1
        row = {"fs": fs, "impl": impl, "job": job, "round": int(rnd[1:]),
               "iops": sum(s["iops"] for s in sides),
               "mib_s": sum(s["bw_bytes"] for s in sides) / 1048576,
               "mean_us": sum(s.get("clat_ns", {}).get("mean", 0) * s["total_ios"] for s in sides) / ios / 1000,
               "p99_us": max(s.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0) for s in sides) / 1000}
        cpu = path[:-5] + ".cpu"
        if os.path.exists(cpu):
            c = json.load(open(cpu))
            reqs = c["dev_bytes"] / c["bs"]
            row.update({k: c[k] for k in ("cpu_ticks", "clk_tck", "dev_ios", "dev_bytes", "bs", "wall_ns")})
            if c.get("idle_daemons"):
                row["idle_cpu_per_daemon"] = c["idle_ticks"] / c["clk_tck"] / (c["wall_ns"] / 1e9) / c["idle_daemons"]
            if reqs > 0 and impl != "null_blk":
                row["cpu_us_per_req"] = c["cpu_ticks"] / c["clk_tck"] * 1e6 / reqs
                row["cpu_util"] = c["cpu_ticks"] / c["clk_tck"] / (c["wall_ns"] / 1e9)
        svc = device_service_time(path[:-5] + ".svc0", path[:-5] + ".svc1")
        if svc:
            row["svc_mean_us"], row["svc_p99_us"] = svc
        rows.append(row)
    if not rows:
        sys.exit(1)
    json.dump(rows, open(out, "w"), indent=1)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec, empty="-"):
    return empty if x is None else format(x, spec)


def report(rows, dat=None, callgrind=None, markdown=False, pairs=False):
    acc = defaultdict(dict)              # (fs, job, impl) -> {round: row}
    fses, jobs, impls = [], [], []
    for r in rows:
        acc[(r["fs"], r["job"], r["impl"])][r["round"]] = r
        for lst, v in ((fses, r["fs"]), (jobs, r["job"]), (impls, r["impl"])):
            if v not in lst:
                lst.append(v)
    fses.sort(key=lambda f: {"ext4": 0, "tmpfs": 1, "none": 9}.get(f, 5))
    configs = [i[4:] for i in impls if i.startswith("qsd-")]

    def config_of(impl):
        best = None
        for c in configs:
            if impl.endswith("-" + c) and (best is None or len(c) > len(best)):
                best = c
        return best

    def metric(job):
        return "mib_s" if "1m" in job else "iops"

    def ratios(fs, job, a, b, key):
        ra, rb = acc.get((fs, job, a), {}), acc.get((fs, job, b), {})
        return [ra[k][key] / rb[k][key] for k in ra if k in rb and rb[k].get(key) and ra[k].get(key) is not None]

    def impl_order(i):
        kind = i.split("-")[0]
        return ({"vduse": 0, "qsd": 2}.get(kind, 1), configs.index(config_of(i)) if config_of(i) in configs else 99, i)

    sep = " | " if markdown else "  "
    head = ["fs", "job", "impl", "IOPS", "MiB/s", "clat mean us", "clat p99 us", "svc mean us", "svc p99<= us", "CPU us/req",
            "x qsd (min-max)", "CPU x qsd", "x baseline (min-max)", "n"]
    widths = [5, 19, 18, 8, 8, 12, 11, 11, 12, 10, 17, 9, 20, 2]
    out = []

    def line(cols):
        if markdown:
            out.append("| " + " | ".join(str(c) for c in cols) + " |")
        else:
            out.append(sep.join(f"{str(c):<{w}}" if k < 3 else f"{str(c):>{w}}" for k, (c, w) in enumerate(zip(cols, widths))))

    line(head)
    if markdown:
        out.append("|" + "---|" * len(head))
    baselines = sorted({i for i in impls if i.split("-")[0] not in ("vduse", "qsd", "null_blk")
                        and config_of(i) is not None and i.split("-")[0] == os.environ.get("BENCH_BASELINE_LABEL", "before")})
    targets = []
    for fs in fses:
        for job in jobs:
            present = sorted({i for (f, j, i) in acc if f == fs and j == job}, key=impl_order)
            for impl in present:
                rs = list(acc[(fs, job, impl)].values())
                m = metric(job)
                cfg = config_of(impl)
                q = f"qsd-{cfg}" if cfg else None
                ratio = cpu_ratio = base = ""
                if impl.startswith("qsd-") or impl == "null_blk" or q is None:
                    pass
                else:
                    rr = ratios(fs, job, impl, q, m)
                    if rr:
                        ratio = f"{med(rr):.2f}x ({min(rr):.2f}-{max(rr):.2f})"
                    cr = ratios(fs, job, impl, q, "cpu_us_per_req")
                    if cr:
                        cpu_ratio = f"{med(cr):.2f}x"
                    for b in baselines:
                        if impl.startswith("vduse-") and config_of(b) == cfg:
                            br = ratios(fs, job, impl, b, m)
                            if br:
                                base = f"{med(br):.2f}x ({min(br):.2f}-{max(br):.2f})"
                    if impl.startswith("vduse-") and fs == "ext4":
                        targets.append((cfg, job, rr, cr))
                line([fs, job, impl, fmt(med([r["iops"] for r in rs]), ".0f"), fmt(med([r["mib_s"] for r in rs]), ".1f"),
                      fmt(med([r["mean_us"] for r in rs]), ".0f"), fmt(med([r["p99_us"] for r in rs]), ".0f"),
                      fmt(med([r.get("svc_mean_us") for r in rs]), ".0f"), fmt(med([r.get("svc_p99_us") for r in rs]), ".0f"),
                      fmt(med([r.get("cpu_us_per_req") for r in rs]), ".1f"), ratio, cpu_ratio, base, len(rs)])
    if pairs:
        out = ["| fs | job | vduse-blk: IOPS (MiB/s), CPU/req, clat mean / p99 (mean service time inside the daemon) | qemu-storage-daemon: same | "
               "IOPS ratio, median (min-max) | CPU/req ratio | " + ("vduse / baseline (min-max) | baseline / qsd | " if baselines else "")
               + "null_blk | rounds |",
               "|" + "---|" * (8 + (2 if baselines else 0))]
        for fs in fses:
            if fs == "none":
                continue
            for cfg in configs:
                v, q = f"vduse-{cfg}", f"qsd-{cfg}"
                for job in jobs:
                    if (fs, job, v) not in acc:
                        continue
                    m = metric(job)

                    def cell(impl):
                        rs = list(acc.get((fs, job, impl), {}).values())
                        if not rs:
                            return "-"
                        bw = f" ({med([r['mib_s'] for r in rs]):.0f} MiB/s)" if m == "mib_s" else ""
                        cpu = med([r.get("cpu_us_per_req") for r in rs])
                        svc = med([r.get("svc_mean_us") for r in rs])
                        svc = f" (in the daemon: {svc / 1000:.2f} ms)" if svc is not None else ""
                        return (f"{med([r['iops'] for r in rs]):.0f}{bw}, {fmt(cpu, '.0f')} us, "
                                f"{med([r['mean_us'] for r in rs]) / 1000:.1f} / {med([r['p99_us'] for r in rs]) / 1000:.0f} ms{svc}")

                    def rat(a, b, key):
                        rr = ratios(fs, job, a, b, key)
                        return f"{med(rr):.2f}x ({min(rr):.2f}-{max(rr):.2f})" if rr else "-"

                    cr = ratios(fs, job, v, q, "cpu_us_per_req")
                    row = [fs, f"{job} ({cfg})", cell(v), cell(q), f"**{rat(v, q, m)}**", f"{med(cr):.2f}x" if cr else "-"]
                    if baselines:
                        b = next((x for x in baselines if config_of(x) == cfg), None)
                        row += [rat(v, b, m), rat(b, q, m)] if b and (fs, job, b) in acc else ["-", "-"]
                    nb = med([r[m] for r in acc.get(("none", job, "null_blk"), {}).values()])
                    row += [fmt(nb, ".0f") + (" MiB/s" if m == "mib_s" and nb else ""), len(acc[(fs, job, v)])]
                    out.append("| " + " | ".join(str(c) for c in row) + " |")
    print("\n".join(out))
    print("\nratios: median of per-round ratios (IOPS for 4k jobs, MiB/s for 1m jobs), min-max over rounds;"
          " CPU us/req: daemon utime+stime / requests served, median over rounds; n: rounds")

    idle = [r["idle_cpu_per_daemon"] for r in rows if "idle_cpu_per_daemon" in r]
    if idle:
        print(f"idle check: the daemons not under test used {100 * med(idle):.2f}% of a CPU each (median over jobs;"
              f" max {100 * max(idle):.2f}%)")

    if targets:
        print("\nissue-16 targets on ext4 (same run; median ratio, rounds meeting it):")
        for cfg in configs:
            for job in jobs:
                for (c, j, rr, cr) in targets:
                    if c != cfg or j != job or not rr:
                        continue
                    need = 1.1 if "qd1" in job and "qd32" not in job else 1.5 if "qd32" in job else 1.0 if "1m" in job else None
                    parts = []
                    if need is not None:
                        ok = med(rr) >= need
                        parts.append(f"IOPS {med(rr):.2f}x vs >= {need}x: {'met' if ok else 'NOT met'}"
                                     f" ({sum(x >= need for x in rr)}/{len(rr)} rounds)")
                    if cr:
                        ok = med(cr) < 1.0
                        parts.append(f"CPU/req {med(cr):.2f}x of qsd: {'met' if ok else 'NOT met'}"
                                     f" ({sum(x < 1.0 for x in cr)}/{len(cr)} rounds lower)")
                    print(f"  vduse-{cfg:<13} {job:<20} " + "; ".join(parts))

    if callgrind and os.path.exists(callgrind):
        cg = json.load(open(callgrind))
        print(f"\nengine alone, instructions per request (valgrind --tool=callgrind, {os.path.basename(callgrind)}):")
        by = defaultdict(dict)
        for r in cg:
            by[r["scenario"]][r.get("label", "")] = r["instructions_per_request"]
        for scen, v in by.items():
            cells = "  ".join(f"{lab or 'this build'} {n:.0f}" for lab, n in v.items())
            ratio = f"   after/before {v['after'] / v['before']:.3f}x" if "after" in v and "before" in v else ""
            print(f"  {scen:<36} {cells}{ratio}")

    if dat:
        fs0 = fses[0] if fses else None
        cfg0 = configs[0] if configs else None
        with open(dat, "w") as f:
            f.write(f"# job vduse-blk qsd null_blk ({fs0}, {cfg0}; medians; IOPS for 4k jobs, MiB/s for 1m jobs)\n")
            for job in jobs:
                def mm(impl, fs=fs0):
                    v = med([r[metric(job)] for r in acc.get((fs, job, impl), {}).values()])
                    return v or 0
                if (fs0, job, f"vduse-{cfg0}") in acc:
                    f.write(f'"{fs0} {job}" {mm(f"vduse-{cfg0}"):.2f} {mm(f"qsd-{cfg0}"):.2f} {mm("null_blk", "none"):.2f}\n')


def ab(rows, a, b):
    """A/B of two labels measured in the same run (scripts/bench-inflight-log.sh):
    per fs and job, each side's medians, and the median of the per-round A/B
    ratios with their min-max, for IOPS (MiB/s on 1 MiB jobs), CPU per request,
    mean and p99 completion latency."""
    acc = defaultdict(dict)
    keys = []
    for r in rows:
        if r["impl"] in (a, b):
            acc[(r["fs"], r["job"], r["impl"])][r["round"]] = r
            if (r["fs"], r["job"]) not in keys:
                keys.append((r["fs"], r["job"]))
    if not keys:
        print(f"no rows labelled {a} or {b}", file=sys.stderr)
        sys.exit(1)

    def metric(job):
        return "mib_s" if "1m" in job else "iops"

    def cell(rr):
        return f"{med(rr):.3f}x ({min(rr):.2f}-{max(rr):.2f})" if rr else "-"

    print(f"A = {a}, B = {b}: medians over rounds; A/B = median of per-round ratios (min-max)")
    print(f"{'fs':<5} {'job':<20} {'A IOPS':>9} {'B IOPS':>9} {'A/B IOPS':>22} {'A/B CPU/req':>22}"
          f" {'A/B clat mean':>22} {'A/B clat p99':>22} {'n':>2}")
    for fs, job in keys:
        ra, rb = acc.get((fs, job, a), {}), acc.get((fs, job, b), {})
        common = [k for k in ra if k in rb]

        def ratios(key):
            return [ra[k][key] / rb[k][key] for k in common if rb[k].get(key) and ra[k].get(key) is not None]

        m = metric(job)
        print(f"{fs:<5} {job:<20} {fmt(med([r[m] for r in ra.values()]), '.0f'):>9}"
              f" {fmt(med([r[m] for r in rb.values()]), '.0f'):>9} {cell(ratios(m)):>22}"
              f" {cell(ratios('cpu_us_per_req')):>22} {cell(ratios('mean_us')):>22} {cell(ratios('p99_us')):>22}"
              f" {len(common):>2}")


def main(argv):
    if len(argv) >= 3 and argv[0] == "--collect":
        collect(argv[1], argv[2])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(2)
    path = argv[0]
    dat = callgrind = None
    markdown = pairs = False
    rest = argv[1:]
    while rest:
        a = rest.pop(0)
        if a == "--dat":
            dat = rest.pop(0)
        elif a == "--callgrind":
            callgrind = rest.pop(0)
        elif a == "--markdown":
            markdown = True
        elif a == "--ab":            # A/B of two labels only (bench-inflight-log.sh)
            rows = json.load(open(path))
            ab(rows, rest.pop(0), rest.pop(0))
            return
        elif a == "--pairs":         # markdown, one line per job: vduse-blk, qsd, baseline side by side
            markdown = pairs = True
        elif dat is None:            # the old call: bench-report.py ROWS.json DAT
            dat = a
    if callgrind is None:
        callgrind = os.path.join(os.path.dirname(os.path.abspath(path)), "engine-callgrind.json")
    rows = json.load(open(path))
    for r in rows:                   # rows of the old format (tmpfs only, impl vduse-blk / qsd)
        if "fs" not in r:
            r["fs"] = "none" if r["impl"] == "null_blk" else "tmpfs"
            r["impl"] = {"vduse-blk": "vduse-uring", "qsd": "qsd-uring"}.get(r["impl"], r["impl"])
    report(rows, dat, callgrind, markdown, pairs)


if __name__ == "__main__":
    main(sys.argv[1:])
