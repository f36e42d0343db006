#!/usr/bin/env bash
# bench-guest.sh - vduse-blk against qemu-storage-daemon's vduse-blk export, in
# the same guest, on the same backing file (tmpfs), in the same run, alternating
# the two implementations round by round; plus the guest's null_blk as the
# block layer's ceiling. fio jobs: 4k randread QD1 (1 job), 4k randread QD32
# (4 jobs), 4k randwrite QD32 (4 jobs), 1 MiB sequential read and write (QD8).
# Prints a table (IOPS, MiB/s, mean and p99 latency, ratio vduse-blk/qsd per
# row), writes bench/guest-bench.json and renders bench/guest-bench.png (gnuplot).
#
#   scripts/bench-guest.sh            # host: build check, boot guest, run, render
# Env: BENCH_RUNTIME (s per fio job, default 8), BENCH_ROUNDS (default 2),
#      BENCH_QUEUES (default 4), BENCH_QUEUE_SIZE (256), BENCH_IMG_SIZE (512M),
#      VDUSE_BLK (binary, default .build/release/vduse-blk)
# Numbers are measured under software emulation (TCG): compare ratios only.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUTDIR=$REPO/bench
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN

if [[ ${1:-} != --in-guest ]]; then
  [[ -x $BIN ]] || { echo "bench-guest: build first: swift build -c release" >&2; exit 1; }
  mkdir -p "$OUTDIR"
  VDUSE_VM_MODULES="null_blk ${VDUSE_VM_MODULES:-}" VDUSE_VM_MEM=${VDUSE_VM_MEM:-3G} \
  VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-1200} \
  VDUSE_VM_ENV="BENCH_RUNTIME BENCH_ROUNDS BENCH_QUEUES BENCH_QUEUE_SIZE BENCH_IMG_SIZE VDUSE_BLK ${VDUSE_VM_ENV:-}" \
    bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/bench-guest.sh") --in-guest" || exit $?
  [[ -s $OUTDIR/guest-bench.json ]] || { echo "bench-guest: no results" >&2; exit 1; }
  python3 "$HERE/bench-report.py" "$OUTDIR/guest-bench.json" "$OUTDIR/guest-bench.dat"
  if command -v gnuplot >/dev/null; then
    gnuplot -e "datafile='$OUTDIR/guest-bench.dat'; outfile='$OUTDIR/guest-bench.png'" "$HERE/bench-chart.gp" \
      && echo "chart: $OUTDIR/guest-bench.png"
  fi
  exit 0
fi

# ---- in the guest -----------------------------------------------------------
RUNTIME=${BENCH_RUNTIME:-8} ROUNDS=${BENCH_ROUNDS:-2} QUEUES=${BENCH_QUEUES:-4}
QSIZE=${BENCH_QUEUE_SIZE:-256} IMG_SIZE=${BENCH_IMG_SIZE:-512M}
W=$(mktemp -d /dev/shm/bench.XXXXXX)
export TMPDIR=$W
IMG=$W/disk.img
NAME=benchdev
RAW=$W/results.jsonl
: >"$RAW"
daemon=
cleanup() {
  vdpa dev del "$NAME" 2>/dev/null
  [[ -z $daemon ]] || { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; }
  rmmod null_blk 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
say() { echo "== $*" >&2; }

# Fill the image so reads hit real data (tmpfs, same file for both daemons).
dd if=/dev/urandom of="$IMG" bs=1M count=$(( $(numfmt --from=iec "$IMG_SIZE") >> 20 )) status=none

wait_dev() {  # $1: how to find it (serial:S or vdpa:NAME)
  local dev= i
  for i in $(seq 300); do
    case $1 in
      serial:*) for s in /sys/block/vd*/serial; do
                  [[ -r $s && $(cat "$s" 2>/dev/null) == "${1#serial:}" ]] && dev=$(basename "$(dirname "$s")"); done ;;
      vdpa:*) dev=$(ls /sys/bus/vdpa/devices/"${1#vdpa:}"/virtio*/block 2>/dev/null | head -n1) ;;
    esac
    [[ -n $dev && -b /dev/$dev ]] && { echo "$dev"; return 0; }
    sleep 0.1
  done
  return 1
}

