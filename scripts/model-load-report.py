#!/usr/bin/env python3
"""model-load-report.py SAMPLES OUTBASE - the model-load benchmark's table.

Owns the arithmetic of bench-model-load.sh: reads the raw samples the guest
wrote (lines "ROW PHASE METRIC VALUE", "meta KEY VALUE"), takes medians over
the repetitions, computes each row's limit, max(bytes that must cross ÷
(rate cap × connections), warm re-read time), the ratios and the goals, and
writes OUTBASE.txt (the table), OUTBASE.json (everything, samples included)
and OUTBASE.dat (gnuplot input for bench-model-load.gp).
"""
import json
import statistics
import sys
from collections import defaultdict

ROWS = {
    "a": "curl -o, then read",
    "b": "aria2c -x4, then read",
    "c": "nbdkit curl+readahead+cache, nbd",
    "d": "vduse-blk raw remote image",
    "e": "vduse-blk zstd remote image",
    "f": "(e) + recorded prefetch trace",
    "g": "container start, zstd remote rootfs",
    "h": "(g) + recorded prefetch trace",
}
NOMINAL_CONNS = {"a": 1, "b": 4, "d": 4, "e": 4, "f": 4}  # c: as counted in nginx's log


def rate_bytes(s: str) -> float:
    """nginx size syntax: 32m = 32 MiB/s, 512k, or plain bytes."""
    s = s.strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(s[-1:], 1)
    return float(s[:-1] if s[-1:] in "kmg" else s) * mult


