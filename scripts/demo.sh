#!/usr/bin/env bash
# demo.sh - the main job in one go: a file becomes a Linux block device served by
# vduse-blk, gets an ext4 file system, files are written and read back, a short dd
# measures throughput, and everything is torn down cleanly.
#
# Where this kernel has VDUSE (/dev/vduse/control, or `modprobe vduse` works) it
# runs right here (as root). Otherwise it builds the binary (swift build -c release,
# unless VDUSE_BLK is set) and re-runs itself in the QEMU guest of
# scripts/run-in-guest.sh (slow software emulation, first run sets it up).
#
# The image lives at demo/demo.img (128M, git-ignored); it is formatted only when
# new, so a second run finds the files of the first one (see "runs so far").
#
# Environment: VDUSE_BLK (binary, default .build/release/vduse-blk),
#   DEMO_IMG (image path), DEMO_SIZE (128M), DEMO_NAME (vduse device name, demo0),
#   DEMO_ENGINE (uring|aio|sync, default: the binary's), and run-in-guest.sh's VDUSE_VM_*.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* || $BIN != */* ]] || BIN=$REPO/$BIN
IMG=${DEMO_IMG:-$REPO/demo/demo.img}
SIZE=${DEMO_SIZE:-128M}
NAME=${DEMO_NAME:-demo0}

# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"     # dev_wait

say() { printf '%s\n' "demo: $*" >&2; }
die() { say "$*"; exit 1; }

have_vduse() {
  [[ -c /dev/vduse/control ]] && return 0
  ((EUID == 0)) && modprobe vduse 2>/dev/null && [[ -c /dev/vduse/control ]]
}

# Build first (unless VDUSE_BLK names a binary): on a fresh machine that means
# installing the Debian packages the build needs (scripts/setup-host.sh).
if [[ ${1:-} != --here && -z ${VDUSE_BLK:-} ]]; then
  if ((EUID == 0)); then
    bash "$HERE/setup-host.sh" >&2 || die "scripts/setup-host.sh failed"
  fi
  # A non-login shell may lack the toolchain's PATH entry.
  if ! command -v swift >/dev/null && [[ -r /etc/profile.d/swift.sh ]]; then source /etc/profile.d/swift.sh; fi
  if ! command -v swift >/dev/null && [[ -x /opt/swift/usr/bin/swift ]]; then export PATH=/opt/swift/usr/bin:$PATH; fi
  command -v swift >/dev/null || die "swift not found: install a Swift toolchain or set VDUSE_BLK"
  say "swift build -c release"
  swift build -c release >&2 || die "build failed"
fi

if [[ ${1:-} != --here ]] && ! have_vduse; then
  say "no VDUSE in this kernel ($(uname -r)): running in the QEMU guest (scripts/run-in-guest.sh)"
  [[ -x $BIN ]] || die "no executable $BIN"
  export VDUSE_BLK=$BIN DEMO_IMG=$IMG DEMO_SIZE=$SIZE DEMO_NAME=$NAME
  VDUSE_VM_ENV="VDUSE_BLK DEMO_IMG DEMO_SIZE DEMO_NAME DEMO_ENGINE ${VDUSE_VM_ENV:-}" \
    exec "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/demo.sh") --here"
fi

# ---- runs where VDUSE is available (root) ----------------------------------------
((EUID == 0)) || die "must run as root"
[[ -x $BIN ]] || command -v "$BIN" >/dev/null || die "no executable $BIN (swift build -c release)"
modprobe -a vduse virtio_vdpa virtio_blk 2>/dev/null || true
[[ -c /dev/vduse/control ]] || die "/dev/vduse/control missing"
[[ -d /sys/bus/vdpa/drivers/virtio_vdpa ]] || die "virtio_vdpa is not loaded (modprobe virtio_vdpa)"

mkdir -p "$(dirname "$IMG")"
[[ $IMG == "$REPO/demo/"* && ! -e $REPO/demo/.gitignore ]] && echo '*' >"$REPO/demo/.gitignore"
new=0
if [[ ! -e $IMG ]]; then truncate -s "$SIZE" "$IMG"; new=1; fi
SERIAL=demo-$$
WORK=$(mktemp -d /dev/shm/vduse-demo.XXXXXX 2>/dev/null || mktemp -d)
MNT=$WORK/mnt; mkdir -p "$MNT"
LOG=$WORK/daemon.log
export TMPDIR=$WORK
pid='' dev=''
teardown() {
  mountpoint -q "$MNT" && umount "$MNT"
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    local i; for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "daemon did not exit in 10 s, killing it"; kill -KILL "$pid"; }
  fi
  [[ -z $pid ]] || { wait "$pid"; drc=$?; } || true
  pid=
}
drc=
trap 'teardown; [[ ${ok:-0} == 1 ]] || { echo "--- daemon log:" >&2; cat "$LOG" >&2; }; rm -rf "$WORK"' EXIT

