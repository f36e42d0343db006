#!/usr/bin/env bash
# bench-guest.sh - vduse-blk against qemu-storage-daemon's vduse-blk export, in
# the same guest, on the same backing file (tmpfs), in the same run, alternating
# the two implementations job by job; plus the guest's null_blk as the
# block layer's ceiling. fio jobs: 4k randread QD1 (1 job), 4k randread QD32
# (4 jobs), 4k randwrite QD32 (4 jobs), 1 MiB sequential read and write (QD8).
# Prints a table (IOPS, MiB/s, mean and p99 latency, ratio vduse-blk/qsd per
# row), writes bench/guest-bench.json and renders bench/guest-bench.png (gnuplot).
#
#   scripts/bench-guest.sh            # host: build check, boot guest, run, render
# Env: BENCH_RUNTIME (s per fio job, default 8), BENCH_ROUNDS (default 2),
#      BENCH_PEERS='LABEL:OPTIONS;...' (more vduse-blk devices on the same file, each with
#      other create options, e.g. 'ring:--wait ring;umem:--bounce user;spin:--poll-us 50'), BENCH_QUEUES (default 4), BENCH_QUEUE_SIZE (256), BENCH_IMG_SIZE (512M),
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
  VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-2400} \
  VDUSE_VM_ENV="BENCH_PEERS BENCH_RUNTIME BENCH_ROUNDS BENCH_QUEUES BENCH_QUEUE_SIZE BENCH_IMG_SIZE VDUSE_BLK ${VDUSE_VM_ENV:-}" \
    bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/bench-guest.sh") --in-guest" || exit $?
  python3 - "$OUTDIR/raw" "$OUTDIR/guest-bench.json" <<'PY' || { echo "bench-guest: no results" >&2; exit 1; }
import glob, json, os, sys
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    impl, job, rnd = os.path.basename(path)[:-5].split("__")
    j = json.load(open(path))["jobs"][0]
    side = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
    clat = side.get("clat_ns", {})
    rows.append({"impl": impl, "job": job, "round": int(rnd[1:]), "iops": side["iops"],
                 "mib_s": side["bw_bytes"] / 1048576, "mean_us": clat.get("mean", 0) / 1000,
                 "p99_us": clat.get("percentile", {}).get("99.000000", 0) / 1000})
if not rows:
    sys.exit(1)
json.dump(rows, open(sys.argv[2], "w"), indent=1)
PY
  python3 "$HERE/bench-report.py" "$OUTDIR/guest-bench.json" "$OUTDIR/guest-bench.dat"
  if command -v gnuplot >/dev/null; then
    gnuplot -e "datafile='$OUTDIR/guest-bench.dat'; outfile='$OUTDIR/guest-bench.png'" "$HERE/bench-chart.gp" \
      && echo "chart: $OUTDIR/guest-bench.png"
  fi
  exit 0
fi