start_impl() {  # $1: vduse-blk | qsd ; sets DEV to the block device name
  case $1 in
    vduse-blk)
      "$BIN" create "$NAME" --backend "file:$IMG" --queues "$QUEUES" --queue-size "$QSIZE" \
        --serial benchserial --engine uring --attach --log-level warning >"$W/daemon.log" 2>&1 &
      daemon=$!
      DEV=$(wait_dev serial:benchserial) ;;
    qsd)
      qemu-storage-daemon \
        --blockdev driver=file,node-name=file0,filename="$IMG",cache.direct=off,aio=io_uring \
        --export type=vduse-blk,id=exp0,node-name=file0,name="$NAME",writable=on,num-queues="$QUEUES",queue-size="$QSIZE" \
        >"$W/daemon.log" 2>&1 &
      daemon=$!
      for _ in $(seq 200); do [[ -c /dev/vduse/$NAME ]] && break; sleep 0.05; done
      vdpa dev add name "$NAME" mgmtdev vduse || return 1
      DEV=$(wait_dev vdpa:"$NAME") ;;
  esac
}

stop_impl() {
  vdpa dev del "$NAME" 2>/dev/null
  kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; daemon=
  for _ in $(seq 100); do [[ -e /dev/vduse/$NAME ]] || break; sleep 0.05; done
}

JOBS=("randread-4k-qd1:--rw=randread --bs=4k --iodepth=1 --numjobs=1"
      "randread-4k-qd32x4:--rw=randread --bs=4k --iodepth=32 --numjobs=4"
      "randwrite-4k-qd32x4:--rw=randwrite --bs=4k --iodepth=32 --numjobs=4"
      "seqread-1m:--rw=read --bs=1M --iodepth=8 --numjobs=1"
      "seqwrite-1m:--rw=write --bs=1M --iodepth=8 --numjobs=1")

run_jobs() {  # $1 impl label, $2 device, $3 round
  local spec name args
  for spec in "${JOBS[@]}"; do
    name=${spec%%:*}; args=${spec#*:}
    # shellcheck disable=SC2086
    timeout -k 5 $((RUNTIME + 60)) fio --name="$name" --filename=/dev/"$2" --direct=1 --ioengine=io_uring --time_based \
        --runtime="$RUNTIME" --ramp_time=1 --group_reporting --size=256M $args \
        --output-format=json >"$W/fio.json" 2>"$W/fio.err" \
      || { echo "fio $name on $1 failed: $(cat "$W/fio.err")" >&2; continue; }
    python3 - "$1" "$name" "$3" "$W/fio.json" >>"$RAW" <<'PY'
import json, sys
impl, job, rnd, path = sys.argv[1:5]
j = json.load(open(path))["jobs"][0]
side = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
clat = side.get("clat_ns", {})
pct = clat.get("percentile", {})
print(json.dumps({"impl": impl, "job": job, "round": int(rnd), "iops": side["iops"],
                  "mib_s": side["bw_bytes"] / 1048576, "mean_us": clat.get("mean", 0) / 1000,
                  "p99_us": pct.get("99.000000", 0) / 1000}))
PY
    echo "   $1 $name: $(tail -n1 "$RAW")" >&2
  done
}

say "guest: $(nproc) vCPUs, image $IMG_SIZE on tmpfs, $QUEUES queues x $QSIZE"
for round in $(seq "$ROUNDS"); do
  order=(vduse-blk qsd); ((round % 2 == 0)) && order=(qsd vduse-blk)
  for impl in "${order[@]}"; do
    say "round $round: $impl"
    DEV=
    start_impl "$impl" || { echo "cannot start $impl: $(cat "$W/daemon.log")" >&2; exit 1; }
    run_jobs "$impl" "$DEV" "$round"
    stop_impl
  done
done
if modprobe null_blk nr_devices=1 queue_mode=2 submit_queues="$QUEUES" gb=1 2>/dev/null; then
  say "null_blk (block layer ceiling)"
  run_jobs null_blk nullb0 1
  rmmod null_blk
else
  echo "null_blk not available: ceiling row skipped" >&2
fi
mkdir -p "$OUTDIR"
python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))' "$RAW" \
  >"$OUTDIR/guest-bench.json"
