#!/usr/bin/env bash
# bench-engine.sh - the queue engine alone (no kernel, no guest), two measures:
#  1. engine-bench (simulated drivers against the real queue workers, null
#     backend and io_uring on tmpfs): requests/s and requests per CPU-second of
#     the queue threads, ENGINE_ROUNDS rounds. With a baseline binary the two
#     binaries alternate round by round (order reversed every round) and the
#     table shows new/baseline per scenario: median of the per-round ratios and
#     their min-max. -> bench/engine-bench.json (rows: label, round, scenario...)
#  2. instructions per request under valgrind --tool=callgrind, which other load
#     on the machine does not move: engine-bench on the scenarios in
#     ENGINE_CALLGRIND_ONLY, with --separate-threads=yes; the instructions of the
#     queue threads (every thread whose profile contains QueueWorker's loop)
#     divided by the requests they handed to the backend (calls of the
#     backend's prepareRead/prepareWrite protocol witnesses), warm-up included.
#     With two windows (default) the number is the slope between them, so the
#     fixed cost of thread start and queue set-up drops out. The binaries are
#     run from copies without DWARF (objcopy --strip-debug: valgrind 3.19
#     cannot read the Swift toolchain's DWARF 5); symbols stay.
#     -> bench/engine-callgrind.json
#
#   scripts/bench-engine.sh                     # this tree's engine-bench
#   ENGINE_BASELINE=/work/wt-old/.build/release/engine-bench scripts/bench-engine.sh
# Env: ENGINE_ROUNDS (3; 0: callgrind only), ENGINE_SECONDS (1, per scenario and round),
#      ENGINE_ONLY (engine-bench --only SUBSTRING; default all 17 scenarios),
#      ENGINE_BENCH (binary, default .build/release/engine-bench), ENGINE_LABEL
#      (after), ENGINE_BASELINE (another engine-bench), ENGINE_BASELINE_LABEL
#      (before), ENGINE_CALLGRIND (1; 0 skips it), ENGINE_CALLGRIND_SECONDS ('0.5 2':
#      windows; with two, instructions/request is the slope between them, so the
#      fixed cost of start-up and set-up drops out),
#      ENGINE_CALLGRIND_LOG (0; 1: every binary also runs with --inflight-log on,
#      labelled LABEL+log, and the table adds LABEL+log/LABEL: the log's cost),
#      ENGINE_CALLGRIND_ONLY ('null read 4k batch=32 queues=1|null read 4k
#      batch=1 queues=1|uring read 4k batch=32 queues=1|uring write 4k batch=32
#      queues=1', '|'-separated; the uring rows use a file on /dev/shm).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$REPO/bench
NEW=${ENGINE_BENCH:-$REPO/.build/release/engine-bench}
NEW_LABEL=${ENGINE_LABEL:-after}
OLD=${ENGINE_BASELINE:-}
OLD_LABEL=${ENGINE_BASELINE_LABEL:-before}
ROUNDS=${ENGINE_ROUNDS:-3} SECS=${ENGINE_SECONDS:-1}
[[ -x $NEW ]] || { echo "bench-engine: build first: swift build -c release --product engine-bench" >&2; exit 1; }
[[ -z $OLD || -x $OLD ]] || { echo "bench-engine: $OLD is not executable" >&2; exit 1; }
mkdir -p "$OUT"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

bins=("$NEW_LABEL=$NEW")
[[ -n $OLD ]] && bins+=("$OLD_LABEL=$OLD")
only=(); [[ -n ${ENGINE_ONLY:-} ]] && only=(--only "$ENGINE_ONLY")

