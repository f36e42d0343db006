# shellcheck shell=bash
# lib/daemons.sh - start, find and stop the daemons behind /dev/vdX (sourced):
# vduse-blk itself, or qemu-storage-daemon's vduse-blk export driven by the same
# `vduse-blk create` options (translated here), so one script can run either or
# both. Runs where /dev/vduse/control exists (the guest), as root.
#
# The caller sets BIN (the vduse-blk binary), W (work dir: daemon logs go there)
# and may set PEER (vduse-blk, the default, or qsd: the kind dev_start starts)
# and DEV_TIMEOUT (seconds to wait for a device, default 30).
# dev_start sets DEV_CREATED_NS (ns since the epoch) once /dev/vduse/NAME appears.
# Per device NAME: DPID[NAME] (daemon pid, empty once stopped), DLOG[NAME] (its
# stderr), DDEV[NAME] (vdX), DKIND[NAME] (vduse-blk or qsd); CUR is the NAME
# dev_start saw last.
#
#   dev_start NAME IMG [--attach|--no-attach] [create options...]
#   dev_wait serial:SERIAL|vdpa:NAME [SECS [PID]]     prints vdX
#   dev_stop NAME [SECS]      dev_stop_all [SECS]     vdpa_del_all
#   logtail NAME              dmesgtail               (detail lines for reports)
#   stop_checks NAME LABEL    no_leftovers LABEL      (checks: need lib/report.sh)

declare -A DPID=() DLOG=() DDEV=() DKIND=()
DSEQ=0
CUR=

# bsleep SECS: sleeps without starting a process (read -t on a pipe that
# never has data): under TCG each fork+exec of `sleep` costs ~0.15 s, which
# made every wait below overshoot by that much per round.
exec {BSLEEP_FD}<> <(:)
bsleep() { read -rt "$1" -u "$BSLEEP_FD" _ 2>/dev/null || :; }

# dev_logged_disk NAME: sets LOGGED_DISK to the vdX that NAME's daemon logged
# ("attached NAME via virtio_vdpa as /dev/vdX"). Status 0: found; 1: not
# attached yet; 2: attached without a disk (vhost_vdpa). Builtins only
# (mapfile), so it can be polled cheaply.
dev_logged_disk() {
  local line lines=()
  LOGGED_DISK=
  mapfile -t lines <"${DLOG[$1]}" 2>/dev/null || return 1
  for line in "${lines[@]}"; do
    [[ $line == *"attached $1 via "* ]] || continue
    [[ $line == *" as /dev/vd"* ]] || return 2
    LOGGED_DISK=${line##* as /dev/}
    LOGGED_DISK=${LOGGED_DISK%%[!a-z0-9]*}   # a JSON log line goes on after the name
    return 0
  done
  return 1
}

dev_running() { [[ -n ${DPID[$1]:-} ]] && kill -0 "${DPID[$1]}" 2>/dev/null; }
logtail() { [[ -f ${DLOG[$1]:-} ]] && { echo "daemon stderr (${DLOG[$1]##*/}, last 25 lines):"; tail -n 25 "${DLOG[$1]}"; }; }
dmesgtail() { echo "dmesg (last 15 lines):"; dmesg | tail -n 15; }

# dev_wait serial:SERIAL|vdpa:NAME [SECS [PID]]: prints vdX once /dev/vdX is a
# block device (the disk whose serial is SERIAL, or the one bound to vdpa device
# NAME); status 1 after SECS (default DEV_TIMEOUT, 30) or as soon as PID is gone.
dev_wait() {
  local spec=$1 secs=${2:-${DEV_TIMEOUT:-30}} pid=${3:-} i d dev
  for ((i = 0; i < secs * 10; i++)); do
    dev=
    case $spec in
      serial:*)
        for d in /sys/block/vd*; do
          [[ -e $d/serial ]] || continue
          # a broken device can block a read of its serial: never wait on one
          [[ $(timeout 3 cat "$d/serial" 2>/dev/null) == "${spec#serial:}" ]] && { dev=${d##*/}; break; }
        done ;;
      vdpa:*)
        for d in /sys/bus/vdpa/devices/"${spec#vdpa:}"/virtio*/block/*; do
          [[ -e $d ]] && { dev=${d##*/}; break; }
        done ;;
      *) echo "dev_wait: bad spec $spec" >&2; return 2 ;;
    esac
    [[ -n $dev && -b /dev/$dev ]] && { echo "$dev"; return 0; }
    [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
    bsleep 0.1
  done
  return 1
}

