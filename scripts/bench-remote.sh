#!/usr/bin/env bash
# bench-remote.sh - the remote (HTTP) backend in the guest, against peers
# measured in the same run: a private nginx in the guest serves a raw image
# of random bytes from tmpfs; then
#   cold sequential read of the device (dd 1 MiB O_DIRECT, empty caches) vs
#     `curl -o /dev/null` of the same object from the same nginx;
#   warm sequential read (memory tier; then disk tier after a restart) vs the
#     file backend (file:) on the same raw image;
#   4k random cold reads (fio, QD1 and QD16, BENCH_RAND_IOS reads from empty
#     caches, so nearly every read misses) with readahead=0 and readahead=4.
# Rounds alternate the rows. Prints a table of medians and ratios and writes
# bench/remote-bench.txt. Numbers are measured under software emulation (TCG)
# on a shared 2-core host: compare ratios within one run only.
# First, on the host (native speed, no device in the way): the backend alone
# read sequentially by `vduse-blk image bench-seq` (1 MiB reads, QD1) cold with
# and without the disk tier, then warm, vs curl and vs the file backend, from
# a host nginx; written to bench/remote-bench-host.txt.
#
#   scripts/bench-remote.sh            # host part, then the guest part
# Env: BENCH_ROUNDS (3), BENCH_IMG_SIZE (256M), BENCH_CHUNK (1M), BENCH_RAND_IOS (random reads per fio run, 64),
#      BENCH_HOST_IMG_SIZE (1G), BENCH_SKIP_GUEST=1, VDUSE_BLK (binary, default .build/release/vduse-blk)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN
# shellcheck source=scripts/lib/nginx.sh
source "$HERE/lib/nginx.sh"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }

host_part() {
  local H; H=$(mktemp -d /tmp/rbench-host.XXXXXX)
  local port=18082 rounds=${BENCH_ROUNDS:-3} r k
  local url=http://127.0.0.1:$port/disk.img
  declare -A HR=()
  mkdir -p "$H/www"
  head -c "${BENCH_HOST_IMG_SIZE:-1G}" /dev/urandom >"$H/www/disk.img"
  local bytes; bytes=$(stat -c %s "$H/www/disk.img")
  nginx_start "$H/www" $port "$H/nginx" || { echo "bench-remote: host nginx did not start" >&2; rm -rf "$H"; return 1; }
  seq_mib() { "$BIN" image bench-seq "$@" | awk '/^pass/ { print $3 }'; }
  for ((r = 1; r <= rounds; r++)); do
    HR[curl]+=" $(curl -s -o /dev/null -w '%{speed_download}' "$url" | awk '{ printf "%.1f", $1 / 1048576 }')"
    rm -rf "$H/cache"; local p; mapfile -t p < <(seq_mib "$url,cache-dir=$H/cache,memory=2G,chunk=${BENCH_CHUNK:-1M}" --passes 2)
    HR[cold_disk_tier]+=" ${p[0]}"; HR[warm_memory]+=" ${p[1]}"
    mapfile -t p < <(seq_mib "$url,cache-dir=$H/cache,memory=64M,chunk=${BENCH_CHUNK:-1M}" --passes 1); HR[warm_disk_tier]+=" ${p[0]}"
    mapfile -t p < <(seq_mib "$url,cache-dir=none,memory=2G,chunk=${BENCH_CHUNK:-1M}" --passes 1); HR[cold_memory_only]+=" ${p[0]}"
    mapfile -t p < <(seq_mib "file:$H/www/disk.img" --passes 1); HR[file_backend]+=" ${p[0]}"
    echo "# host round $r: $(for k in curl cold_disk_tier cold_memory_only warm_memory warm_disk_tier file_backend; do printf '%s=%s ' $k "${HR[$k]##* }"; done)" >&2
  done
  nginx_stop
  m() { echo "${HR[$1]}" | median; }
  {
    echo "remote backend alone on the host, $(date -u +%F), $rounds rounds (medians), $((bytes >> 20)) MiB random, chunk ${BENCH_CHUNK:-1M}, 1 MiB reads QD1, nginx on loopback"
    printf '%-40s %10s %10s %7s\n' row vduse-blk peer ratio
    printf '%-40s %10s %10s %7s\n' "cold (memory + disk tier) vs curl" "$(m cold_disk_tier)" "$(m curl)" "$(ratio "$(m cold_disk_tier)" "$(m curl)")"
    printf '%-40s %10s %10s %7s\n' "cold (cache-dir=none) vs curl" "$(m cold_memory_only)" "$(m curl)" "$(ratio "$(m cold_memory_only)" "$(m curl)")"
    printf '%-40s %10s %10s %7s\n' "warm (memory) vs file:" "$(m warm_memory)" "$(m file_backend)" "$(ratio "$(m warm_memory)" "$(m file_backend)")"
    printf '%-40s %10s %10s %7s\n' "warm (disk tier) vs file:" "$(m warm_disk_tier)" "$(m file_backend)" "$(ratio "$(m warm_disk_tier)" "$(m file_backend)")"
    echo "MiB/s samples:"; for k in "${!HR[@]}"; do echo "  $k:${HR[$k]}"; done | sort
  } >"$REPO/bench/remote-bench-host.txt"
  cat "$REPO/bench/remote-bench-host.txt"
  rm -rf "$H"
}

if [[ ${1:-} != --in-guest ]]; then
  [[ -x $BIN ]] || { echo "bench-remote: build first: swift build -c release" >&2; exit 1; }
  mkdir -p "$REPO/bench"
  host_part
  [[ ${BENCH_SKIP_GUEST:-0} == 1 ]] && exit 0
  VDUSE_VM_MEM=${VDUSE_VM_MEM:-3G} VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-2400} \
  VDUSE_VM_ENV="BENCH_ROUNDS BENCH_IMG_SIZE BENCH_CHUNK BENCH_RAND_IOS VDUSE_BLK ${VDUSE_VM_ENV:-}" \
    bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/bench-remote.sh") --in-guest" || exit $?
  cat "$REPO/bench/remote-bench.txt"
  exit 0
