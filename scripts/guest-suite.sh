#!/usr/bin/env bash
# guest-suite.sh - end-to-end tests of vduse-blk against the real kernel.
#
# On a host it boots the VDUSE guest (scripts/run-in-guest.sh) and runs itself
# there with --in-guest; afterwards the host checks that the backing image the
# guest wrote through the device (on the shared repo dir) holds exactly that data.
# Uses the binary at ${VDUSE_BLK:-.build/release/vduse-blk}: build it first
# (swift build -c release); nothing is built in the guest.
#
# Each check prints "ok - NAME" or "not ok - NAME" (followed by "#" lines with the
# details, daemon stderr included), "skip - NAME # why" for checks that do not
# apply; the last line is "N passed, M failed". Exit status 0 only if none failed.
#
#   scripts/guest-suite.sh               # host: boot the guest, run, verify
#   scripts/guest-suite.sh --in-guest    # as root where /dev/vduse/control exists
#
# Environment:
#   VDUSE_BLK          the binary (default .build/release/vduse-blk)
#   VDUSE_SUITE_PEER   vduse-blk (default) or qsd: run the same checks against
#                      qemu-storage-daemon's vduse-blk export, to validate the suite
#   E2E_FIO_SIZE       per-job fio size (default 16M); E2E_FIO_RUNTIME cap (90 s)
#   E2E_ONLY           space-separated sections to run (default: all): basic bs4k
#                      fio readonly zstd remote bounce host manual destroy example startup
#                      reconnect resize control metrics qos remote-cache trace
#   E2E_DEV_TIMEOUT    seconds to wait for a device to appear (default 30)
#   E2E_KEEP=1         keep the guest's /dev/shm work dir (only useful with --in-guest)
#   and run-in-guest.sh's VDUSE_VM_* (VDUSE_VM_TIMEOUT defaults to 2700 s).
#
# Layout: this file only drives. The sections are scripts/guest-suite.d/NN-NAME.sh,
# each defining run_NAME; they run in NN order, those named in E2E_ONLY. They use
# scripts/lib/{report,daemons,fio,nginx}.sh and the globals set below: BIN, PEER,
# W (the guest's work dir), SHARED, HOSTIMG, HOSTENV, FIO_SIZE, FIO_RUNTIME,
# DEV_TIMEOUT.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SECTIONS=$HERE/guest-suite.d
PEER=${VDUSE_SUITE_PEER:-vduse-blk}
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN
SHARED=$REPO/.e2e-work            # shared with the host; self-ignored by git
HOSTIMG=$SHARED/host-check.img
HOSTENV=$SHARED/host-check.env
COUNTS=$SHARED/guest-counts

case $PEER in vduse-blk|qsd) ;; *) echo "VDUSE_SUITE_PEER must be vduse-blk or qsd" >&2; exit 2 ;; esac

# shellcheck source=scripts/lib/report.sh
source "$HERE/lib/report.sh"
# shellcheck source=scripts/guest-suite.d/08-host.sh
source "$SECTIONS/08-host.sh"     # host_verify
ALL=" ${E2E_ONLY:-basic bs4k fio readonly zstd remote bounce host manual destroy example startup reconnect resize control metrics qos remote-cache trace} "
want() { [[ $ALL == *" $1 "* ]]; }

# ================================ host side ======================================
if [[ ${1:-} != --in-guest ]]; then
  start=$SECONDS
  if [[ $PEER == vduse-blk && ! -x $BIN ]]; then
    echo "guest-suite: no executable $BIN; build it first: swift build -c release (or set VDUSE_BLK)" >&2
    echo "0 passed, 1 failed"; exit 1
  fi
  rm -rf "$SHARED"; mkdir -p "$SHARED/logs"; echo '*' >"$SHARED/.gitignore"
  export VDUSE_BLK=$BIN VDUSE_SUITE_PEER=$PEER E2E_HOST_SUMMARY=1
  export VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-2700}
  VDUSE_VM_ENV="VDUSE_BLK VDUSE_SUITE_PEER E2E_HOST_SUMMARY E2E_FIO_SIZE E2E_FIO_RUNTIME E2E_ONLY E2E_DEV_TIMEOUT ${VDUSE_VM_ENV:-}" \
    "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/guest-suite.sh") --in-guest"
  rc=$?
  note "guest finished with status $rc after $((SECONDS - start)) s (boot included)"
  if [[ -f $COUNTS ]]; then
    read -r REPORT_PASS REPORT_FAILED REPORT_SKIPPED <"$COUNTS"
  else
    notok "guest suite ran to completion" "run-in-guest.sh exited $rc and the guest left no $COUNTS"
  fi
  if [[ " ${E2E_ONLY:-host} " == *" host "* ]]; then host_verify; fi
  note "daemon logs: $SHARED/logs/"
  summary "peer: $PEER"; exit