# qsd_args NAME IMG [create options...]: sets QSD_BLOCKDEV and QSD_EXPORT, the
# qemu-storage-daemon --blockdev and --export that serve IMG like
# `vduse-blk create NAME --backend file:IMG OPTIONS` would. Understood: --queues,
# --queue-size, --block-size, --readonly, --serial, --engine (uring, aio, sync);
# everything else is ignored. DEV_QSD_FILE_OPTS (e.g. locking=off) is appended
# to the blockdev.
qsd_args() {
  local name=$1 img=$2 q=1 bs='' ro=0 eng='' qs='' serial=''; shift 2
  while (($#)); do
    case $1 in
      --queues) q=$2; shift ;; --block-size) bs=$2; shift ;; --readonly) ro=1 ;;
      --serial) serial=$2; shift ;; --engine) eng=$2; shift ;; --queue-size) qs=$2; shift ;;
      --size) shift ;;
    esac
    shift
  done
  QSD_BLOCKDEV="driver=file,node-name=f0,filename=$img,discard=unmap"
  case $eng in
    uring) QSD_BLOCKDEV+=",aio=io_uring" ;; aio) QSD_BLOCKDEV+=",aio=native,cache.direct=on" ;; sync) QSD_BLOCKDEV+=",aio=threads" ;;
  esac
  [[ -n ${DEV_QSD_FILE_OPTS:-} ]] && QSD_BLOCKDEV+=",$DEV_QSD_FILE_OPTS"
  QSD_EXPORT="type=vduse-blk,id=e0,node-name=f0,name=$name,num-queues=$q"
  if ((ro)); then QSD_EXPORT+=",writable=off"; else QSD_EXPORT+=",writable=on"; fi
  [[ -n $bs ]] && QSD_EXPORT+=",logical-block-size=$bs"
  [[ -n $qs ]] && QSD_EXPORT+=",queue-size=$qs"
  [[ -n $serial ]] && QSD_EXPORT+=",serial=$serial"
  return 0
}