t0=$(date +%s%N)
engine=(); [[ -n ${DEMO_ENGINE:-} ]] && engine=(--engine "$DEMO_ENGINE")
say "$BIN create $NAME --backend file:$IMG --size $SIZE --serial $SERIAL --attach ${engine[*]}"
"$BIN" create "$NAME" --backend "file:$IMG" --size "$SIZE" --serial "$SERIAL" "${engine[@]}" --attach 2>"$LOG" &
pid=$!
if ! dev=$(dev_wait "serial:$SERIAL" 30 "$pid"); then
  kill -0 "$pid" 2>/dev/null || die "vduse-blk exited early"
  die "no /dev/vd* with serial $SERIAL after 30 s"
fi
up_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
bytes=$(($(cat /sys/block/"$dev"/size) * 512))
lbs=$(cat /sys/block/"$dev"/queue/logical_block_size)
drv=$(basename "$(readlink /sys/bus/vdpa/devices/"$NAME"/driver 2>/dev/null || echo '?')")

if ((new)) || ! blkid -p /dev/"$dev" >/dev/null 2>&1; then
  mkfs.ext4 -q -L vduse-demo /dev/"$dev"; formatted="yes (new image)"
else formatted="no (existing file system)"; fi
mount /dev/"$dev" "$MNT"
runs=$(( $(cat "$MNT/runs" 2>/dev/null || echo 0) + 1 )); echo "$runs" >"$MNT/runs"
mkdir -p "$MNT/run-$runs"
echo "hello from vduse-blk, run $runs, $(date -u +%FT%TZ)" >"$MNT/run-$runs/hello.txt"
for f in a b c; do head -c $(( (RANDOM % 4 + 1) << 20 )) /dev/urandom >"$MNT/run-$runs/$f.bin"; done
(cd "$MNT/run-$runs" && sha256sum -- *) >"$WORK/sums"
nfiles=$(wc -l <"$WORK/sums"); kib=$(du -sk "$MNT/run-$runs" | cut -f1)
sync; umount "$MNT"
echo 3 >/proc/sys/vm/drop_caches
mount /dev/"$dev" "$MNT"
if (cd "$MNT/run-$runs" && sha256sum --quiet -c "$WORK/sums"); then sums_ok=OK; else sums_ok=MISMATCH; fi
df_line=$(df -h --output=used,size "$MNT" | tail -n 1 | awk '{print $1 " used of " $2}')
umount "$MNT"

ddrate() { LC_ALL=C dd "$@" 2>&1 | awk '/copied/ {print $(NF-1), $NF}'; }
wr=$(ddrate if=/dev/zero of=/dev/"$dev" bs=1M count=16 seek=$(( bytes / 1048576 - 16 )) oflag=direct conv=fsync)
rd=$(ddrate if=/dev/"$dev" of=/dev/null bs=1M count=32 iflag=direct)

teardown
# shellcheck disable=SC2010 # names under /dev/vduse are device names
leftover=$(ls /dev/vduse | grep -vx control || true)
cat <<EOF

vduse-blk demo
  device        /dev/$dev (vduse device $NAME via $drv, up in ${up_ms} ms)
  backing file  $IMG
  size          $bytes bytes ($((bytes >> 20)) MiB), logical block size $lbs
  serial        $SERIAL
  formatted     $formatted; runs so far: $runs; $df_line
  files written $nfiles ($kib KiB) in run-$runs/, read back after remount: checksums $sums_ok
  dd (direct)   write 16 MiB: $wr; read 32 MiB: $rd
  teardown      daemon exit status $drc; /dev/$dev $([[ -e /dev/$dev ]] && echo "STILL PRESENT" || echo gone); /dev/vduse: control${leftover:+ $leftover}
EOF
if [[ $sums_ok == OK && $drc == 0 && -z $leftover && ! -e /dev/$dev ]]; then ok=1; echo "DEMO OK"
else echo "DEMO FAILED"; exit 1; fi