def main() -> None:
    samples, out = sys.argv[1], sys.argv[2]
    meta: dict[str, str] = {}
    vals: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    skipped: dict[str, str] = {}
    for line in open(samples):
        w = line.split(maxsplit=3)
        if len(w) < 3:
            continue
        if w[0] == "meta":
            meta[w[1]] = " ".join(w[2:])
        elif w[1] == "skipped":
            skipped[w[0]] = w[3].strip() if len(w) > 3 else ""
        elif len(w) == 4:
            try:
                vals[(w[0], w[1], w[2])].append(float(w[3]))
            except ValueError:
                pass

    def med(row: str, phase: str, metric: str):
        v = vals.get((row, phase, metric))
        return statistics.median(v) if v else None

    rate = rate_bytes(meta.get("rate", "32m"))
    file_b = int(meta.get("file_bytes", 0))
    zst_b = int(meta.get("zst_bytes", 0))
    res: dict[str, dict] = {}
    for row in ROWS:
        cold = med(row, "cold", "total")
        if cold is None:
            continue
        warm = med(row, "warm", "total")
        tot, rdy = vals.get((row, "cold", "total"), []), vals.get((row, "cold", "ready"), [])
        read_phase = statistics.median([t - r for t, r in zip(tot, rdy)]) if len(tot) == len(rdy) and rdy else None
        conns_seen = med(row, "cold", "conns") or 0
        conns = NOMINAL_CONNS.get(row) or max(1, int(conns_seen))
        if row in "gh":  # the start-up set's compressed bytes are not known apart: no limit
            must, link_s, limit = None, None, None
        else:
            must = zst_b if row in "ef" else file_b
            link_s = must / (rate * conns)
            limit = max(link_s, warm or 0)
        res[row] = {
            "name": ROWS[row], "cold_ready_s": med(row, "cold", "ready"), "cold_attach_s": med(row, "cold", "attach"),
            "cold_created_s": med(row, "cold", "created"),
            "cold_read_after_ready_s": read_phase, "cold_ttfb_s": med(row, "cold", "ttfb"), "cold_total_s": cold,
            "warm_ttfb_s": med(row, "warm", "ttfb"), "warm_total_s": warm,
            "link_bytes": med(row, "cold", "link_bytes"), "conns_seen": conns_seen, "conns": conns,
            "must_cross_bytes": must, "link_time_s": link_s, "limit_s": limit,
            "cold_over_limit": cold / limit if limit else None,
            "errors": len(vals.get((row, "cold", "error"), [])) + len(vals.get((row, "warm", "error"), [])),
            "byte_exact": (min(vals[(row, "verify", "ok")]) == 1) if (row, "verify", "ok") in vals else None,
            "samples": {f"{p}_{m}": vals.get((row, p, m), []) for p in ("cold", "warm") for m in ("created", "attach", "ready", "ttfb", "total")
                if (row, p, m) in vals},
        }

    def ratio(a: str, b: str):
        if a in res and b in res:
            return res[b]["cold_total_s"] / res[a]["cold_total_s"]
        return None

    goals = []
    for r in ("d", "e"):
        if r in res:
            x = res[r]["cold_over_limit"]
            goals.append((f"({r}) cold <= 1.5x its limit", f"{x:.2f}x", x <= 1.5))
    x = ratio("e", "b")
    if x is not None:
        goals.append(("(e) >= 1.5x faster than (b)", f"{x:.2f}x", x >= 1.5))
    x = ratio("e", "c")
    if x is not None:
        goals.append(("(e) ahead of (c)", f"{x:.2f}x", x > 1.0))

    mib = file_b / 1048576
    lines = [
        f"model-load benchmark, {meta.get('date', '?')}, guest kernel {meta.get('kernel', '?')}, "
        f"{meta.get('cpus', '?')} vCPUs under TCG, medians of {meta.get('reps', '?')} repetitions (rows alternating)",
        f"model file {mib:.0f} MiB ({file_b} bytes: half random, half repetitive text), ext4 image "
        f"{int(meta.get('img_bytes', 0)) / 1048576:.0f} MiB, zstd seekable image {zst_b / 1048576:.0f} MiB",
        f"nginx in the guest, limit_rate {meta.get('rate', '?')} per connection ({rate / 1048576:.0f} MiB/s); "
        "times in s from the row's start (daemon start / download) to the first block and to the last byte read",
        "",
        f"{'row':<40} {'ready':>6} {'cold 1st':>8} {'cold all':>8} {'(read)':>6} {'warm all':>8} {'MiB sent':>8} {'conns':>5} "
        f"{'limit':>7} {'cold/limit':>10}",
    ]
    for row, r in res.items():
        sent = r["link_bytes"] / 1048576 if r["link_bytes"] is not None else float("nan")
        lines.append(
            f"({row}) {r['name']:<36} {r['cold_ready_s'] or 0:6.2f} {r['cold_ttfb_s']:8.2f} {r['cold_total_s']:8.2f} {r['cold_read_after_ready_s'] or 0:6.2f} {r['warm_total_s'] or 0:8.2f} "
            f"{sent:8.0f} {r['conns']:>5} "
            + (f"{r['limit_s']:7.2f} {r['cold_over_limit']:9.2f}x" if r["limit_s"] else f"{'-':>7} {'-':>10}")
            + ("" if r["byte_exact"] in (None, True) else "  NOT BYTE-EXACT")
            + (f"  {r['errors']} errors" if r["errors"] else ""))
    for row, why in skipped.items():
        lines.append(f"({row}) skipped: {why}")
    lines.append("")
    lines.append("ready: downloaded (a, b) or started and mounted (c-h); 1st / all: first block / every byte read;"
                 " (read): all - ready")
    att = [f"({row}) {r['cold_attach_s']:.2f}" for row, r in res.items() if r["cold_attach_s"] is not None and row not in ("a", "b")]
    if att:
        lines.append("of ready, until the block device was there (daemon start + attach): " + ", ".join(att)
                     + (f"; `vduse-blk --help` alone: {float(meta['bin_help_s']):.2f} s" if "bin_help_s" in meta else "")
                     + (f" ({float(meta['bin_cold_load_s']):.2f} s with its libraries read over 9p after drop_caches:"
                        " every row's programs are loaded again before its clock starts)" if "bin_cold_load_s" in meta else ""))
    crt = [f"({row}) {r['cold_created_s']:.2f}" for row, r in res.items() if r["cold_created_s"] is not None and row not in ("a", "b")]
    if crt:
        lines.append("of that, until the daemon had created /dev/vduse/NAME (backend opened): " + ", ".join(crt))
    lines.append("limit = max(bytes that must cross [model file; zstd object for e, f] / (rate x conns), warm re-read)")
    for a, b in (("e", "b"), ("e", "c"), ("d", "b"), ("f", "e"), ("h", "g")):
        x = ratio(a, b)
        if x is not None:
            lines.append(f"cold ({a}) vs ({b}): {x:.2f}x (time of ({b}) / time of ({a}))")
    lines.append("goals:")
    for name, val, met in goals:
        lines.append(f"  {name:<32} {val:>7}  {'met' if met else 'not met'}")
    exact = [row for row, r in res.items() if r["byte_exact"] is not None]
    if exact:
        lines.append("byte-exact (first repetition, cmp against the served file): "
                     + ", ".join(f"({row}) {'yes' if res[row]['byte_exact'] else 'NO'}" for row in exact))
    if "startup_files" in meta:
        lines.append(f"container start (g, h): {meta['startup_files']} files, {int(meta['startup_bytes']) / 1048576:.1f} MiB "
                     f"read in a shuffled order from a rootfs image of {int(meta.get('rootfs_zst_bytes', 0)) / 1048576:.0f} MiB zstd")
    text = "\n".join(lines) + "\n"
    open(out + ".txt", "w").write(text)
    json.dump({"meta": meta, "rate_bytes_per_s": rate, "rows": res, "skipped": skipped,
               "goals": [{"goal": g, "value": v, "met": m} for g, v, m in goals]},
              open(out + ".json", "w"), indent=1)
    with open(out + ".dat", "w") as f:
        f.write("# row cold_ttfb cold_total warm_total limit\n")
        for row, r in res.items():
            f.write(f"\"({row}) {r['name']}\" {r['cold_ttfb_s']:.3f} {r['cold_total_s']:.3f} "
                    f"{r['warm_total_s'] or 0:.3f} {r['limit_s'] or 0:.3f}\n")


if __name__ == "__main__":
    main()