# dev_start NAME IMG [--attach|--no-attach] [vduse-blk create options...]
# Starts a daemon of kind DEV_PEER (default PEER, default vduse-blk) in the
# background, stderr to $W/NAME.N.log; vduse-blk serves DEV_BACKEND (default
# file:IMG). IMG is created (sparse) if missing and --size is given, so both
# kinds see the asked-for size. Waits for /dev/vduse/NAME; with --attach (the
# default; for qsd: `vdpa dev add`) also until the block device is there, by
# --serial if given, else by the vdpa device, and sets DDEV[NAME] to vdX.
dev_start() {
  local name=$1 img=$2 attach=1 kind=${DEV_PEER:-${PEER:-vduse-blk}}; shift 2
  case ${1:-} in --attach) shift ;; --no-attach) attach=0; shift ;; esac
  local log=$W/$name.$((++DSEQ)).log serial='' arg prev=''
  # shellcheck disable=SC2034 # CUR: read by fio_verify (lib/fio.sh)
  DLOG[$name]=$log DDEV[$name]='' DKIND[$name]=$kind CUR=$name
  for arg in "$@"; do
    [[ $prev == --size && ! -e $img ]] && truncate -s "$arg" "$img"
    [[ $prev == --serial ]] && serial=$arg
    prev=$arg
  done
  : >"$log"
  if [[ $kind == vduse-blk ]]; then
    local att=(); ((attach)) && att=(--attach)
    "$BIN" create "$name" --backend "${DEV_BACKEND:-file:$img}" "$@" "${att[@]}" 2>"$log" &
  else
    qsd_args "$name" "$img" "$@"
    echo "+ qemu-storage-daemon --blockdev $QSD_BLOCKDEV --export $QSD_EXPORT" >"$log"
    qemu-storage-daemon --blockdev "$QSD_BLOCKDEV" --export "$QSD_EXPORT" 2>>"$log" &
  fi
  DPID[$name]=$!
  local i
  for ((i = 0; i < ${DEV_TIMEOUT:-30} * 20; i++)); do
    [[ -c /dev/vduse/$name ]] && break
    dev_running "$name" || break; bsleep 0.05
  done
  [[ -c /dev/vduse/$name ]] || return 1
  DEV_CREATED_NS=${EPOCHREALTIME/./}000   # /dev/vduse/NAME is there (benchmarks time the phases)
  ((attach)) || return 0
  if [[ $kind == qsd ]]; then vdpa dev add name "$name" mgmtdev vduse >>"$log" 2>&1 || return 1; fi
  if [[ $kind == vduse-blk ]]; then
    # The daemon names its own disk once attached (it reads its vdpa
    # device's sysfs entry): polled with builtins only.
    local got=1
    for ((i = 0; i < ${DEV_TIMEOUT:-30} * 20; i++)); do
      dev_logged_disk "$name"; got=$?
      if ((got == 0)) && [[ -b /dev/$LOGGED_DISK ]]; then DDEV[$name]=$LOGGED_DISK; return 0; fi
      ((got == 2)) && break                  # no disk of its own: the generic wait below
      dev_running "$name" || return 1
      bsleep 0.05
    done
    ((got == 2)) || return 1                 # timed out: not a second DEV_TIMEOUT below
  fi
  local spec=vdpa:$name
  [[ -n $serial ]] && spec=serial:$serial
  DDEV[$name]=$(dev_wait "$spec" "${DEV_TIMEOUT:-30}" "${DPID[$name]}")
  [[ -n ${DDEV[$name]} ]]
}

# dev_stop NAME [SECS]: the daemon's shutdown path (SIGTERM; for qsd first
# `vdpa dev del`, which vduse-blk does itself on SIGTERM). Sets STOP_RC (124 if
# still running after SECS, then SIGKILLed) and STOP_SECS; returns STOP_RC.
dev_stop() {
  local name=$1 secs=${2:-10} pid=${DPID[$1]:-} t i
  STOP_RC=0 STOP_SECS=0
  [[ -n $pid ]] || return 0
  t=$(date +%s%N)
  if [[ ${DKIND[$name]:-} == qsd ]]; then
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
  DPID[$name]=''
  return "$STOP_RC"
}

# dev_stop_all [SECS]: dev_stop every daemon still running.
dev_stop_all() {
  local n
  for n in "${!DPID[@]}"; do [[ -n ${DPID[$n]} ]] && dev_stop "$n" "${1:-10}"; done
  return 0
}

# vdpa_del_all: `vdpa dev del` every vdpa device (leftovers of a failed check).
vdpa_del_all() {
  local d
  for d in /sys/bus/vdpa/devices/*; do [[ -e $d ]] && timeout 10 vdpa dev del "${d##*/}" 2>/dev/null; done
  return 0
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
  # the leftovers must not break later checks
  [[ -e /sys/bus/vdpa/devices/$name ]] && timeout 10 vdpa dev del "$name" 2>/dev/null
  return 0
}

# no_leftovers LABEL: nothing in `vdpa dev show`, only control in /dev/vduse.
no_leftovers() {
  local show vd
  show=$(vdpa dev show 2>&1)
  # shellcheck disable=SC2012 # sorted names or ls's error, as one line
  vd=$(ls /dev/vduse 2>&1 | tr '\n' ' ')
  if [[ -z $show && $vd == "control " ]]; then ok "$1: vdpa dev show is empty, /dev/vduse has only control"
  else notok "$1: vdpa dev show is empty, /dev/vduse has only control" "vdpa dev show: $show" "/dev/vduse: $vd"; fi
}
