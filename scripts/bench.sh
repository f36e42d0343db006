#!/usr/bin/env bash
# bench.sh - both benchmarks in one go:
#  1. the engine alone (no kernel): simulated drivers against the real queue
#     workers over the null backend and io_uring on tmpfs (engine-bench);
#  2. in the guest: fio on vduse-blk vs qemu-storage-daemon, same image, same
#     run, alternating, plus null_blk (scripts/bench-guest.sh).
# Results: bench/engine-bench.json, bench/guest-bench.json, bench/guest-bench.png.
#   BENCH_ENGINE_SECONDS (default 2) and bench-guest.sh's BENCH_* settings.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench
swift build -c release --product vduse-blk 2>&1 | tail -n 1
swift build -c release --product engine-bench 2>&1 | tail -n 1
echo "== engine alone (simulated driver, no kernel)"
.build/release/engine-bench --seconds "${BENCH_ENGINE_SECONDS:-2}" --json bench/engine-bench.json
echo "== in the guest: vduse-blk vs qemu-storage-daemon"
bash scripts/bench-guest.sh