# ---- in the guest -----------------------------------------------------------
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# shellcheck source=scripts/lib/fio.sh
source "$HERE/lib/fio.sh"
RUNTIME=${BENCH_RUNTIME:-8} ROUNDS=${BENCH_ROUNDS:-2} QUEUES=${BENCH_QUEUES:-4}
QSIZE=${BENCH_QUEUE_SIZE:-256} IMG_SIZE=${BENCH_IMG_SIZE:-512M}
W=$(mktemp -d /dev/shm/bench.XXXXXX)
export TMPDIR=$W
IMG=$W/disk.img
NAME=benchdev
RAWDIR=$OUTDIR/raw      # on the shared repo dir: parsed on the host (python is slow under TCG)
rm -rf "$RAWDIR"; mkdir -p "$RAWDIR"
cleanup() {
  dev_stop_all 10
  rmmod null_blk 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
say() { echo "== $*" >&2; }

# Fill the image so reads hit real data (tmpfs, same file for both daemons).
dd if=/dev/urandom of="$IMG" bs=1M count=$(( $(numfmt --from=iec "$IMG_SIZE") >> 20 )) status=none

# Both daemons serve the same backing file at the same time (qsd with locking
# off), as NAME-v (vduse-blk) and NAME-q (qemu-storage-daemon); each fio job runs
# on one then the other (order alternating by round), so host noise hits both.
# vduse-blk takes a writer's lock on its image (one writer per image), so an
# extra vduse-blk peer (BENCH_PEERS) serves its own copy of the image.
# IMPL label -> vduse device name, and -> /dev name
declare -A DNAME=() DEVS=()
VDUSE_PEERS=0
# start_impl LABEL KIND DEVICE-NAME SERIAL [create options...]: DEVS[LABEL]=vdX
start_impl() {
  local label=$1 kind=$2 name=$3 serial=$4 img=$IMG; shift 4
  DNAME[$label]=$name
  if [[ $kind == vduse-blk ]]; then
    if ((VDUSE_PEERS++ > 0)); then img=$W/disk-$label.img; cp "$IMG" "$img"; fi
  fi
  DEV_PEER=$kind DEV_QSD_FILE_OPTS=locking=off dev_start "$name" "$img" --queues "$QUEUES" --queue-size "$QSIZE" \
    --serial "$serial" --engine uring --log-level warning "$@" || return 1
  DEVS[$label]=${DDEV[$name]}
}
start_failed() {  # LABEL [WHAT]: the message bench-guest always printed, then exit
  echo "cannot start ${2:-$1}: $(cat "${DLOG[${DNAME[$1]}]}" 2>/dev/null)" >&2; exit 1
}

JOBS=("randread-4k-qd1:--rw=randread --bs=4k --iodepth=1 --numjobs=1"
      "randread-4k-qd32x4:--rw=randread --bs=4k --iodepth=32 --numjobs=4"
      "randwrite-4k-qd32x4:--rw=randwrite --bs=4k --iodepth=32 --numjobs=4"
      "seqread-1m:--rw=read --bs=1M --iodepth=8 --numjobs=1"
      "seqwrite-1m:--rw=write --bs=1M --iodepth=8 --numjobs=1")

run_job() {  # $1 impl label, $2 device, $3 round, $4 job spec; fio's JSON goes to $RAWDIR
  local name=${4%%:*} args=${4#*:} out=$RAWDIR/$1__${4%%:*}__r$3.json
  # shellcheck disable=SC2086
  FIO_TIMEOUT=$((RUNTIME + 60)) fio_dev "$2" --name="$name" --ioengine=io_uring --time_based \
      --runtime="$RUNTIME" --ramp_time=1 --group_reporting --size=256M $args \
      --output-format=json --output="$out" 2>"$W/fio.err" \
    || { echo "fio $name on $1 failed: $(cat "$W/fio.err")" >&2; rm -f "$out"; return; }
  echo "   $1 $name round $3 done" >&2
}

say "guest: $(nproc) vCPUs, image $IMG_SIZE on tmpfs, $QUEUES queues x $QSIZE"
start_impl vduse-blk vduse-blk "$NAME-v" bench-vduse || start_failed vduse-blk
start_impl qsd qsd "$NAME-q" bench-qsd || start_failed qsd
IMPLS=(vduse-blk qsd)
IFS=';' read -r -a PEERS <<<"${BENCH_PEERS:-}"
for peer in "${PEERS[@]}"; do
  [[ -n $peer ]] || continue
  label=vduse-${peer%%:*} opts=${peer#*:} k=${#IMPLS[@]}
  # shellcheck disable=SC2086
  start_impl "$label" vduse-blk "$NAME-p$k" "bench-p$k" $opts || start_failed "$label" "$label ($opts)"
  IMPLS+=("$label")
done
for impl in "${IMPLS[@]}"; do [[ -n ${DEVS[$impl]} ]] || { echo "no device for $impl" >&2; exit 1; }; done
say "vduse-blk on /dev/${DEVS[vduse-blk]}, qemu-storage-daemon on /dev/${DEVS[qsd]}"
for round in $(seq "$ROUNDS"); do
  order=("${IMPLS[@]}")
  ((round % 2 == 0)) && { order=(); for ((k = ${#IMPLS[@]} - 1; k >= 0; k--)); do order+=("${IMPLS[k]}"); done; }
  say "round $round (${order[*]})"
  for spec in "${JOBS[@]}"; do
    for impl in "${order[@]}"; do run_job "$impl" "${DEVS[$impl]}" "$round" "$spec"; done
  done
done
dev_stop_all 10
if modprobe null_blk nr_devices=1 queue_mode=2 submit_queues="$QUEUES" gb=1 2>/dev/null; then
  say "null_blk (block layer ceiling)"
  for spec in "${JOBS[@]}"; do run_job null_blk nullb0 1 "$spec"; done
  rmmod null_blk
else
  echo "null_blk not available: ceiling row skipped" >&2
fi
