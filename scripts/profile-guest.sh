#!/usr/bin/env bash
# profile-guest.sh - where the time goes for one fio job on a vduse-blk device
# in the guest: a system-wide perf profile (cpu-clock samples; TCG has no PMU)
# taken while fio runs, summarised by command and by symbol, plus the daemon's
# syscalls per request (perf trace). Answers "is it the daemon or the kernel?"
# for a benchmark row.
#
#   scripts/profile-guest.sh [FIO ARGS...]     default: 4k randread QD1, 1 job
# Env: PROFILE_SECONDS (default 10), PROFILE_OPTS (extra vduse-blk create options),
#      VDUSE_BLK (binary, default .build/release/vduse-blk).
# Output: bench/profile/{report.txt,perf.data}; the report is printed too.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN
OUT=$REPO/bench/profile

if [[ ${1:-} != --in-guest ]]; then
  [[ -x $BIN ]] || { echo "profile-guest: build first: swift build -c release" >&2; exit 1; }
  command -v perf >/dev/null || { echo "profile-guest: needs perf (apt install linux-perf)" >&2; exit 1; }
  mkdir -p "$OUT"
  VDUSE_VM_ENV="PROFILE_SECONDS PROFILE_OPTS VDUSE_BLK ${VDUSE_VM_ENV:-}" \
    bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/profile-guest.sh") --in-guest $(printf '%q ' "$@")"
  exit $?
fi
shift
SECS=${PROFILE_SECONDS:-10}
FIO_ARGS=()
for a in "$@"; do [[ -n $a ]] && FIO_ARGS+=("$a"); done
((${#FIO_ARGS[@]})) || FIO_ARGS=(--rw=randread --bs=4k --iodepth=1 --numjobs=1)
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# shellcheck source=scripts/lib/fio.sh
source "$HERE/lib/fio.sh"
W=$(mktemp -d /dev/shm/prof.XXXXXX)
trap 'dev_stop_all; rm -rf "$W"' EXIT
dd if=/dev/urandom of="$W/disk.img" bs=1M count=256 status=none
# shellcheck disable=SC2086
dev_start prof "$W/disk.img" --queues 4 --serial prof-dev --log-level warning ${PROFILE_OPTS:-}
dev=${DDEV[prof]}
[[ -n $dev ]] || { echo "no device: $(cat "${DLOG[prof]}")"; exit 1; }
DAEMON_PID=${DPID[prof]}
fio_run() {
  fio_dev "$dev" --name=prof --ioengine=io_uring --time_based --runtime="$1" \
    --size=256M "${FIO_ARGS[@]}" --output-format=json --output="$W/fio.json" >/dev/null 2>&1
}
fio_run 2 || { echo "fio failed on /dev/$dev"; exit 1; }   # warm-up
(fio_run "$SECS") & FPID=$!
sleep 1
perf record -a -g -F 499 -o "$W/perf.data" -- sleep $((SECS - 2)) 2>/dev/null
perf trace -s -p "$DAEMON_PID" -o "$W/trace.txt" -- sleep 3 2>/dev/null
wait $FPID
ios=$(python3 -c "import json,sys; j=json.load(open('$W/fio.json'))['jobs'][0]; s=j['read'] if j['read']['io_bytes'] else j['write']; print(int(s['total_ios']), round(s['iops']))" 2>/dev/null)
{
  echo "fio ${FIO_ARGS[*]} on /dev/$dev for ${SECS}s: total_ios iops = $ios"
  echo "== samples by command (all CPUs)"
  perf report -i "$W/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 15
  echo "== top symbols (all CPUs)"
  perf report -i "$W/perf.data" --no-children --sort comm,dso,symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 40
  echo "== the daemon's syscalls over 3 s (perf trace -s)"
  cat "$W/trace.txt"
} | tee "$OUT/report.txt"
cp "$W/perf.data" "$OUT/perf.data" 2>/dev/null
exit 0
