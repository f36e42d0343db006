#!/usr/bin/env bash
# bench-guest.sh - vduse-blk against qemu-storage-daemon's vduse-blk export, in
# the same guest, in the same run, alternating the daemons job by job, with the
# image on ext4 on a block device (a brd RAM disk: what users have) and on tmpfs;
# plus the guest's null_blk as the block layer's ceiling.
#
# Per file system and per engine configuration (BENCH_ENGINES) one vduse-blk
# and one qemu-storage-daemon with matching settings serve the same image file
# (qemu-storage-daemon with locking=off, beside vduse-blk's exclusive lock);
# every fio job runs on each device in turn, the order reversed every round.
# fio jobs (4 KiB: randread QD1 x 1 job, randread QD32 x 4 jobs, randwrite
# QD32 x 4, 70/30 randrw QD32 x 4; 1 MiB: sequential read and write, QD8).
# Beside IOPS/bandwidth and fio's completion latency (mean, p99), each job
# records the daemon's CPU time (utime+stime from /proc/PID/stat, all threads)
# and the bytes the device moved (/sys/block/vdX/stat) over the fio run, so the
# report shows CPU time per request (per bs-sized request) for both daemons.
# Results: bench/raw/ (fio JSON + .cpu files), bench/guest-bench.json (one row
# per fs, daemon, job and round), and the table of scripts/bench-report.py
# (medians, per-round ratio min-max), also in bench/guest-bench.txt.
#
#   scripts/bench-guest.sh            # host: boot the guest, run, report
#   python3 scripts/bench-report.py bench/guest-bench.json   # the table again
#
# Env (defaults fit ~30 min of TCG guest time: 2 fs x 5 rounds x 6 jobs x the
# uring pair, + the baseline on the 4 KiB rows when given):
#   BENCH_FS='ext4 tmpfs'     file systems, in that order
#   BENCH_ENGINES='uring'     engine configurations, each a vduse-blk /
#       qemu-storage-daemon pair: uring (vduse-blk --engine uring; qsd
#       aio=io_uring,cache.direct=off), uring-direct (--engine uring --direct;
#       aio=io_uring,cache.direct=on), aio (--engine aio --direct; aio=native,
#       cache.direct=on: libaio is only asynchronous with O_DIRECT, and qsd
#       refuses aio=native without it), sync (--engine sync; aio=threads,
#       cache.direct=off), sync-direct (--engine sync --direct; aio=threads,
#       cache.direct=on). Direct configurations are skipped on a file system
#       that refuses O_DIRECT. All of them: 'uring uring-direct aio sync'.
#   BENCH_ROUNDS=5  BENCH_RUNTIME=5 (s per fio job, after 1 s ramp)
#   BENCH_JOBS='a b'          only the fio jobs whose names are listed (see JOBS;
#       EXTRA_JOBS run only when listed here)
#   BENCH_RESULT=guest-bench  base name of the result files under bench/
#   BENCH_QSD=1               0: no qemu-storage-daemon (A/B runs between
#       vduse-blk configurations, e.g. scripts/bench-inflight-log.sh)
#   BENCH_BASELINE_BIN=PATH   an extra vduse-blk from another binary (e.g. an
#       older build), with the first engine configuration's options, labelled
#       BENCH_BASELINE_LABEL (default before), on BENCH_BASELINE_JOBS (default
#       the 4 KiB jobs); the report adds its ratios to qsd and new/baseline.
#   BENCH_PEERS='LABEL:OPTIONS;...'  more vduse-blk devices (first engine
#       configuration plus OPTIONS, e.g. 'umem:--bounce user;spin:--poll-us 50')
#   BENCH_NULL_BLK=1  (0: skip the null_blk ceiling)
#   BENCH_QUEUES=4  BENCH_QUEUE_SIZE=256  BENCH_IMG_SIZE=256M
#   VDUSE_BLK (binary, default .build/release/vduse-blk)
# Every vduse-blk daemon serves its own copy of the image (one writer per image).
# Numbers are measured under software emulation (TCG): compare ratios only.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUTDIR=$REPO/bench
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN

