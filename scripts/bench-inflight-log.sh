#!/usr/bin/env bash
# bench-inflight-log.sh - what the in-flight log (issue 14) costs the guest:
# an A/B in one guest between two vduse-blk devices with the same options,
# one with the log (the default) and one started with the hidden benchmark
# flag --no-inflight-log (such a device cannot be adopted after a crash).
# Each serves its own copy of the image on ext4 on a brd RAM disk; every fio
# job runs on one device then the other, the order reversed every round
# (scripts/bench-guest.sh with BENCH_QSD=0, BENCH_PEERS='nolog:--no-inflight-log').
# Prints, per job, the medians of each side and the median of the per-round
# log/no-log ratios with their min-max: IOPS, daemon CPU per request, mean
# and p99 completion latency. Results: bench/inflight-log-ab.{json,txt}.
#
#   swift build -c release && scripts/bench-inflight-log.sh
#
# Env: LOGAB_JOBS (default 'randread-4k-qd1 randwrite-4k-qd1 randread-4k-qd32
#      randwrite-4k-qd32': 4 KiB, one fio job each; the QD32x4 jobs of
#      bench-guest.sh can be named too), BENCH_ROUNDS (5), BENCH_RUNTIME (5 s),
#      BENCH_QUEUES (4), and the rest of bench-guest.sh's environment.
# Numbers are measured under software emulation (TCG): compare ratios only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export BENCH_FS=ext4 BENCH_ENGINES=uring BENCH_QSD=0 BENCH_NULL_BLK=0
export BENCH_PEERS='nolog:--no-inflight-log' BENCH_RESULT=inflight-log-ab
export BENCH_JOBS=${LOGAB_JOBS:-randread-4k-qd1 randwrite-4k-qd1 randread-4k-qd32 randwrite-4k-qd32}
export BENCH_ROUNDS=${BENCH_ROUNDS:-5}
bash "$HERE/bench-guest.sh" >/dev/null
python3 "$HERE/bench-report.py" "$REPO/bench/inflight-log-ab.json" --ab vduse-uring nolog-uring \
  | tee "$REPO/bench/inflight-log-ab.txt"