fi

# ---- in the guest -----------------------------------------------------------
ROUNDS=${BENCH_ROUNDS:-3} IMG_SIZE=${BENCH_IMG_SIZE:-256M} CHUNK=${BENCH_CHUNK:-1M} RAND_IOS=${BENCH_RAND_IOS:-64}
W=$(mktemp -d /dev/shm/rbench.XXXXXX)
PORT=18081 URL=http://127.0.0.1:18081/disk.img
OUT=$REPO/bench/remote-bench.txt
declare -A R=()   # ROW -> space-separated values (MiB/s or IOPS)
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# shellcheck source=scripts/lib/fio.sh
source "$HERE/lib/fio.sh"
cleanup() {
  dev_stop_all 10
  nginx_stop
  rm -rf "$W"
}
trap cleanup EXIT
log() { echo "# $*" >&2; }

mkdir -p "$W/www"
head -c "$IMG_SIZE" /dev/urandom >"$W/www/disk.img"
BYTES=$(stat -c %s "$W/www/disk.img")
nginx_start "$W/www" "$PORT" "$W/nginx" || { echo "bench-remote: nginx did not start" >&2; exit 1; }

now_ns() { date +%s%N; }
# start NAME BACKEND [create options]: sets DEV (and CUR, for stop)
start() {
  local name=$1 backend=$2; shift 2
  if DEV_BACKEND=$backend dev_start "$name" "" --serial "$name" --queues 1 "$@"; then DEV=/dev/${DDEV[$name]}; return 0; fi
  echo "bench-remote: device $name did not appear:" >&2; tail -n 20 "${DLOG[$name]}" >&2; exit 1
}
stop() { dev_stop "$CUR"; }
# seqread: MiB/s of one O_DIRECT 1 MiB sequential pass over $DEV
seqread() {
  local t0 t1; t0=$(now_ns)
  dd if="$DEV" of=/dev/null bs=1M iflag=direct status=none || echo "dd failed" >&2
  t1=$(now_ns)
  awk -v b="$BYTES" -v n=$((t1 - t0)) 'BEGIN { printf "%.1f", b / 1048576 / (n / 1e9) }'
}
randread() {  # QD: 4k random read IOPS over the whole device, a few hundred reads so most miss
  fio_dev "$DEV" --name=r --rw=randread --bs=4k --iodepth="$1" --ioengine=io_uring \
    --number_ios="$RAND_IOS" --randrepeat=0 --minimal | fio_terse read_iops | awk '{ printf "%.0f", $1 }'
}
add() { R[$1]="${R[$1]:-} $2"; log "$1: $2"; }