if [[ ${1:-} != --in-guest ]]; then
  [[ -x $BIN ]] || { echo "bench-guest: build first: swift build -c release" >&2; exit 1; }
  if [[ -n ${BENCH_BASELINE_BIN:-} ]]; then
    [[ -x $BENCH_BASELINE_BIN ]] || { echo "bench-guest: BENCH_BASELINE_BIN $BENCH_BASELINE_BIN is not executable" >&2; exit 1; }
    # the guest sees the host's / read-only: any absolute path works there
    BENCH_BASELINE_BIN=$(cd "$(dirname "$BENCH_BASELINE_BIN")" && pwd)/$(basename "$BENCH_BASELINE_BIN")
  fi
  mkdir -p "$OUTDIR"
  t0=$SECONDS
  VDUSE_VM_MODULES="null_blk brd ${VDUSE_VM_MODULES:-}" VDUSE_VM_MEM=${VDUSE_VM_MEM:-4G} \
  VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-3600} \
  VDUSE_VM_ENV="BENCH_PEERS BENCH_RUNTIME BENCH_ROUNDS BENCH_QUEUES BENCH_QUEUE_SIZE BENCH_IMG_SIZE VDUSE_BLK
                BENCH_FS BENCH_ENGINES BENCH_JOBS BENCH_BASELINE_BIN BENCH_BASELINE_LABEL BENCH_BASELINE_JOBS
                BENCH_NULL_BLK BENCH_QSD ${VDUSE_VM_ENV:-}" \
    bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/bench-guest.sh") --in-guest" || exit $?
  RESULT=${BENCH_RESULT:-guest-bench}
  echo "bench-guest: guest ran $((SECONDS - t0)) s" >&2
  python3 "$HERE/bench-report.py" --collect "$OUTDIR/raw" "$OUTDIR/$RESULT.json" \
    || { echo "bench-guest: no results" >&2; exit 1; }
  python3 "$HERE/bench-report.py" "$OUTDIR/$RESULT.json" --dat "$OUTDIR/$RESULT.dat" \
    | tee "$OUTDIR/$RESULT.txt"
  if command -v gnuplot >/dev/null && grep -q '^"' "$OUTDIR/$RESULT.dat" 2>/dev/null; then   # rows need qsd
    gnuplot -e "datafile='$OUTDIR/$RESULT.dat'; outfile='$OUTDIR/$RESULT.png'" "$HERE/bench-chart.gp" \
      && echo "chart: $OUTDIR/$RESULT.png"
  fi
  exit 0
fi