if ((ROUNDS > 0)); then
echo "== engine-bench: $ROUNDS rounds x ${SECS}s per scenario; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
  order=("${bins[@]}")
  ((r % 2 == 0 && ${#bins[@]} == 2)) && order=("${bins[1]}" "${bins[0]}")
  for b in "${order[@]}"; do
    label=${b%%=*} bin=${b#*=}
    echo "-- round $r: $label ($bin)"
    "$bin" --seconds "$SECS" "${only[@]}" --json "$T/$label.r$r.json" | tail -n +2 | sed 's/^/   /'
  done
done
python3 - "$T" "$OUT/engine-bench.json" "$NEW_LABEL" "${OLD:+$OLD_LABEL}" <<'PY'
import glob, json, os, statistics, sys
tmp, out, new, old = sys.argv[1:5]
rows = []
for p in sorted(glob.glob(os.path.join(tmp, "*.json"))):
    label, rnd = os.path.basename(p)[:-5].rsplit(".r", 1)
    for r in json.load(open(p)):
        r.update(label=label, round=int(rnd))
        rows.append(r)
json.dump(rows, open(out, "w"), indent=1)
by = {}
for r in rows:
    by.setdefault((r["scenario"], r["label"]), {})[r["round"]] = r
scen = []
for r in rows:
    if r["scenario"] not in scen:
        scen.append(r["scenario"])
med = statistics.median
print(f"\n{'scenario':<44}{new + ' req/s':>16}{'req/cpu-s':>12}{'allocs/req':>11}", end="")
print(f"{old + ' req/s':>16}{'new/old req/s (min-max)':>26}{'req/cpu-s':>12}" if old else "")
for s in scen:
    a = by.get((s, new), {})
    line = (f"{s:<44}{med([x['requestsPerSecond'] for x in a.values()]):>16.0f}"
            f"{med([x['requestsPerQueueCPUSecond'] for x in a.values()]):>12.0f}"
            f"{med([x['allocationsPerRequest'] for x in a.values()]):>11.4f}")
    if old:
        b = by.get((s, old), {})
        rr = [a[k]["requestsPerSecond"] / b[k]["requestsPerSecond"] for k in a if k in b and b[k]["requestsPerSecond"] > 0]
        cr = [a[k]["requestsPerQueueCPUSecond"] / b[k]["requestsPerQueueCPUSecond"] for k in a
              if k in b and b[k]["requestsPerQueueCPUSecond"] > 0]
        if b:
            line += f"{med([x['requestsPerSecond'] for x in b.values()]):>16.0f}"
        if rr:
            line += f"{med(rr):>12.2f}x ({min(rr):.2f}-{max(rr):.2f})"
        if cr:
            line += f"{med(cr):>11.2f}x"
    print(line)
print(f"(medians of {len({r['round'] for r in rows})} rounds; ratios: median of per-round ratios, min-max)")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

[[ ${ENGINE_CALLGRIND:-1} == 1 ]] || exit 0
command -v valgrind >/dev/null || { echo "bench-engine: valgrind missing (apt-get install valgrind): no instruction counts" >&2; exit 0; }
read -r -a CG_SECS <<<"${ENGINE_CALLGRIND_SECONDS:-0.5 2}"
IFS='|' read -r -a CG_ONLY <<<"${ENGINE_CALLGRIND_ONLY:-null read 4k batch=32 queues=1|null read 4k batch=1 queues=1|uring read 4k batch=32 queues=1|uring write 4k batch=32 queues=1}"
echo
echo "== instructions per request (valgrind --tool=callgrind, windows of ${CG_SECS[*]} s per scenario)"
cgrows=()
# variants: LABEL|BINARY LABEL|LOG (off, on); with ENGINE_CALLGRIND_LOG=1 every
# binary also runs with the in-flight log, labelled LABEL+log
cgvars=()
for b in "${bins[@]}"; do
  objcopy --strip-debug "${b#*=}" "$T/engine-bench.${b%%=*}"
  cgvars+=("${b%%=*}|${b%%=*}|off")
  [[ ${ENGINE_CALLGRIND_LOG:-0} == 1 ]] && cgvars+=("${b%%=*}+log|${b%%=*}|on")
done
for s in "${CG_ONLY[@]}"; do
  for secs in "${CG_SECS[@]}"; do
    for v in "${cgvars[@]}"; do
      IFS='|' read -r label binlabel logmode <<<"$v"
      d=$T/cg-${#cgrows[@]} logarg=()
      [[ $logmode == on ]] && logarg=(--inflight-log on)   # older engine-bench builds lack the option
      mkdir -p "$d"
      (cd "$d" && valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$d/cg.out" \
          "$T/engine-bench.$binlabel" --seconds "$secs" --only "$s" "${logarg[@]}" --json "$d/r.json" \
          >"$d/stdout" 2>"$d/valgrind.err") \
        || { echo "callgrind $label '$s' failed: $(tail -n 3 "$d/valgrind.err")" >&2; continue; }
      cgrows+=("$label|$s|$secs|$d")
    done
  done
done
python3 - "$OUT/engine-callgrind.json" "$NEW_LABEL" "${OLD:+$OLD_LABEL}" "${cgrows[@]}" <<'PY'
import glob, json, re, sys
out, new, old, rows = sys.argv[1], sys.argv[2], sys.argv[3], []
NAME = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?")
def profiles(d):
    """per thread file: (instructions, calls of the backend's prepareRead/prepareWrite
    witnesses, runs QueueWorker's loop); names are compressed across the files"""
    files = sorted(glob.glob(d + "/cg.out-*"))
    names = {}
    for p in files:
        for line in open(p, errors="replace"):
            m = NAME.match(line)
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
    for p in files:
        total = calls = 0
        worker = False
        callee = None
        for line in open(p, errors="replace"):
            if line.startswith("totals:"):
                total = int(line.split()[1])
            m = NAME.match(line)
            if m:
                name = names.get(m.group(1), "")
                if "QueueWorker" in name and "4loop" in name:
                    worker = True
                callee = name if line.startswith("cfn=") else None
                continue
            if line.startswith("calls=") and callee is not None:
                if callee.endswith("TW") and ("prepareRead" in callee or "prepareWrite" in callee):
                    calls += int(line.split("=")[1].split()[0])
                callee = None
        yield total, calls, worker
runs = {}
for spec in sys.argv[4:]:
    label, scenario, secs, d = spec.split("|", 3)
    worker_ir = reqs = threads = 0
    for total, c, w in profiles(d):
        if w:
            worker_ir += total
            reqs += c
            threads += 1
    if reqs == 0 or threads == 0:
        print(f"  {label:<8} {scenario:<40} no counts (worker threads {threads}, requests {reqs})", file=sys.stderr)
        continue
    runs.setdefault((label, scenario), []).append((reqs, worker_ir, threads, float(secs)))
for (label, scenario), rs in runs.items():
    rs.sort()
    n, ir, threads, secs = rs[-1]
    row = {"label": label, "scenario": scenario, "requests": n, "worker_threads": threads,
           "worker_instructions": ir, "whole_run_instructions_per_request": ir / n,
           "runs": [{"seconds": s, "requests": a, "worker_instructions": b} for a, b, _, s in rs]}
    # marginal cost: the slope between the shortest and the longest window, so that
    # thread start, queue set-up and tear-down (a fixed cost) drop out
    if len(rs) >= 2 and rs[-1][0] > rs[0][0] * 1.5:
        row["instructions_per_request"] = (rs[-1][1] - rs[0][1]) / (rs[-1][0] - rs[0][0])
        how = f"slope over {rs[0][0]}..{n} requests"
    else:
        row["instructions_per_request"] = ir / n
        how = f"{n} requests, set-up included"
    rows.append(row)
    print(f"  {label:<8} {scenario:<40} {row['instructions_per_request']:>9.0f} instr/req"
          f"  ({how}; whole run {ir / n:.0f}; {threads} queue threads)")
json.dump(rows, open(out, "w"), indent=1)
by = {}
for r in rows:
    by.setdefault(r["scenario"], {})[r["label"]] = r["instructions_per_request"]
if old:
    for s, v in by.items():
        if new in v and old in v:
            print(f"  {s:<49} {new}/{old}: {v[new] / v[old]:.3f}x instructions per request")
for s, v in by.items():
    for lab in list(v):
        if lab.endswith("+log") and lab[:-4] in v:
            print(f"  {s:<49} {lab}/{lab[:-4]}: {v[lab] / v[lab[:-4]]:.3f}x instructions per request")
PY
