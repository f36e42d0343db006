#!/usr/bin/env bash
# container-volume.sh - a container's block volume served from a plain image file.
#
#   examples/container-volume.sh [IMAGE] [-- COMMAND...]
#
# 1. vduse-blk exposes IMAGE as a VDUSE device (userspace virtio-blk),
# 2. `vdpa dev add` binds it to virtio_vdpa, so the kernel's virtio_blk driver
#    gives a /dev/vdX,
# 3. the volume is formatted (ext4) only if it holds no file system yet,
# 4. it is mounted inside a new, private mount namespace (unshare -m
#    --propagation private) where COMMAND runs with $VOLUME set to the mount point;
#    the mount is invisible to the rest of the system, as a container runtime
#    would arrange it,
# 5. teardown: the namespace ends with COMMAND (its mount goes with it),
#    `vdpa dev del`, then SIGTERM to vduse-blk, which destroys the device.
#
# Default COMMAND: a small workload (writes a run log, a few files, checks them).
# Needs root and a kernel with vduse + virtio_vdpa (Linux >= 5.15 with
# CONFIG_VDPA_USER). Without them, run it in the project's test VM:
#   scripts/run-in-guest.sh examples/container-volume.sh
#
# Environment: VDUSE_BLK (default .build/release/vduse-blk, then vduse-blk in PATH),
#   VOLUME_SIZE (new images, default 256M), VOLUME_NAME (default ctvol0).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${VDUSE_BLK:-$REPO/.build/release/vduse-blk}
[[ -x $BIN ]] || BIN=$(command -v vduse-blk) || { echo "no vduse-blk binary (swift build -c release)" >&2; exit 1; }
IMG=${1:-$REPO/demo/volume.img}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
SIZE=${VOLUME_SIZE:-256M}
NAME=${VOLUME_NAME:-ctvol0}

# 0. kernel side: VDUSE plus the virtio_vdpa bus driver (not vhost_vdpa: with both
#    loaded, whichever binds first wins)
modprobe -a vduse virtio_vdpa virtio_blk
mkdir -p "$(dirname "$IMG")"
[[ $IMG == "$REPO/demo/"* && ! -e $REPO/demo/.gitignore ]] && echo "*" >"$REPO/demo/.gitignore"
[[ -e $IMG ]] || truncate -s "$SIZE" "$IMG"

# 1. the userspace device (foreground process; logs on stderr)
LOG=$(mktemp /tmp/ctvol.XXXXXX.log)
"$BIN" create "$NAME" --backend "file:$IMG" --queues 2 --serial "vol-$NAME" 2>"$LOG" &
DAEMON=$!
cleanup() {
  [[ -e /sys/bus/vdpa/devices/$NAME ]] && vdpa dev del "$NAME"
  if kill -0 "$DAEMON" 2>/dev/null; then
    kill -TERM "$DAEMON"
    wait "$DAEMON" && echo "vduse-blk exited cleanly" || echo "vduse-blk exited with status $?" >&2
  fi
  rm -f "$LOG"
}
trap cleanup EXIT
for _ in $(seq 300); do [[ -c /dev/vduse/$NAME ]] && break; sleep 0.1; done
[[ -c /dev/vduse/$NAME ]] || { cat "$LOG" >&2; exit 1; }

# 2. bind it: the vDPA device lands on virtio_vdpa, virtio_blk makes /dev/vdX
vdpa dev add name "$NAME" mgmtdev vduse
DEV=
for _ in $(seq 300); do
  DEV=$(ls /sys/bus/vdpa/devices/"$NAME"/virtio*/block 2>/dev/null | head -n 1)
  [[ -n $DEV && -b /dev/$DEV ]] && break; sleep 0.1
done
[[ -n $DEV ]] || { echo "no block device for $NAME" >&2; cat "$LOG" >&2; exit 1; }
echo "volume $IMG is /dev/$DEV ($(( $(cat /sys/block/$DEV/size) / 2048 )) MiB, serial $(cat /sys/block/$DEV/serial))"

# 3. format only a blank volume
if ! blkid -p "/dev/$DEV" >/dev/null 2>&1; then
  echo "blank volume: mkfs.ext4"
  mkfs.ext4 -q -L "$NAME" "/dev/$DEV"
fi

# 4. the "container": a private mount namespace in which the volume is mounted at
#    $VOLUME (an empty directory; the mount exists only inside the namespace)
VOLUME=$(mktemp -d /tmp/ctvol-mnt.XXXXXX)
trap 'cleanup; rmdir "$VOLUME" 2>/dev/null' EXIT
if (($# == 0)); then
  set -- sh -c '
    echo "[container] $(date -u +%FT%TZ) pid $$" >>"$VOLUME/runs.log"
    mkdir -p "$VOLUME/data" && i=0
    while [ $i -lt 20 ]; do head -c 65536 /dev/urandom >"$VOLUME/data/f$i"; i=$((i + 1)); done
    (cd "$VOLUME/data" && sha256sum f* >../data.sha256 && sha256sum -c --quiet ../data.sha256) &&
      echo "[container] 20 files written and verified"
    echo "[container] runs so far: $(wc -l <"$VOLUME/runs.log")"
    df -h "$VOLUME" | tail -n 1'
fi
export VOLUME
rc=0
unshare -m --propagation private -- sh -c 'mount "$1" "$VOLUME" && shift && exec "$@"' sh "/dev/$DEV" "$@" || rc=$?
# outside the namespace the volume was never mounted:
findmnt "$VOLUME" >/dev/null && echo "unexpected: $VOLUME is mounted outside the namespace" >&2
echo "workload exit status $rc"

# 5. teardown (the namespace is gone, so is its mount): cleanup() runs on exit
exit "$rc"