# ---- in the guest -----------------------------------------------------------
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# shellcheck source=scripts/lib/fio.sh
source "$HERE/lib/fio.sh"
RUNTIME=${BENCH_RUNTIME:-5} ROUNDS=${BENCH_ROUNDS:-5} QUEUES=${BENCH_QUEUES:-4}
QSIZE=${BENCH_QUEUE_SIZE:-256} IMG_SIZE=${BENCH_IMG_SIZE:-256M}
read -r -a FSES <<<"${BENCH_FS:-ext4 tmpfs}"
read -r -a ENGINES <<<"${BENCH_ENGINES:-uring}"
BASE_BIN=${BENCH_BASELINE_BIN:-} BASE_LABEL=${BENCH_BASELINE_LABEL:-before}
W=$(mktemp -d /dev/shm/bench.XXXXXX)
export TMPDIR=$W
SRC=$W/source.img       # random data, copied for every daemon
NAME=bench
RAWDIR=$OUTDIR/raw      # on the shared repo dir: parsed on the host (python is slow under TCG)
rm -rf "$RAWDIR"; mkdir -p "$RAWDIR"
MNT=$W/ext4
cleanup() {
  dev_stop_all 10
  mountpoint -q "$MNT" && umount "$MNT"
  rmmod brd 2>/dev/null
  rmmod null_blk 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
say() { echo "== [$SECONDS s] $*" >&2; }

JOBS=("randread-4k-qd1:--rw=randread --bs=4k --iodepth=1 --numjobs=1"
      "randread-4k-qd32x4:--rw=randread --bs=4k --iodepth=32 --numjobs=4"
      "randwrite-4k-qd32x4:--rw=randwrite --bs=4k --iodepth=32 --numjobs=4"
      "randrw70-4k-qd32x4:--rw=randrw --rwmixread=70 --bs=4k --iodepth=32 --numjobs=4"
      "seqread-1m:--rw=read --bs=1M --iodepth=8 --numjobs=1"
      "seqwrite-1m:--rw=write --bs=1M --iodepth=8 --numjobs=1")
# run only when named in BENCH_JOBS
EXTRA_JOBS=("randwrite-4k-qd1:--rw=randwrite --bs=4k --iodepth=1 --numjobs=1"
            "randread-4k-qd32:--rw=randread --bs=4k --iodepth=32 --numjobs=1"
            "randwrite-4k-qd32:--rw=randwrite --bs=4k --iodepth=32 --numjobs=1")
if [[ -n ${BENCH_JOBS:-} ]]; then
  keep=()
  for spec in "${JOBS[@]}" "${EXTRA_JOBS[@]}"; do [[ " $BENCH_JOBS " == *" ${spec%%:*} "* ]] && keep+=("$spec"); done
  JOBS=("${keep[@]}")
fi
((${#JOBS[@]})) || { echo "no fio job left (BENCH_JOBS=$BENCH_JOBS)" >&2; exit 1; }
BASE_JOBS=${BENCH_BASELINE_JOBS:-randread-4k-qd1 randread-4k-qd32x4 randwrite-4k-qd32x4 randrw70-4k-qd32x4}

# engine configuration -> vduse-blk options, and qemu-storage-daemon file options
declare -A VOPTS=([uring]="--engine uring" [uring-direct]="--engine uring --direct"
                  [aio]="--engine aio --direct" [sync]="--engine sync" [sync-direct]="--engine sync --direct")
declare -A QOPTS=([uring]="aio=io_uring,cache.direct=off" [uring-direct]="aio=io_uring,cache.direct=on"
                  [aio]="aio=native,cache.direct=on" [sync]="aio=threads,cache.direct=off"
                  [sync-direct]="aio=threads,cache.direct=on")
for e in "${ENGINES[@]}"; do [[ -n ${VOPTS[$e]:-} ]] || { echo "unknown engine configuration $e" >&2; exit 1; }; done

# the daemon behind each label: DNAME[label] (vduse device name), DEVS[label] (vdX)
declare -A DNAME=() DEVS=() LJOBS=()
IMPLS=()
NDEV=0
# start_impl LABEL KIND IMG [create options...]
start_impl() {
  local label=$1 kind=$2 img=$3 name=$NAME$((++NDEV)); shift 3
  DNAME[$label]=$name
  local common=(--queues "$QUEUES" --queue-size "$QSIZE" --serial "bench-$NDEV" --log-level warning)
  if [[ $kind == qsd ]]; then
    DEV_PEER=qsd DEV_QSD_FILE_OPTS="locking=off,$1" dev_start "$name" "$img" "${common[@]}" || return 1
  else
    DEV_PEER=vduse-blk BIN=${BINOF:-$BIN} dev_start "$name" "$img" "${common[@]}" "$@" || return 1
  fi
  DEVS[$label]=${DDEV[$name]}
  IMPLS+=("$label")
}
start_failed() { echo "cannot start $1: $(cat "${DLOG[${DNAME[$1]}]}" 2>/dev/null)" >&2; exit 1; }

cpu_ticks() {  # PID: utime+stime of the whole process, in clock ticks
  local line rest f
  read -r line <"/proc/$1/stat" || { echo 0; return; }
  rest=${line##*) }
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}
others_ticks() {  # PID: "N TICKS", the number of the other daemons and their CPU ticks (idle check)
  local n=0 ticks=0 d
  for d in "${DPID[@]}"; do
    [[ -n $d && $d != "$1" && -e /proc/$d/stat ]] || continue
    ((n++, ticks += $(cpu_ticks "$d")))
  done
  echo "$n $ticks"
}
dev_sectors() {  # vdX: "ios sectors" (reads + writes) so far
  local s
  read -r -a s <"/sys/block/$1/stat"
  echo "$((s[0] + s[4])) $((s[2] + s[6]))"
}

run_job() {  # FS LABEL DEV ROUND JOBSPEC [PID [DEVICE]]: fio's JSON and the CPU record go to $RAWDIR
  local fs=$1 label=$2 dev=$3 round=$4 name=${5%%:*} args=${5#*:} pid=${6:-} devname=${7:-}
  local out=$RAWDIR/${fs}__${label}__${name}__r$round.json c0=0 c1=0 d0 d1 t0 t1 i0 s0 i1 s1 o0 o1 n1
  [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
  o0=$(others_ticks "$pid")
  # vduse-blk's own counters (service time per request inside the daemon) around the job
  [[ -n $devname && ${DKIND[$devname]:-} == vduse-blk ]] && "$BIN" stats "$devname" --json >"${out%.json}.svc0" 2>/dev/null
  d0=$(dev_sectors "$dev"); t0=$(date +%s%N)
  # shellcheck disable=SC2086
  FIO_TIMEOUT=$((RUNTIME + 60)) fio_dev "$dev" --name="$name" --ioengine=io_uring --time_based \
      --runtime="$RUNTIME" --ramp_time=1 --group_reporting --size="$IMG_SIZE" $args \
      --output-format=json --output="$out" 2>"$W/fio.err" \
    || { echo "fio $name on $label ($fs) failed: $(cat "$W/fio.err")" >&2; rm -f "$out"; return; }
  t1=$(date +%s%N); d1=$(dev_sectors "$dev")
  [[ -e ${out%.json}.svc0 ]] && "$BIN" stats "$devname" --json >"${out%.json}.svc1" 2>/dev/null
  [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
  read -r n1 o1 <<<"$(others_ticks "$pid")"; read -r _ o0 <<<"$o0"
  local bs=4096; [[ $args == *--bs=1M* ]] && bs=1048576
  read -r i0 s0 <<<"$d0"; read -r i1 s1 <<<"$d1"
  echo "{\"cpu_ticks\": $((c1 - c0)), \"clk_tck\": $(getconf CLK_TCK), \"dev_ios\": $((i1 - i0)), \"dev_bytes\": $(((s1 - s0) * 512)), \"bs\": $bs, \"wall_ns\": $((t1 - t0)), \"idle_daemons\": $n1, \"idle_ticks\": $((o1 - o0))}" \
    >"${out%.json}.cpu"
  echo "   $fs $label $name round $round: $(awk -v t=$((c1 - c0)) -v b=$(((s1 - s0) * 512)) -v bs=$bs -v hz="$(getconf CLK_TCK)" \
      'BEGIN { if (b > 0) printf "%.1f us CPU/request", t / hz * 1e6 / (b / bs); else printf "no I/O" }')" >&2
}

direct_ok() { dd if=/dev/zero of="$1/.direct-probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; local r=$?; rm -f "$1/.direct-probe"; return $r; }

prepare_fs() {  # FS COPIES: sets DIR (where the images go)
  local fs=$1 copies=$2 mib
  mib=$(($(numfmt --from=iec "$IMG_SIZE") >> 20))
  case $fs in
    tmpfs) DIR=$W/tmpfs; mkdir -p "$DIR" ;;
    ext4)
      DIR=$MNT; mkdir -p "$MNT"
      # room for every copy + ext4's metadata and journal
      modprobe brd rd_nr=1 rd_size=$(((copies * mib + mib / 8 + 96) * 1024)) || { echo "modprobe brd failed" >&2; return 1; }
      mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/ram0 || return 1
      mount -o noatime /dev/ram0 "$MNT" || return 1 ;;
    *) echo "unknown file system $fs" >&2; return 1 ;;
  esac
}
release_fs() {
  dev_stop_all 10
  IMPLS=()
  if mountpoint -q "$MNT"; then umount "$MNT"; rmmod brd; fi
  rm -rf "$W/tmpfs"
}

say "guest: $(nproc) vCPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, image $IMG_SIZE, $QUEUES queues x $QSIZE, fs: ${FSES[*]}, engines: ${ENGINES[*]}, $ROUNDS rounds x ${RUNTIME}s"
dd if=/dev/urandom of="$SRC" bs=1M count=$(($(numfmt --from=iec "$IMG_SIZE") >> 20)) status=none
IFS=';' read -r -a PEERS <<<"${BENCH_PEERS:-}"
for fs in "${FSES[@]}"; do
  copies=$((${#ENGINES[@]} + ${#PEERS[@]} + 1))
  prepare_fs "$fs" "$copies" || { echo "cannot prepare $fs" >&2; exit 1; }
  engs=()
  for e in "${ENGINES[@]}"; do
    if [[ $e == *direct* || $e == aio ]] && ! direct_ok "$DIR"; then
      echo "$fs refuses O_DIRECT: $e skipped" >&2; continue
    fi
    engs+=("$e")
  done
  for e in "${engs[@]}"; do
    cp "$SRC" "$DIR/$e.img"
    # shellcheck disable=SC2086
    start_impl "vduse-$e" vduse-blk "$DIR/$e.img" ${VOPTS[$e]} || start_failed "vduse-$e"
    [[ ${BENCH_QSD:-1} == 1 ]] || continue
    start_impl "qsd-$e" qsd "$DIR/$e.img" "${QOPTS[$e]}" || start_failed "qsd-$e"
  done
  e0=${engs[0]:-}
  [[ -n $e0 ]] || { echo "no engine configuration for $fs" >&2; release_fs; continue; }
  if [[ -n $BASE_BIN ]]; then
    cp "$SRC" "$DIR/base.img"
    # shellcheck disable=SC2086
    BINOF=$BASE_BIN start_impl "$BASE_LABEL-$e0" vduse-blk "$DIR/base.img" ${VOPTS[$e0]} || start_failed "$BASE_LABEL-$e0"
    LJOBS[$BASE_LABEL-$e0]=$BASE_JOBS
  fi
  for peer in "${PEERS[@]}"; do
    [[ -n $peer ]] || continue
    label=${peer%%:*}-$e0 opts=${peer#*:}
    cp "$SRC" "$DIR/p$NDEV.img"
    # shellcheck disable=SC2086
    start_impl "$label" vduse-blk "$DIR/p$NDEV.img" ${VOPTS[$e0]} $opts || start_failed "$label ($opts)"
  done
  for impl in "${IMPLS[@]}"; do [[ -n ${DEVS[$impl]} ]] || { echo "no device for $impl" >&2; exit 1; }; done
  say "$fs: $(for impl in "${IMPLS[@]}"; do printf '%s=/dev/%s ' "$impl" "${DEVS[$impl]}"; done)"
  for round in $(seq "$ROUNDS"); do
    order=("${IMPLS[@]}")
    ((round % 2 == 0)) && { order=(); for ((k = ${#IMPLS[@]} - 1; k >= 0; k--)); do order+=("${IMPLS[k]}"); done; }
    say "$fs round $round (${order[*]})"
    for spec in "${JOBS[@]}"; do
      for impl in "${order[@]}"; do
        [[ -z ${LJOBS[$impl]:-} || " ${LJOBS[$impl]} " == *" ${spec%%:*} "* ]] || continue
        run_job "$fs" "$impl" "${DEVS[$impl]}" "$round" "$spec" "${DPID[${DNAME[$impl]}]}" "${DNAME[$impl]}"
      done
    done
  done
  release_fs
done
if [[ ${BENCH_NULL_BLK:-1} == 1 ]]; then
  if modprobe null_blk nr_devices=1 queue_mode=2 submit_queues="$QUEUES" gb=1 2>/dev/null; then
    say "null_blk (block layer ceiling)"
    for spec in "${JOBS[@]}"; do run_job none null_blk nullb0 1 "$spec"; done
    rmmod null_blk
  else
    echo "null_blk not available: ceiling row skipped" >&2
  fi
fi
say "done"
