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
#                      fio readonly zstd remote bounce host manual destroy
#   E2E_DEV_TIMEOUT    seconds to wait for a device to appear (default 30)
#   E2E_KEEP=1         keep the guest's /dev/shm work dir (only useful with --in-guest)
#   and run-in-guest.sh's VDUSE_VM_* (VDUSE_VM_TIMEOUT defaults to 1500 s).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PEER=${VDUSE_SUITE_PEER:-vduse-blk}
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN
SHARED=$REPO/.e2e-work            # shared with the host; self-ignored by git
HOSTIMG=$SHARED/host-check.img
HOSTENV=$SHARED/host-check.env
COUNTS=$SHARED/guest-counts

case $PEER in vduse-blk|qsd) ;; *) echo "VDUSE_SUITE_PEER must be vduse-blk or qsd" >&2; exit 2 ;; esac

pass=0 failed=0 skipped=0
ok()    { echo "ok - $1"; ((pass++)); }
notok() { echo "not ok - $1"; ((failed++)); shift; local l; for l in "$@"; do [[ -n $l ]] && printf '%s\n' "$l" | sed 's/^/#   /'; done; }
skip()  { echo "skip - $1 # $2"; ((skipped++)); }
note()  { echo "# $*"; }
# check NAME CMD...: ok if CMD succeeds (its output only shown when it fails)
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "command: $*" "$out"; fi
}