for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r"
  t0=$(now_ns); curl -s -o /dev/null "$URL"; t1=$(now_ns)
  add curl "$(awk -v b="$BYTES" -v n=$((t1 - t0)) 'BEGIN { printf "%.1f", b / 1048576 / (n / 1e9) }')"

  rm -rf "$W/cache"
  start rcold "$URL,cache-dir=$W/cache,chunk=$CHUNK,memory=512M"
  add remote_cold "$(seqread)"
  add remote_warm_memory "$(seqread)"
  stop
  start rnodisk "$URL,cache-dir=none,chunk=$CHUNK,memory=512M"
  add remote_cold_no_disk_tier "$(seqread)"
  stop
  start rdisk "$URL,cache-dir=$W/cache,chunk=$CHUNK,memory=64M"
  add remote_warm_disk "$(seqread)"
  stop

  start file "file:$W/www/disk.img" --readonly
  add file_backend "$(seqread)"
  stop

  for ra in 0 4; do
    for qd in 1 16; do
      rm -rf "$W/cache"
      start rrand "$URL,cache-dir=$W/cache,chunk=$CHUNK,memory=512M,readahead=$ra"
      add "rand4k_qd${qd}_ra${ra}" "$(randread "$qd")"
      stop
    done
  done
done

m() { echo "${R[$1]}" | median; }
{
  echo "remote backend benchmark, $(date -u +%F), kernel $(uname -r), $ROUNDS rounds (medians), image $IMG_SIZE random bytes, chunk $CHUNK, 1 queue"
  printf '%-34s %12s %12s %8s\n' "row" "vduse-blk" "peer" "ratio"
  printf '%-34s %12s %12s %8s\n' "cold seq read MiB/s vs curl" "$(m remote_cold)" "$(m curl)" "$(ratio "$(m remote_cold)" "$(m curl)")"
  printf '%-34s %12s %12s %8s\n' "cold, cache-dir=none, vs curl" "$(m remote_cold_no_disk_tier)" "$(m curl)" "$(ratio "$(m remote_cold_no_disk_tier)" "$(m curl)")"
  printf '%-34s %12s %12s %8s\n' "warm (memory) MiB/s vs file:" "$(m remote_warm_memory)" "$(m file_backend)" "$(ratio "$(m remote_warm_memory)" "$(m file_backend)")"
  printf '%-34s %12s %12s %8s\n' "warm (disk tier) MiB/s vs file:" "$(m remote_warm_disk)" "$(m file_backend)" "$(ratio "$(m remote_warm_disk)" "$(m file_backend)")"
  for qd in 1 16; do
    printf '%-34s %12s %12s %8s\n' "cold 4k rand QD$qd IOPS ra=4 vs ra=0" "$(m rand4k_qd${qd}_ra4)" "$(m rand4k_qd${qd}_ra0)" \
      "$(ratio "$(m rand4k_qd${qd}_ra4)" "$(m rand4k_qd${qd}_ra0)")"
  done
  echo "all samples:"
  for k in "${!R[@]}"; do echo "  $k:${R[$k]}"; done | sort
} >"$OUT"
cat "$OUT" >&2
