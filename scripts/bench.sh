#!/usr/bin/env bash
# bench.sh - both benchmarks in one go:
#  1. the engine alone (no kernel): simulated drivers against the real queue
#     workers over the null backend and io_uring on tmpfs, requests/s and, under
#     valgrind --tool=callgrind, instructions per request (scripts/bench-engine.sh);
#  2. in the guest: fio on vduse-blk vs qemu-storage-daemon, images on ext4 on a
#     RAM block device and on tmpfs, same run, alternating, with CPU time per
#     request, plus null_blk (scripts/bench-guest.sh), then the full table
#     (scripts/bench-report.py).
# Results: bench/engine-bench.json, bench/engine-callgrind.json,
# bench/guest-bench.json, bench/guest-bench.txt, bench/guest-bench.png.
# Settings: bench-engine.sh's ENGINE_* and bench-guest.sh's BENCH_* variables
# (see the head of each script); the defaults take ~35 min, ~30 of them in the guest.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench
swift build -c release --product vduse-blk 2>&1 | tail -n 1
swift build -c release --product engine-bench 2>&1 | tail -n 1
echo "== engine alone (simulated driver, no kernel)"
bash scripts/bench-engine.sh | tee bench/engine-bench.txt
echo "== in the guest: vduse-blk vs qemu-storage-daemon"
bash scripts/bench-guest.sh