# --- host-side verification of the image written through the device ------------
host_verify() {
  if [[ ! -f $HOSTENV ]]; then
    notok "host: backing image on the shared dir holds what the guest wrote" "no $HOSTENV (guest section 'host' did not finish)"
    return
  fi
  local OFFSET LEN SHA IMGSIZE
  # shellcheck disable=SC1090
  . "$HOSTENV"
  local size got zeros_ok=1 why=()
  size=$(stat -c %s "$HOSTIMG" 2>/dev/null || echo missing)
  [[ $size == "$IMGSIZE" ]] || { zeros_ok=0; why+=("image size $size, expected $IMGSIZE"); }
  got=$(tail -c +$((OFFSET + 1)) "$HOSTIMG" | head -c "$LEN" | sha256sum | cut -d' ' -f1)
  [[ $got == "$SHA" ]] || why+=("region at $OFFSET+$LEN has sha256 $got, guest wrote $SHA")
  cmp -s -n "$OFFSET" "$HOSTIMG" /dev/zero || why+=("bytes before offset $OFFSET are not all zero")
  local rest=$((IMGSIZE - OFFSET - LEN))
  cmp -s -n "$rest" <(tail -c +$((OFFSET + LEN + 1)) "$HOSTIMG") /dev/zero || why+=("bytes after the region are not all zero")
  if ((${#why[@]} == 0)); then
    ok "host: backing image on the shared dir holds exactly what the guest wrote ($LEN bytes at $OFFSET, zeros elsewhere)"
  else
    notok "host: backing image on the shared dir holds exactly what the guest wrote" "${why[@]}"
  fi
}

summary() {
  note "$skipped skipped; peer: $PEER"
  echo "$pass passed, $failed failed"
  ((failed == 0))
}

# ================================ host side ======================================
if [[ ${1:-} != --in-guest ]]; then
  start=$SECONDS
  if [[ $PEER == vduse-blk && ! -x $BIN ]]; then
    echo "guest-suite: no executable $BIN; build it first: swift build -c release (or set VDUSE_BLK)" >&2
    echo "0 passed, 1 failed"; exit 1
  fi
  rm -rf "$SHARED"; mkdir -p "$SHARED/logs"; echo '*' >"$SHARED/.gitignore"
  export VDUSE_BLK=$BIN VDUSE_SUITE_PEER=$PEER E2E_HOST_SUMMARY=1
  export VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-1500}
  VDUSE_VM_ENV="VDUSE_BLK VDUSE_SUITE_PEER E2E_HOST_SUMMARY E2E_FIO_SIZE E2E_FIO_RUNTIME E2E_ONLY E2E_DEV_TIMEOUT ${VDUSE_VM_ENV:-}" \
    "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/guest-suite.sh") --in-guest"
  rc=$?
  note "guest finished with status $rc after $((SECONDS - start)) s (boot included)"
  if [[ -f $COUNTS ]]; then
    read -r gp gf gs <"$COUNTS"; pass=$gp failed=$gf skipped=$gs
  else
    notok "guest suite ran to completion" "run-in-guest.sh exited $rc and the guest left no $COUNTS"
  fi
  if [[ " ${E2E_ONLY:-host} " == *" host "* ]]; then host_verify; fi
  note "daemon logs: $SHARED/logs/"
  summary; exit
fi

# ================================ guest side =====================================
if [[ ! -c /dev/vduse/control ]]; then
  echo "guest-suite: /dev/vduse/control missing (modprobe vduse virtio_vdpa virtio_blk)" >&2
  echo "0 passed, 1 failed"; exit 1
fi
FIO_SIZE=${E2E_FIO_SIZE:-16M}
FIO_RUNTIME=${E2E_FIO_RUNTIME:-90}
DEV_TIMEOUT=${E2E_DEV_TIMEOUT:-30}
ONLY=" ${E2E_ONLY:-basic bs4k fio readonly zstd remote bounce host manual destroy} "
want() { [[ $ONLY == *" $1 "* ]]; }
W=$(mktemp -d /dev/shm/e2e.XXXXXX)
mkdir -p "$SHARED/logs"
export TMPDIR=/dev/shm     # qemu-storage-daemon mmaps a reconnect log there; 9p can't
T0=$SECONDS
section() { note "[$((SECONDS - T0)) s] == $*"; }

declare -A DPID=() DLOG=() DDEV=()
SEQ=0
running() { [[ -n ${DPID[$1]:-} ]] && kill -0 "${DPID[$1]}" 2>/dev/null; }
logtail() { [[ -f ${DLOG[$1]:-} ]] && { echo "daemon stderr (${DLOG[$1]##*/}, last 25 lines):"; tail -n 25 "${DLOG[$1]}"; }; }
dmesgtail() { echo "dmesg (last 15 lines):"; dmesg | tail -n 15; }

# dev_start NAME IMG [--attach|--no-attach] [vduse-blk create options...]
# Starts the daemon in the background (stderr to $W/NAME.log); with --attach (the
# default) waits until the device is bound and sets DDEV[NAME] to vdX.
dev_start() {
  local name=$1 img=$2 attach=1; shift 2
  case ${1:-} in --attach) shift ;; --no-attach) attach=0; shift ;; esac
  local log=$W/$name.$((++SEQ)).log serial= a prev=
  DLOG[$name]=$log DDEV[$name]= CUR=$name
  # create the image if missing (sparse), so both peers see the asked-for size
  for a in "$@"; do [[ $prev == --size && ! -e $img ]] && truncate -s "$a" "$img"; prev=$a; done
  : >"$log"
  if [[ $PEER == vduse-blk ]]; then
    local a=(); ((attach)) && a=(--attach)
    "$BIN" create "$name" --backend "${DEV_BACKEND:-file:$img}" "$@" "${a[@]}" 2>"$log" &
    DPID[$name]=$!
    while (($#)); do [[ $1 == --serial ]] && serial=$2; shift; done
  else
    local q=1 bs= ro=0 eng= qs= o
    while (($#)); do
      case $1 in
        --queues) q=$2; shift ;; --block-size) bs=$2; shift ;; --readonly) ro=1 ;;
        --serial) serial=$2; shift ;; --engine) eng=$2; shift ;; --queue-size) qs=$2; shift ;;
        --size) shift ;;
      esac
      shift
    done
    local file="driver=file,node-name=f0,filename=$img,discard=unmap"
    case $eng in
      uring) file+=",aio=io_uring" ;; aio) file+=",aio=native,cache.direct=on" ;; sync) file+=",aio=threads" ;;
    esac
    o="type=vduse-blk,id=e0,node-name=f0,name=$name,num-queues=$q"
    ((ro)) && o+=",writable=off" || o+=",writable=on"
    [[ -n $bs ]] && o+=",logical-block-size=$bs"
    [[ -n $qs ]] && o+=",queue-size=$qs"
    [[ -n $serial ]] && o+=",serial=$serial"
    echo "+ qemu-storage-daemon --blockdev $file --export $o" >"$log"
    qemu-storage-daemon --blockdev "$file" --export "$o" 2>>"$log" &
    DPID[$name]=$!
  fi
  local i
  for ((i = 0; i < DEV_TIMEOUT * 10; i++)); do
    [[ -c /dev/vduse/$name ]] && break
    running "$name" || break; sleep 0.1
  done
  [[ -c /dev/vduse/$name ]] || return 1
  ((attach)) || return 0
  if [[ $PEER == qsd ]]; then vdpa dev add name "$name" mgmtdev vduse >>"$log" 2>&1 || return 1; fi
  local d dev=
  for ((i = 0; i < DEV_TIMEOUT * 10; i++)); do
    if [[ -n $serial ]]; then
      for d in /sys/block/vd*; do
        [[ -e $d/serial ]] || continue
        [[ $(timeout 3 cat "$d/serial" 2>/dev/null) == "$serial" ]] && { dev=${d##*/}; break; }
      done
    else
      dev=$(ls /sys/bus/vdpa/devices/"$name"/virtio*/block 2>/dev/null | head -n 1)
    fi
    [[ -n $dev && -b /dev/$dev ]] && break
    dev=; running "$name" || break; sleep 0.1
  done
  DDEV[$name]=$dev
  [[ -n $dev ]]
}

# dev_stop NAME [SECS]: the daemon's shutdown path (SIGTERM; for qsd first
# `vdpa dev del`, which our binary does itself on SIGTERM). Sets STOP_RC (124 if
# still running after SECS, then SIGKILLed) and STOP_SECS.
dev_stop() {
  local name=$1 secs=${2:-10} pid=${DPID[$1]:-} t i
  STOP_RC=0 STOP_SECS=0
  [[ -n $pid ]] || return 0
  t=$(date +%s%N)
  if [[ $PEER == qsd ]]; then
    [[ -e /sys/bus/vdpa/devices/$name ]] && timeout "$secs" vdpa dev del "$name" >>"${DLOG[$name]}" 2>&1
  fi
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; STOP_RC=124
  else
    wait "$pid"; STOP_RC=$?
  fi
  STOP_SECS=$(awk -v n="$(($(date +%s%N) - t))" 'BEGIN{printf "%.1f", n/1e9}')
  DPID[$name]=
  return "$STOP_RC"
}

# stop_checks NAME LABEL: stop the daemon and check it exits 0 within 10 s and
# leaves no block device, vdpa device or /dev/vduse/NAME behind.
stop_checks() {
  local name=$1 label=$2 dev=${DDEV[$1]:-} i
  dev_stop "$name" 10
  if ((STOP_RC == 0)); then ok "$label: daemon exits 0 on SIGTERM (${STOP_SECS} s)"
  else notok "$label: daemon exits 0 on SIGTERM" "exit status $STOP_RC after ${STOP_SECS} s (124: still running, killed)" "$(logtail "$name")" "$(dmesgtail)"; fi
  for ((i = 0; i < 50; i++)); do
    [[ (-z $dev || ! -e /dev/$dev) && ! -e /sys/bus/vdpa/devices/$name && ! -e /dev/vduse/$name ]] && break
    sleep 0.1
  done
  local left=()
  [[ -n $dev && -e /dev/$dev ]] && left+=("/dev/$dev")
  [[ -e /sys/bus/vdpa/devices/$name ]] && left+=("vdpa device $name")
  [[ -e /dev/vduse/$name ]] && left+=("/dev/vduse/$name")
  if ((${#left[@]} == 0)); then ok "$label: nothing left behind (block dev, vdpa dev, /dev/vduse/$name)"
  else notok "$label: nothing left behind" "still there: ${left[*]}" "$(logtail "$name")"; fi
  # the leftovers must not break later sections
  [[ -e /sys/bus/vdpa/devices/$name ]] && timeout 10 vdpa dev del "$name" 2>/dev/null
  return 0
}

no_leftovers() {  # LABEL: nothing in `vdpa dev show`, only control in /dev/vduse
  local show vd
  show=$(vdpa dev show 2>&1); vd=$(ls /dev/vduse 2>&1 | tr '\n' ' ')
  if [[ -z $show && $vd == "control " ]]; then ok "$1: vdpa dev show is empty, /dev/vduse has only control"
  else notok "$1: vdpa dev show is empty, /dev/vduse has only control" "vdpa dev show: $show" "/dev/vduse: $vd"; fi
}

cleanup() {
  local n
  for n in "${!DPID[@]}"; do [[ -n ${DPID[$n]} ]] && dev_stop "$n" 5; done
  umount "$W/mnt" 2>/dev/null
  for n in $(ls /sys/bus/vdpa/devices 2>/dev/null); do timeout 10 vdpa dev del "$n" 2>/dev/null; done
  cp "$W"/*.log "$SHARED/logs/" 2>/dev/null
  [[ ${E2E_KEEP:-0} == 1 ]] && note "work dir kept: $W" || rm -rf "$W"
}
trap cleanup EXIT

# fio_verify LABEL DEV fio-options...: write-then-verify (crc32c, fatal); ok when
# fio exits 0, every job reports error 0 and both wrote and read (verified) data.
fio_verify() {
  local label=$1 dev=$2 out rc; shift 2
  # run in $W and without verify state files (fio writes them to its cwd)
  out=$(cd "$W" && timeout -k 5 $((FIO_RUNTIME + 120)) fio --filename=/dev/"$dev" --direct=1 \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --runtime="$FIO_RUNTIME" \
        --output-format=terse --terse-version=3 "$@" 2>"$W/fio.err"); rc=$?
  local jobs bad
  jobs=$(grep -c '^3;' <<<"$out")
  # terse v3: 5 error, 6 read KiB, 8 read IOPS, 47 write KiB, 49 write IOPS
  bad=$(awk -F';' '/^3;/ && ($5 != 0 || $6 == 0 || $47 == 0)' <<<"$out")
  if ((rc == 0 && jobs > 0)) && [[ -z $bad ]]; then
    ok "$label ($(awk -F';' '/^3;/{n++; w += $49; r += $8; kb += $47} END {printf "%d jobs, %.0f MiB, write %.0f IOPS, verify-read %.0f IOPS", n, kb/1024, w, r}' <<<"$out"))"
  else
    notok "$label" "fio exit status $rc, $jobs terse lines" "bad jobs: $bad" "$(tail -n 15 "$W/fio.err")" "$(logtail "${CUR:-}")"
    return 1
  fi
}

bytes_of() { numfmt --from=iec "$1"; }

# ---------------------------------------------------------------------------------
section "peer $PEER; kernel $(uname -r); $(nproc) vCPUs; $(free -m | awk '/Mem:/{print $2}') MiB"
if vdpa mgmtdev show 2>/dev/null | grep -q 'vduse'; then ok "vdpa mgmtdev show lists vduse"
else notok "vdpa mgmtdev show lists vduse" "$(vdpa mgmtdev show 2>&1)"; fi
if [[ $PEER == vduse-blk ]]; then
  if out=$("$BIN" --help 2>&1); then ok "vduse-blk --help runs ($BIN)"
  else notok "vduse-blk --help runs" "$BIN: $out"; fi
else
  note "stand-in: $(qemu-storage-daemon --version | head -n 1)"
fi

# ---------------------------------------------------------------------------------
basic() {
  section "basic: create --attach, size/serial/queues, ext4, discard, SIGTERM (idle)"
  local n=e2e0 img=$W/basic.img ser=E2E-SER-0 t dev
  t=$SECONDS
  if ! dev_start "$n" "$img" --attach --size 256M --queues 4 --serial "$ser"; then
    notok "create --attach: a /dev/vd* with serial $ser appears" "$(logtail $n)" "$(dmesgtail)"
    dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  ok "create --attach: /dev/$dev with serial $ser appears ($((SECONDS - t)) s)"
  local drv; drv=$(basename "$(readlink /sys/bus/vdpa/devices/$n/driver 2>/dev/null)" 2>/dev/null)
  [[ $drv == virtio_vdpa && -d /sys/bus/vdpa/devices/$n ]] && ok "vdpa device $n is bound to virtio_vdpa" \
    || notok "vdpa device $n is bound to virtio_vdpa" "driver: ${drv:-none}"
  local size lbs hw want_hw
  size=$(($(cat /sys/block/$dev/size) * 512)); lbs=$(cat /sys/block/$dev/queue/logical_block_size)
  [[ $size == $((256 << 20)) ]] && ok "size is 256M" || notok "size is 256M" "/sys/block/$dev/size*512 = $size"
  [[ $lbs == 512 ]] && ok "logical block size 512" || notok "logical block size 512" "got $lbs"
  hw=$(ls /sys/block/$dev/mq | wc -l); want_hw=$(($(nproc) < 4 ? $(nproc) : 4))
  [[ $hw == "$want_hw" ]] && ok "blk-mq uses $hw hw queues (--queues 4, $(nproc) vCPUs)" \
    || notok "blk-mq uses $want_hw hw queues (--queues 4, $(nproc) vCPUs)" "got $hw"
  if [[ $PEER == vduse-blk ]]; then
    local l; l=$(timeout 10 "$BIN" list 2>&1)
    grep -qw -- "$n" <<<"$l" && ok "vduse-blk list shows $n" || notok "vduse-blk list shows $n" "$l"
  else skip "vduse-blk list shows $n" "not a qsd feature"; fi

  # ext4 round trip
  local mnt=$W/mnt sums=$W/sums i j
  mkdir -p "$mnt"
  t=$SECONDS
  if mkfs.ext4 -q -F /dev/$dev >"$W/mkfs.out" 2>&1 && mount /dev/$dev "$mnt"; then
    for i in 0 1 2 3; do
      mkdir -p "$mnt/d$i/sub"
      for j in $(seq 0 24); do
        head -c $(( (RANDOM % 256 + 1) * 1024 + RANDOM % 1000 )) /dev/urandom >"$mnt/d$i/f$j"
      done
      head -c 3M /dev/urandom >"$mnt/d$i/sub/big"
      ln -s "f0" "$mnt/d$i/link"
    done
    (cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$sums"
    sync
    if umount "$mnt"; then ok "ext4: mkfs, mount, write $(wc -l <"$sums") files, sync, umount ($((SECONDS - t)) s)"
    else notok "ext4: umount" "$(mount | grep "$mnt")"; fi
  else
    notok "ext4: mkfs + mount" "$(cat "$W/mkfs.out")" "$(dmesgtail)" "$(logtail $n)"
  fi
  if [[ -s $sums ]] && ! mountpoint -q "$mnt"; then
    check "ext4: fsck.ext4 -fn is clean" fsck.ext4 -fn /dev/$dev
    echo 3 >/proc/sys/vm/drop_caches
    if mount /dev/$dev "$mnt"; then
      check "ext4: remount, sha256 of all files match" bash -c "cd $(printf %q "$mnt") && sha256sum --quiet -c $(printf %q "$sums")"
      umount "$mnt"
    else notok "ext4: remount" "$(dmesgtail)"; fi
  fi

  # discard and write-zeroes
  local dmax zmax
  dmax=$(cat /sys/block/$dev/queue/discard_max_bytes); zmax=$(cat /sys/block/$dev/queue/write_zeroes_max_bytes)
  ((dmax > 0)) && ok "discard advertised (discard_max_bytes=$dmax)" || notok "discard advertised" "discard_max_bytes=0"
  ((zmax > 0)) && ok "write-zeroes advertised (write_zeroes_max_bytes=$zmax)" || notok "write-zeroes advertised" "write_zeroes_max_bytes=0"
  # discard: blkdiscard (VIRTIO_BLK_T_DISCARD); zeroout: blkdiscard -z (BLKZEROOUT,
  # i.e. WRITE_ZEROES *without* the unmap flag: the kernel passes NOUNMAP, so the
  # range may stay allocated); punch: fallocate -p on the block device (WRITE_ZEROES
  # with VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the device should deallocate).
  local mode label off cmd b0 b1 out
  for mode in discard zeroout punch; do
    case $mode in
      discard) off=64;  label="blkdiscard";  cmd=(blkdiscard -o $((64 << 20)) -l $((16 << 20))) ;;
      zeroout) off=96;  label="blkdiscard -z"; cmd=(blkdiscard -z -o $((96 << 20)) -l $((16 << 20))) ;;
      punch)   off=128; label="fallocate -p (write-zeroes+unmap)"; cmd=(fallocate -p -o $((128 << 20)) -l $((16 << 20))) ;;
    esac
    head -c 16M /dev/urandom >"$W/rand16"
    dd if="$W/rand16" of=/dev/$dev bs=1M seek=$off oflag=direct conv=fsync status=none
    b0=$(stat -c %b "$img")
    if out=$("${cmd[@]}" /dev/$dev 2>&1); then
      sync; b1=$(stat -c %b "$img")
      if cmp -s -n $((16 << 20)) <(dd if=/dev/$dev bs=1M skip=$off count=16 iflag=direct status=none) /dev/zero; then
        ok "$label: 16M range reads back as zeroes"
      else notok "$label: 16M range reads back as zeroes" "$(logtail $n)"; fi
      if [[ $mode == zeroout ]]; then
        ((b1 <= b0)) && ok "$label: backing file does not grow ($b0 -> $b1 blocks of 512; NOUNMAP, shrinking optional)" \
          || notok "$label: backing file does not grow" "stat -c %b: $b0 -> $b1"
      elif ((b1 <= b0 - (16 << 20) / 512 / 2)); then
        ok "$label: backing file shrinks ($b0 -> $b1 blocks of 512)"
      else notok "$label: backing file's allocated blocks shrink" "stat -c %b: $b0 -> $b1" "$(logtail $n)"; fi
    else
      notok "$label on /dev/$dev" "$out" "$(logtail $n)"
    fi
  done
  stop_checks "$n" "idle device"
}

# ---------------------------------------------------------------------------------
bs4k() {
  section "bs4k: --block-size 4096"
  local n=e2e4k img=$W/bs4k.img ser=E2E-SER-4K dev
  if ! dev_start "$n" "$img" --size 64M --block-size 4096 --queues 1 --serial "$ser"; then
    notok "create --block-size 4096: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  local lbs size
  lbs=$(cat /sys/block/$dev/queue/logical_block_size); size=$(($(cat /sys/block/$dev/size) * 512))
  [[ $lbs == 4096 ]] && ok "block-size 4096: logical block size is 4096" || notok "block-size 4096: logical block size is 4096" "got $lbs"
  [[ $size == $((64 << 20)) ]] && ok "block-size 4096: size is 64M" || notok "block-size 4096: size is 64M" "got $size"
  head -c 1M /dev/urandom >"$W/rand1"
  if dd if="$W/rand1" of=/dev/$dev bs=4k seek=3 oflag=direct conv=fsync status=none &&
     cmp -s "$W/rand1" <(dd if=/dev/$dev bs=4k skip=3 count=256 iflag=direct status=none) &&
     cmp -s -n $((1 << 20)) "$W/rand1" <(tail -c +$((3 * 4096 + 1)) "$img"); then
    ok "block-size 4096: 1M written at 12K reads back from device and backing file"
  else notok "block-size 4096: 1M written at 12K reads back" "$(logtail $n)"; fi
  stop_checks "$n" "4K device"
}

# ---------------------------------------------------------------------------------
fio_engine() {  # ENGINE: the daemon's I/O engine
  local eng=$1 n=e2efio img=$W/fio.img dev wait=()
  # uring: the queue threads sleep inside io_uring (--wait ring); everywhere else in poll() (the default)
  [[ $eng == uring && $PEER == vduse-blk ]] && wait=(--wait ring)
  section "fio: --engine $eng ${wait[*]}, --queues 4"
  rm -f "$img"
  if ! dev_start "$n" "$img" --size 256M --queues 4 --engine "$eng" "${wait[@]}" --serial "E2E-FIO-$eng"; then
    notok "engine $eng: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  local common=(--name="fio-$eng" --bs=4k --rw=randwrite --size="$FIO_SIZE" --offset_increment="$FIO_SIZE")
  fio_verify "engine $eng: fio 4k randwrite+verify QD1 numjobs 1" "$dev" "${common[@]}" --ioengine=libaio --iodepth=1 --numjobs=1
  fio_verify "engine $eng: fio 4k randwrite+verify QD32 numjobs 1" "$dev" "${common[@]}" --ioengine=io_uring --iodepth=32 --numjobs=1
  fio_verify "engine $eng: fio 4k randwrite+verify QD1 numjobs 4" "$dev" "${common[@]}" --ioengine=libaio --iodepth=1 --numjobs=4
  fio_verify "engine $eng: fio 4k randwrite+verify QD32 numjobs 4" "$dev" "${common[@]}" --ioengine=io_uring --iodepth=32 --numjobs=4
  fio_verify "engine $eng: fio 64k seq write+verify 64M QD8" "$dev" --name="seq-$eng" --bs=64k --rw=write \
    --size=64M --offset=128M --ioengine=libaio --iodepth=8
  # SIGTERM with I/O in flight
  local fpid frc t st
  (cd "$W" && exec timeout -k 5 60 fio --name=load --filename=/dev/$dev --direct=1 --ioengine=libaio --rw=randrw --bs=4k \
    --iodepth=16 --numjobs=2 --size=64M --offset_increment=64M --time_based --runtime=45 \
    --output-format=terse --terse-version=3 >"$W/load-$eng.out" 2>"$W/load-$eng.err") &
  fpid=$!
  st=$(awk '{print $1 + $5}' /sys/block/$dev/stat); sleep 4
  if ! kill -0 $fpid 2>/dev/null; then notok "engine $eng: fio load is running before SIGTERM" "$(cat "$W/load-$eng.err")"; fi
  note "I/Os during 4 s of load: $(( $(awk '{print $1 + $5}' /sys/block/$dev/stat) - st ))"
  stop_checks "$n" "engine $eng: SIGTERM during fio"
  t=$SECONDS; wait $fpid; frc=$?
  if ((frc == 124 || frc == 137)); then notok "engine $eng: fio ends after SIGTERM (not hung)" "fio was killed by timeout (rc $frc)"
  else ok "engine $eng: fio ends after SIGTERM (rc $frc, $(grep -c . "$W/load-$eng.err") stderr lines, $((SECONDS - t)) s after the daemon)"; fi
  no_leftovers "engine $eng: after SIGTERM"
}

# ---------------------------------------------------------------------------------
readonly_dev() {
  section "readonly: --readonly"
  local n=e2ero img=$W/ro.img dev s0 s1 out
  head -c 32M /dev/urandom >"$img"; s0=$(sha256sum <"$img")
  if ! dev_start "$n" "$img" --size 32M --readonly --serial E2E-RO; then
    notok "readonly: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  [[ $(cat /sys/block/$dev/ro) == 1 ]] && ok "readonly: /sys/block/$dev/ro is 1" || notok "readonly: /sys/block/$dev/ro is 1" "got $(cat /sys/block/$dev/ro)"
  if out=$(dd if=/dev/zero of=/dev/$dev bs=4k count=4 seek=10 oflag=direct conv=fsync 2>&1); then
    notok "readonly: a direct write fails" "dd succeeded: $out"
  else ok "readonly: a direct write fails ($(tail -n 1 <<<"$out"))"; fi
  cmp -s -n $((1 << 20)) "$img" <(dd if=/dev/$dev bs=1M count=1 iflag=direct status=none) \
    && ok "readonly: reads return the image's data" || notok "readonly: reads return the image's data" "$(logtail $n)"
  stop_checks "$n" "readonly device"
  s1=$(sha256sum <"$img")
  [[ $s0 == "$s1" ]] && ok "readonly: image checksum unchanged" || notok "readonly: image checksum unchanged" "$s0 -> $s1"
}

# ---------------------------------------------------------------------------------
host_section() {
  section "host: image on the shared repo dir ($SHARED)"
  local n=e2ehost dev off=$((5 * 1024 * 1024 + 4096)) len=$((3 * 1024 * 1024)) imgsize=$((32 << 20)) sha
  rm -f "$HOSTIMG" "$HOSTENV"; truncate -s "$imgsize" "$HOSTIMG"
  if ! dev_start "$n" "$HOSTIMG" --size 32M --serial E2E-HOST; then
    notok "host: device on a 9p-backed image appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  head -c "$len" /dev/urandom >"$W/pattern"; sha=$(sha256sum <"$W/pattern" | cut -d' ' -f1)
  if dd if="$W/pattern" of=/dev/$dev bs=4k seek=$((off / 4096)) oflag=direct conv=fsync status=none &&
     cmp -s "$W/pattern" <(dd if=/dev/$dev bs=4k skip=$((off / 4096)) count=$((len / 4096)) iflag=direct status=none); then
    ok "host: 3M pattern written at $off reads back through the device"
  else notok "host: pattern written at $off reads back through the device" "$(logtail $n)"; fi
  stop_checks "$n" "9p-backed device"
  sync
  printf 'OFFSET=%s\nLEN=%s\nSHA=%s\nIMGSIZE=%s\n' "$off" "$len" "$sha" "$imgsize" >"$HOSTENV"; sync
}

# ---------------------------------------------------------------------------------
manual() {
  section "manual: create without --attach, vdpa dev add/del by hand"
  if [[ $PEER != vduse-blk ]]; then skip "manual attach" "the qsd path is always manual"; return; fi
  local n=e2eman img=$W/man.img dev= i d
  if ! dev_start "$n" "$img" --no-attach --size 16M --serial E2E-MAN; then
    notok "no --attach: /dev/vduse/$n appears" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  ok "no --attach: /dev/vduse/$n appears"
  [[ ! -e /sys/bus/vdpa/devices/$n ]] && ok "no --attach: no vdpa device yet" || notok "no --attach: no vdpa device yet" "$(vdpa dev show 2>&1)"
  if out=$(vdpa dev add name "$n" mgmtdev vduse 2>&1); then
    for ((i = 0; i < DEV_TIMEOUT * 10; i++)); do
      for d in /sys/block/vd*; do [[ $(timeout 3 cat "$d/serial" 2>/dev/null) == E2E-MAN ]] && dev=${d##*/}; done
      [[ -n $dev ]] && break; sleep 0.1
    done
    [[ -n $dev ]] && ok "no --attach: vdpa dev add gives /dev/$dev" || notok "no --attach: vdpa dev add gives a block device" "$(logtail $n)"
    DDEV[$n]=$dev
    check "no --attach: vdpa dev del" timeout 20 vdpa dev del "$n"
  else notok "no --attach: vdpa dev add" "$out" "$(logtail $n)"; fi
  stop_checks "$n" "manually attached device"
}

# ---------------------------------------------------------------------------------
destroy() {
  section "destroy: vduse-blk destroy after the daemon was SIGKILLed"
  if [[ $PEER != vduse-blk ]]; then skip "vduse-blk destroy after SIGKILL" "not a qsd feature"; return; fi
  local n=e2edes img=$W/des.img out
  if ! dev_start "$n" "$img" --no-attach --size 16M --serial E2E-DES; then
    notok "destroy: device appears" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null; DPID[$n]=
  if [[ -e /dev/vduse/$n ]]; then
    if out=$(timeout 20 "$BIN" destroy "$n" 2>&1) && [[ ! -e /dev/vduse/$n ]]; then ok "vduse-blk destroy removes a dead daemon's device"
    else notok "vduse-blk destroy removes a dead daemon's device" "$out" "$(ls /dev/vduse)"; fi
  else
    skip "vduse-blk destroy after SIGKILL" "the kernel already removed /dev/vduse/$n"
  fi
}

# zstd: a compressed seekable image with an overlay, end to end: an ext4 tree
# packed with `image pack`, served read-only (writes refused), then with an
# overlay (files intact, fio verify, a flushed pattern survives a restart, the
# base image is never modified).
zstd_section() {
  section "zstd backend"
  if [[ $PEER != vduse-blk ]]; then skip "zstd backend" "vduse-blk only"; return; fi
  local raw=$W/zraw.img zst=$W/zbase.zst ovl=$W/zbase.ovl tree=$W/ztree m=$W/mnt f out sum0
  mkdir -p "$tree/docs" "$m"
  for f in $(seq 1 40); do seq 1 $((f * 300)) >"$tree/docs/f$f.txt"; done
  head -c 3M /dev/urandom >"$tree/random.bin"
  truncate -s 64M "$raw"
  mkfs.ext4 -q -F -d "$tree" "$raw" >/dev/null
  if out=$("$BIN" image pack "$raw" "$zst" --chunk-size 64K 2>&1) && "$BIN" image verify "$zst" >/dev/null 2>&1
  then ok "zstd: image pack + verify ($(stat -c %s "$zst") bytes from 64 MiB)"
  else notok "zstd: image pack + verify" "$out"; return; fi
  sum0=$(sha256sum <"$zst")
  (cd "$tree" && find . -type f -exec sha256sum {} + | sort -k2) >"$W/ztree.sums"

  DEV_BACKEND="zstd:$zst" dev_start zro "$raw" --serial zstd-ro --queues 2 || { notok "zstd: read-only device appears" "$(logtail zro)"; return; }
  local dev=${DDEV[zro]}
  if [[ $(cat /sys/block/$dev/ro) == 1 ]] && ! dd if=/dev/zero of=/dev/$dev bs=4k count=1 oflag=direct status=none 2>/dev/null
  then ok "zstd: without an overlay the device is read-only"
  else notok "zstd: without an overlay the device is read-only" "ro=$(cat /sys/block/$dev/ro)"; fi
  if cmp <(dd if=/dev/$dev bs=1M iflag=direct status=none) "$raw"; then ok "zstd: device reads equal the raw image"
  else notok "zstd: device reads equal the raw image" "$(logtail zro)"; fi
  stop_checks zro "zstd read-only"

  DEV_BACKEND="zstd:$zst,overlay=$ovl,cache=16M" dev_start zrw "$raw" --serial zstd-rw --queues 2 \
    || { notok "zstd: overlay device appears" "$(logtail zrw)"; return; }
  dev=${DDEV[zrw]}
  if mount -o ro /dev/$dev "$m" && (cd "$m" && find . -type f ! -path './lost+found/*' -exec sha256sum {} + | sort -k2) | diff -q - "$W/ztree.sums" >/dev/null
  then ok "zstd: ext4 tree on the compressed image reads back intact"
  else notok "zstd: ext4 tree on the compressed image reads back intact" "$(logtail zrw)"; fi
  umount "$m" 2>/dev/null
  fio_verify "zstd+overlay: fio 4k randwrite QD16 verify" "$dev" --name=zv --rw=randwrite --bs=4k --iodepth=16 \
    --ioengine=io_uring --size=16M --offset=32M
  head -c 1M /dev/urandom >"$W/zpat"
  dd if="$W/zpat" of=/dev/$dev bs=64k seek=16 oflag=direct conv=fsync status=none
  stop_checks zrw "zstd overlay"
  DEV_BACKEND="zstd:$zst,overlay=$ovl" dev_start zrw2 "$raw" --serial zstd-rw2 --queues 1 \
    || { notok "zstd: overlay device restarts" "$(logtail zrw2)"; return; }
  dev=${DDEV[zrw2]}
  if cmp <(dd if=/dev/$dev bs=64k skip=16 count=16 iflag=direct status=none) "$W/zpat"
  then ok "zstd: data flushed to the overlay survives a daemon restart"
  else notok "zstd: data flushed to the overlay survives a daemon restart" "$(logtail zrw2)"; fi
  stop_checks zrw2 "zstd overlay restart"
  if [[ $(sha256sum <"$zst") == "$sum0" ]]; then ok "zstd: the base image is never modified"
  else notok "zstd: the base image is never modified"; fi
}

# shellcheck source=scripts/nginx-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nginx-lib.sh"

remote_section() {
  section "remote backend: an ext4 image over HTTP from nginx, cached in memory and on disk"
  if [[ $PEER != vduse-blk ]]; then skip "remote backend" "vduse-blk only"; return; fi
  local www=$W/www tree=$W/rtree m=$W/mnt cache=$W/rcache port=18080 f dev out fetched
  mkdir -p "$www" "$tree/docs" "$m"
  for f in $(seq 1 60); do seq 1 $((f * 250)) >"$tree/docs/f$f.txt"; done
  head -c 4M /dev/urandom >"$tree/random.bin"
  truncate -s 64M "$www/disk.img"
  mkfs.ext4 -q -F -d "$tree" "$www/disk.img" >/dev/null
  (cd "$tree" && find . -type f -exec sha256sum {} + | sort -k2) >"$W/rtree.sums"
  if nginx_start "$www" $port "$W/nginx"; then ok "remote: nginx serves the image on 127.0.0.1:$port"
  else notok "remote: nginx serves the image" "$(cat "$W"/nginx/logs/*.log 2>/dev/null | tail -n 5)"; return; fi
  local url=http://127.0.0.1:$port/disk.img
  read_tree() {  # NAME LABEL: mount read-only, every file's sha256 equals the source tree's
    if mount -o ro,noload /dev/"${DDEV[$1]}" "$m" &&
       (cd "$m" && find . -type f ! -path './lost+found/*' -exec sha256sum {} + | sort -k2) | diff -q - "$W/rtree.sums" >/dev/null
    then ok "remote: $2"
    else notok "remote: $2" "$(logtail "$1")"; fi
    umount "$m" 2>/dev/null
  }
  stat_of() { "$BIN" stats "$1" 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'; }

  DEV_BACKEND="$url,cache-dir=$cache,chunk=256K" dev_start r1 "$www/disk.img" --serial remote1 --queues 2 \
    || { notok "remote: device appears" "$(logtail r1)"; return; }
  read_tree r1 "every file of the ext4 tree reads back equal to the source (cold)"
  sleep 1.2  # the stats file is rewritten every second
  fetched=$(stat_of r1 bytes_fetched)
  if [[ -n $fetched && $fetched -gt 0 ]]; then ok "remote: vduse-blk stats shows the fetch (bytes_fetched $fetched)"
  else notok "remote: vduse-blk stats shows the fetch" "$("$BIN" stats r1 2>&1 | head -n 5)"; fi
  stop_checks r1 "remote cold"

  DEV_BACKEND="$url,cache-dir=$cache,chunk=256K" dev_start r2 "$www/disk.img" --serial remote2 --queues 2 \
    || { notok "remote: device restarts" "$(logtail r2)"; return; }
  read_tree r2 "after a restart every file still reads back equal"
  sleep 1.2
  local refetched hits; refetched=$(stat_of r2 bytes_fetched); hits=$(stat_of r2 hits_disk)
  if [[ -n $refetched && -n $hits ]] && ((hits > 0 && refetched * 20 <= fetched)); then
    ok "remote: the disk cache is reused after a restart (fetched $refetched bytes vs $fetched cold, $hits disk hits)"
  else notok "remote: the disk cache is reused after a restart" "fetched $refetched bytes vs $fetched cold, disk hits $hits"; fi
  if cmp <(dd if=/dev/"${DDEV[r2]}" bs=1M iflag=direct status=none) "$www/disk.img"
  then ok "remote: the whole device equals the served image byte for byte"
  else notok "remote: the whole device equals the served image byte for byte" "$(logtail r2)"; fi
  stop_checks r2 "remote warm"

  # zstd image over HTTP, writes through an overlay.
  "$BIN" image pack "$www/disk.img" "$www/disk.zst" --chunk-size 64K >/dev/null 2>&1
  local sum0; sum0=$(sha256sum <"$www/disk.zst")
  DEV_BACKEND="http://127.0.0.1:$port/disk.zst,cache-dir=$cache,overlay=$W/r.ovl" dev_start rz "$www/disk.img" --serial remotez \
    || { notok "remote zstd: device appears" "$(logtail rz)"; return; }
  dev=${DDEV[rz]}
  if cmp <(dd if=/dev/$dev bs=1M iflag=direct status=none) "$www/disk.img"
  then ok "remote zstd: compressed chunks fetched remotely read back equal to the raw image"
  else notok "remote zstd: compressed chunks fetched remotely read back equal to the raw image" "$(logtail rz)"; fi
  head -c 1M /dev/urandom >"$W/rpat"
  dd if="$W/rpat" of=/dev/$dev bs=64k seek=100 oflag=direct conv=fsync status=none
  if cmp <(dd if=/dev/$dev bs=64k skip=100 count=16 iflag=direct status=none) "$W/rpat"
  then ok "remote zstd: writes land in the overlay and read back"
  else notok "remote zstd: writes land in the overlay and read back" "$(logtail rz)"; fi
  stop_checks rz "remote zstd"
  if [[ $(sha256sum <"$www/disk.zst") == "$sum0" ]]; then ok "remote zstd: the served object is never modified"
  else notok "remote zstd: the served object is never modified"; fi
  nginx_stop
}

# ---------------------------------------------------------------------------------
# Daemon-supplied bounce pages (VDUSE_IOTLB_REG_UMEM): the kernel copies request
# data into our memory instead of its own; data already in flight when they are
# registered (the partition scan) must survive the switch.
bounce_section() {
  section "bounce: --bounce user (VDUSE_IOTLB_REG_UMEM)"
  if [[ $PEER != vduse-blk ]]; then skip "user bounce pages" "vduse-blk only"; return; fi
  local n=e2eumem img=$W/umem.img dev
  head -c 64M /dev/urandom >"$img"
  if ! dev_start "$n" "$img" --queues 2 --serial E2E-UMEM --bounce user --log-level info; then
    notok "bounce user: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  local i
  for ((i = 0; i < 50; i++)); do grep -q "daemon pages registered" "${DLOG[$n]}" && break; sleep 0.1; done
  if grep -q "daemon pages registered" "${DLOG[$n]}"
  then ok "bounce user: $(grep -o 'bounce region: .*' "${DLOG[$n]}" | head -n 1)"
  else notok "bounce user: the daemon registers its pages" "$(logtail $n)" "$(dmesgtail)"; fi
  if cmp <(dd if=/dev/$dev bs=1M iflag=direct status=none) "$img"
  then ok "bounce user: the whole device reads back equal to the image"
  else notok "bounce user: the whole device reads back equal to the image" "$(logtail $n)"; fi
  fio_verify "bounce user: fio 4k randwrite+verify QD32 numjobs 2" "$dev" --name=umem --bs=4k --rw=randwrite \
    --size=8M --offset_increment=8M --ioengine=io_uring --iodepth=32 --numjobs=2
  fio_verify "bounce user: fio 1M seq write+verify QD8" "$dev" --name=umem-seq --bs=1M --rw=write \
    --size=32M --offset=32M --ioengine=libaio --iodepth=8
  # Unbind and bind again under the running daemon: the driver resets the device
  # (the kernel drops its bounce mapping, keeps our pages) and probes it afresh.
  timeout 20 vdpa dev del "$n"
  timeout 20 vdpa dev add name "$n" mgmtdev vduse
  local again=
  for ((i = 0; i < 100; i++)); do
    again=$(ls /sys/bus/vdpa/devices/"$n"/virtio*/block 2>/dev/null | head -n 1)
    [[ -n $again && -b /dev/$again ]] && break
    again=; sleep 0.1
  done
  if [[ -n $again ]] && cmp <(dd if=/dev/$again bs=1M iflag=direct status=none) "$img"
  then ok "bounce user: after vdpa dev del + add, the device reads back equal to the image"
  else notok "bounce user: after vdpa dev del + add, the device reads back equal to the image" "device: ${again:-none}" "$(logtail $n)" "$(dmesgtail)"; fi
  DDEV[$n]=$again
  stop_checks "$n" "bounce user"
}

want basic && basic
want bs4k && bs4k
if want fio; then fio_engine uring; fio_engine aio; fi
want readonly && readonly_dev
want zstd && zstd_section
want remote && remote_section
want bounce && bounce_section
want host && host_section
want manual && manual
want destroy && destroy
section "end"
no_leftovers "at the end"
note "guest part took $((SECONDS - T0)) s"

if [[ ${E2E_HOST_SUMMARY:-0} == 1 ]]; then
  echo "$pass $failed $skipped" >"$COUNTS"; sync
  note "guest: $pass passed, $failed failed, $skipped skipped (host checks follow)"
  exit 0
fi
want host && host_verify
summary
