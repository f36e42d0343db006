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
W=$(mktemp -d /dev/shm/prof.XXXXXX)
trap 'kill $DPID 2>/dev/null; wait $DPID 2>/dev/null; rm -rf "$W"' EXIT
dd if=/dev/urandom of="$W/disk.img" bs=1M count=256 status=none
# shellcheck disable=SC2086
"$BIN" create prof --backend "file:$W/disk.img" --queues 4 --serial prof-dev --attach --log-level warning \
  ${PROFILE_OPTS:-} 2>"$W/daemon.log" &
DPID=$!
dev=
for _ in $(seq 300); do
  dev=$(ls /sys/bus/vdpa/devices/prof/virtio*/block 2>/dev/null | head -n 1)
  [[ -n $dev && -b /dev/$dev ]] && break
  dev=; sleep 0.1
done
[[ -n $dev ]] || { echo "no device: $(cat "$W/daemon.log")"; exit 1; }
fio_run() {
  fio --name=prof --filename=/dev/"$dev" --direct=1 --ioengine=io_uring --time_based --runtime="$1" \
    --size=256M "${FIO_ARGS[@]}" --output-format=json --output="$W/fio.json" >/dev/null 2>&1
}
fio_run 2 || { echo "fio failed on /dev/$dev"; exit 1; }   # warm-up
(fio_run "$SECS") & FPID=$!
sleep 1
perf record -a -g -F 499 -o "$W/perf.data" -- sleep $((SECS - 2)) 2>/dev/null
perf trace -s -p "$DPID" -o "$W/trace.txt" -- sleep 3 2>/dev/null
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