fi

# ================================ guest side =====================================
if [[ ! -c /dev/vduse/control ]]; then
  echo "guest-suite: /dev/vduse/control missing (modprobe vduse virtio_vdpa virtio_blk)" >&2
  echo "0 passed, 1 failed"; exit 1
fi
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# shellcheck source=scripts/lib/fio.sh
source "$HERE/lib/fio.sh"
# shellcheck source=scripts/lib/nginx.sh
source "$HERE/lib/nginx.sh"
# shellcheck disable=SC2034 # read by guest-suite.d/03-fio.sh
FIO_SIZE=${E2E_FIO_SIZE:-16M}
FIO_RUNTIME=${E2E_FIO_RUNTIME:-90}
DEV_TIMEOUT=${E2E_DEV_TIMEOUT:-30}
W=$(mktemp -d /dev/shm/e2e.XXXXXX)
mkdir -p "$SHARED/logs"
export TMPDIR=/dev/shm     # qemu-storage-daemon mmaps a reconnect log there; 9p can't
REPORT_T0=$SECONDS

cleanup() {
  dev_stop_all 5
  umount "$W/mnt" 2>/dev/null
  vdpa_del_all
  cp "$W"/*.log "$SHARED/logs/" 2>/dev/null
  if [[ ${E2E_KEEP:-0} == 1 ]]; then note "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

section "peer $PEER; kernel $(uname -r); $(nproc) vCPUs; $(free -m | awk '/Mem:/{print $2}') MiB"
if vdpa mgmtdev show 2>/dev/null | grep -q 'vduse'; then ok "vdpa mgmtdev show lists vduse"
else notok "vdpa mgmtdev show lists vduse" "$(vdpa mgmtdev show 2>&1)"; fi
if [[ $PEER == vduse-blk ]]; then
  if out=$("$BIN" --help 2>&1); then ok "vduse-blk --help runs ($BIN)"
  else notok "vduse-blk --help runs" "$BIN: $out"; fi
else
  note "stand-in: $(qemu-storage-daemon --version | head -n 1)"
fi

# reclaim_work_space MARKER: the work dir lives in the guest's tmpfs (half
# of its RAM); sections are independent, so what a section wrote there
# (images, caches, patterns) is dropped once it ends. Logs stay for the host;
# -xdev keeps find out of anything a section left mounted.
reclaim_work_space() {
  find "$W" -xdev -type f -newer "$1" ! -name '*.log' ! -name '*.err' -delete 2>/dev/null
  find "$W" -xdev -mindepth 1 -type d -empty -delete 2>/dev/null
}

for f in "$SECTIONS"/[0-9][0-9]-*.sh; do
  name=${f##*/[0-9][0-9]-}; name=${name%.sh}
  want "$name" || continue
  # shellcheck source=/dev/null
  source "$f"
  touch "$W/.section-start"
  "run_$name"
  reclaim_work_space "$W/.section-start"
  note "/dev/shm after $name: $(df -m --output=used,avail /dev/shm | awk 'NR == 2 { print $1 " MiB used, " $2 " MiB free" }')"
done
section "end"
no_leftovers "at the end"
note "guest part took $((SECONDS - REPORT_T0)) s"

if [[ ${E2E_HOST_SUMMARY:-0} == 1 ]]; then
  echo "$REPORT_PASS $REPORT_FAILED $REPORT_SKIPPED" >"$COUNTS"; sync
  note "guest: $REPORT_PASS passed, $REPORT_FAILED failed, $REPORT_SKIPPED skipped (host checks follow)"
  exit 0
fi
want host && host_verify
summary "peer: $PEER"
