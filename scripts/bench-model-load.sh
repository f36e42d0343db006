#!/usr/bin/env bash
# bench-model-load.sh - the model-load scenario (issue 17) as one command: how
# long until a program has read every byte of a model file that lives in
# object storage, for the ways one gets it there, measured in the guest in one
# run with the rows alternating in every repetition.
#
# Data (made on the host, deterministic, cached under MODEL_DATA/MIB): a
# MODEL_MIB model-like file (scripts/lib/gen_model.py: safetensors-like JSON
# header, then 4 MiB blocks alternating incompressible bytes and repetitive
# metadata text, half each); an ext4 image holding it (model.ext4); that image
# packed as a zstd seekable image (`vduse-blk image pack`, 64K frames). In the
# guest, nginx serves the three from tmpfs with `limit_rate MODEL_RATE` (per
# request, i.e. per connection for these clients: an object store's
# per-connection cap) on loopback. Rows:
#   a  curl -o (to ext4 on a RAM disk), then read the file
#   b  aria2c -x4 -s4, then read the file
#   c  nbdkit curl plugin + readahead + cache(cache-on-read) filters, nbd-client,
#      mount the ext4 read-only, read the file
#   d  vduse-blk, remote raw image (format=raw,connections=4), mount, read
#   e  vduse-blk, remote zstd seekable image (format=zstd,connections=4)
#   f  e with prefetch-trace=PATH, the trace recorded by one priming start with
#      record-trace=PATH; skipped when `vduse-blk create --help` does not
#      mention prefetch-trace
# Cold: fresh daemon / fresh download, empty cache dir, guest page cache
# dropped; the clock starts before the daemon starts (or the download), so
# time to first byte includes start-up and mount (the programs themselves are
# in the page cache: see warm_tool). Warm: the same daemon (or
# the downloaded file) re-read after dropping the page cache. Bytes and
# connections that crossed the link are counted from nginx's log.
# Limit per row: max(bytes that must cross ÷ (rate × connections), warm time),
# bytes = the model file (a-d) or the zstd object (e, f); connections 1 (a),
# 4 (b, d, e, f), as counted in the log (c). Goals: d, e cold <= 1.5x limit;
# e >= 1.5x faster than b; e ahead of c.
# With MODEL_CONTAINER=1, also a container-start-like workload on its own
# ext4 image (scripts/lib/gen_rootfs.py: CONTAINER_MIB of library/text files,
# a start-up list of one file in four, shuffled), zstd-packed and read through
# vduse-blk as in (e): g = cold start reading the list in order (then warm),
# h = g with a prefetch trace recorded by one priming start (skipped, like f,
# without prefetch-trace).
#
#   scripts/bench-model-load.sh        # (wrap in flock /tmp/vduse-guest.lock)
# Writes bench/model-load.txt, .json, .png (gnuplot), raw samples in
# bench/model-load.samples (MODEL_OUT: another path and base name than
# bench/model-load, under the repository). Env: MODEL_MIB (128; see README for why not 1024), REPS (3), MODEL_RATE (32m,
# nginx syntax), MODEL_DATA (.build-model-load: a dir the guest sees), MODEL_ROWS
# ("a b c d e f"), MODEL_REMOTE_OPTS (extra remote options, e.g.
# ",memory=2G"), MODEL_CONTAINER (0), CONTAINER_MIB (64), VDUSE_BLK (binary, default .build/release/vduse-blk),
# VDUSE_VM_MEM (default: from MODEL_MIB).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=${VDUSE_BLK:-.build/release/vduse-blk}
[[ $BIN == /* ]] || BIN=$REPO/$BIN
MODEL_MIB=${MODEL_MIB:-128} REPS=${REPS:-3} MODEL_RATE=${MODEL_RATE:-32m}
MODEL_DATA=${MODEL_DATA:-$REPO/.build-model-load}  # the guest sees the repository
MODEL_ROWS=${MODEL_ROWS:-a b c d e f}
MODEL_CONTAINER=${MODEL_CONTAINER:-0} CONTAINER_MIB=${CONTAINER_MIB:-64}
PY=/usr/bin/python3; [[ -x $PY ]] || PY=python3
OUTBASE=${MODEL_OUT:-$REPO/bench/model-load}   # a path the guest sees
SAMPLES=$OUTBASE.samples
log() { echo "# $*" >&2; }

# ---- on the host -------------------------------------------------------------
make_data() {  # $1: dir; model.bin, model.ext4, model.zst, made once per size
  local d=$1
  [[ -f $d/.complete ]] && return 0
  rm -rf "$d"; mkdir -p "$d/fs"
  log "generating a ${MODEL_MIB} MiB model file, its ext4 image and zstd image in $d"
  "$PY" "$HERE/lib/gen_model.py" "$d/fs/model.safetensors" "$MODEL_MIB" || return 1
  local img_mib=$((MODEL_MIB + MODEL_MIB / 16 + 32))
  mkfs.ext4 -q -F -b 4096 -m 0 -U 00000000-0000-0000-0000-000000000017 -E root_owner=0:0 \
    -d "$d/fs" "$d/model.ext4" "${img_mib}M" >/dev/null || return 1
  mv "$d/fs/model.safetensors" "$d/model.bin" && rmdir "$d/fs"
  "$BIN" image pack "$d/model.ext4" "$d/model.zst" >/dev/null || return 1
  touch "$d/.complete"
}
make_rootfs() {  # $1: dir; rootfs.zst and startup.list, made once per size
  local d=$1
  [[ -f $d/.complete ]] && return 0
  rm -rf "$d"; mkdir -p "$d"
  log "generating a ${CONTAINER_MIB} MiB container-like rootfs image in $d"
  "$PY" "$HERE/lib/gen_rootfs.py" "$d/root" "$d/startup.list" "$CONTAINER_MIB" || return 1
  mkfs.ext4 -q -F -b 4096 -m 0 -U 00000000-0000-0000-0000-000000000023 -E root_owner=0:0 \
    -d "$d/root" "$d/rootfs.ext4" "$((CONTAINER_MIB * 3 / 2 + 32))M" >/dev/null || return 1
  "$BIN" image pack "$d/rootfs.ext4" "$d/rootfs.zst" >/dev/null || return 1
  (cd "$d/root" && xargs -d '\n' cat <../startup.list | wc -c) >"$d/startup.bytes" || return 1
  rm -rf "$d/root" "$d/rootfs.ext4"
  touch "$d/.complete"
}

if [[ ${1:-} != --in-guest ]]; then
  [[ -x $BIN ]] || { echo "bench-model-load: build first: swift build -c release" >&2; exit 1; }
  for t in nginx aria2c nbdkit nbd-client; do
    command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] ||
      { echo "bench-model-load: $t missing: bash scripts/setup-host.sh" >&2; exit 1; }
  done
  mkdir -p "$REPO/bench"
  DATA=$MODEL_DATA/$MODEL_MIB
  make_data "$DATA" || { echo "bench-model-load: could not make the images" >&2; exit 1; }
  CONTAINER_DIR=
  if [[ $MODEL_CONTAINER == 1 ]]; then
    CONTAINER_DIR=$MODEL_DATA/container-$CONTAINER_MIB
    make_rootfs "$CONTAINER_DIR" || { echo "bench-model-load: could not make the rootfs image" >&2; exit 1; }
  fi
  # guest tmpfs holds the three objects (2.5x), the RAM disk (1.1x), one cache (1x)
  MEM=${VDUSE_VM_MEM:-$((MODEL_MIB * 5 + 1536))M}
  log "guest: ${MEM} RAM, rows $MODEL_ROWS, $REPS repetitions, limit_rate $MODEL_RATE"
  t_start=$SECONDS
  MODEL_DATA_DIR=$DATA CONTAINER_DIR=$CONTAINER_DIR VDUSE_VM_MEM=$MEM VDUSE_VM_MODULES="nbd brd ${VDUSE_VM_MODULES:-}" \
  VDUSE_VM_TIMEOUT=${VDUSE_VM_TIMEOUT:-3600} \
  VDUSE_VM_ENV="MODEL_MIB REPS MODEL_RATE MODEL_DATA_DIR MODEL_ROWS MODEL_REMOTE_OPTS CONTAINER_DIR MODEL_OUT VDUSE_BLK ${VDUSE_VM_ENV:-}" \
    bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/bench-model-load.sh") --in-guest" || exit $?
  log "guest part took $((SECONDS - t_start)) s"
  "$PY" "$HERE/model-load-report.py" "$SAMPLES" "$OUTBASE" || exit 1
  if command -v gnuplot >/dev/null; then
    gnuplot -e "datafile='$OUTBASE.dat'; outfile='$OUTBASE.png'" \
      "$HERE/bench-model-load.gp" || log "gnuplot failed: no chart"
  else
    log "no gnuplot: no chart (bash scripts/setup-host.sh installs it)"
  fi
  cat "$OUTBASE.txt"
  exit 0
fi

# ---- in the guest -------------------------------------------------------------
# shellcheck source=scripts/lib/nginx.sh
source "$HERE/lib/nginx.sh"
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# the guest keeps everything in tmpfs: let /dev/shm use most of the RAM
mount -o remount,size=90% /dev/shm 2>/dev/null
W=$(mktemp -d /dev/shm/mload.XXXXXX)
PORT=18083 URL=http://127.0.0.1:18083
NBD_PORT=10810
MNT=$W/mnt DL=$W/dl TRACE=$W/model.trace
ACCESS=$W/access.log
NBDKIT_PID=
cleanup() {
  mountpoint -q "$MNT" && umount "$MNT"
  mountpoint -q "$DL" && umount "$DL"
  [[ -b /dev/nbd0 ]] && nbd-client -d /dev/nbd0 >/dev/null 2>&1
  [[ -n $NBDKIT_PID ]] && kill "$NBDKIT_PID" 2>/dev/null
  dev_stop_all 10
  nginx_stop
  [[ -n ${RD_PID:-} ]] && kill "$RD_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www" "$MNT" "$DL"
: >"$SAMPLES"
sample() { echo "$*" >>"$SAMPLES"; }
now_ns() { echo "${EPOCHREALTIME/./}000"; }   # no fork+exec of date (~0.15 s under TCG)
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# warm_tool ROW: load the row's programs into the page cache again after
# drop_caches. The guest's / is the host's over 9p under TCG: loading
# vduse-blk's ~75 MB of Swift runtime libraries from there took 5-20 s in a
# trial run (nbdkit, curl and aria2c are a few MB), an artefact of this set-up
# that would swamp the comparison; a real host loads them from local disk.
# bin_cold_load_s in the samples says what one such load costs here.
warm_tool() {
  case $1 in
    a) curl --version ;;
    b) aria2c --version ;;
    c) nbdkit curl --version; nbd-client -V ;;
    *) "$BIN" --help ;;
  esac >/dev/null 2>&1
  return 0
}
die() { echo "bench-model-load: $*" >&2; exit 1; }

t=$SECONDS
cp "$MODEL_DATA_DIR/model.bin" "$MODEL_DATA_DIR/model.ext4" "$MODEL_DATA_DIR/model.zst" "$W/www/" ||
  die "could not copy the images into the guest"
log "copied the images into guest tmpfs in $((SECONDS - t)) s"
FILE_BYTES=$(stat -c %s "$W/www/model.bin")
ZST_BYTES=$(stat -c %s "$W/www/model.zst")
IMG_BYTES=$(stat -c %s "$W/www/model.ext4")
STARTUP=() START_BYTES=0 TRACE_G=$W/rootfs.trace
if [[ -n ${CONTAINER_DIR:-} ]]; then
  cp "$CONTAINER_DIR/rootfs.zst" "$W/www/" || die "could not copy the rootfs image"
  mapfile -t STARTUP <"$CONTAINER_DIR/startup.list"
  START_BYTES=$(cat "$CONTAINER_DIR/startup.bytes")
fi

NGINX_HTTP_EXTRA="limit_rate $MODEL_RATE; log_format ml '\$connection \$body_bytes_sent \$status';" \
NGINX_ACCESS_LOG="$ACCESS ml" nginx_start "$W/www" "$PORT" "$W/nginx" || die "nginx did not start"

# the download target: ext4 on a RAM disk, so a warm read after drop_caches reads a disk
modprobe brd rd_nr=1 rd_size=$(((MODEL_MIB + MODEL_MIB / 8 + 64) * 1024)) || die "modprobe brd failed"
mkfs.ext4 -q -F /dev/ram0 && mount /dev/ram0 "$DL" || die "no ext4 on /dev/ram0"
modprobe nbd nbds_max=2 || die "modprobe nbd failed"

HAVE_TRACE=0
# Not `| grep -q`: with pipefail, grep quitting early fails the pipeline (SIGPIPE).
[[ $("$BIN" create --help 2>&1) == *prefetch-trace* ]] && HAVE_TRACE=1

coproc RD { "$PY" "$HERE/lib/timed_read.py"; }
RD_PID=$RD_PID
read -r -u "${RD[0]}" _ || die "reader did not start"
# timed T0 FILE: prints "ttfb=.. total=.. bytes=.."
timed() { echo "$*" >&"${RD[1]}"; local l; read -r -u "${RD[0]}" l; echo "$l"; }
secs_since() { awk -v n=$((${2:-$(now_ns)} - $1)) 'BEGIN { printf "%.3f", n / 1e9 }'; }
# ready ROW T0: the time from T0 until the file could be opened (downloaded /
# mounted); for block devices also until the device was there (attach)
ready() {
  sample "$1 cold ready $(secs_since "$2")"
  [[ -n ${ATTACH_NS:-} ]] && sample "$1 cold attach $(secs_since "$2" "$ATTACH_NS")"
  [[ -n ${CREATED_NS:-} ]] && sample "$1 cold created $(secs_since "$2" "$CREATED_NS")"
  ATTACH_NS= CREATED_NS=
}
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }

mark() { wc -l <"$ACCESS"; }
# link_use MARK: "BYTES CONNS" sent since MARK (connections that carried bytes)
link_use() { tail -n +$(($1 + 1)) "$ACCESS" | awk '$2 > 0 { b += $2; c[$1] = 1 } END { n = 0; for (k in c) n++; print b + 0, n }'; }

# record ROW PHASE RESULT [MARK]
record() {
  local row=$1 phase=$2 res=$3 m=${4:-}
  [[ $res == ttfb=* ]] || { log "$row $phase: read failed: $res"; sample "$row $phase error 1"; return 1; }
  local b; b=$(field bytes "$res")
  local want=$FILE_BYTES; [[ $row == [gh] ]] && want=$START_BYTES
  ((b == want)) || log "$row $phase: read $b bytes, expected $want"
  sample "$row $phase ttfb $(field ttfb "$res")"
  sample "$row $phase total $(field total "$res")"
  if [[ -n $m ]]; then
    local u; read -r -a u < <(link_use "$m")
    sample "$row $phase link_bytes ${u[0]}"
    sample "$row $phase conns ${u[1]}"
  fi
  log "$row $phase: $res${m:+ link=$(link_use "$m")}"
}

verify() {  # ROW FILE: byte-exact against the served file (first repetition only)
  if cmp -s "$2" "$W/www/model.bin"; then sample "$1 verify ok 1"; else sample "$1 verify ok 0"; log "$1: CONTENT DIFFERS"; fi
}

row_download() {  # ROW (a: curl, b: aria2c)
  local row=$1 t0 m res
  rm -f "$DL/model.bin"; drop_caches; warm_tool "$row"
  m=$(mark); t0=$(now_ns)
  if [[ $row == a ]]; then
    curl -sf -o "$DL/model.bin" "$URL/model.bin" || log "curl failed"
  else
    aria2c -q -x4 -s4 --file-allocation=none --allow-overwrite=true --auto-file-renaming=false \
      -d "$DL" -o model.bin "$URL/model.bin" || log "aria2c failed"
  fi
  ready "$row" "$t0"
  res=$(timed "$t0" "$DL/model.bin"); record "$row" cold "$res" "$m"
  drop_caches
  res=$(timed "$(now_ns)" "$DL/model.bin"); record "$row" warm "$res"
  rm -f "$DL/model.bin"
}

row_nbdkit() {
  local t0 m res i
  rm -rf "$W/nbdcache"; mkdir -p "$W/nbdcache"; drop_caches; warm_tool c
  m=$(mark); t0=$(now_ns)
  TMPDIR=$W/nbdcache nbdkit -f -r -i 127.0.0.1 -p "$NBD_PORT" --filter=readahead --filter=cache \
    curl "url=$URL/model.ext4" cache-on-read=true 2>"$W/nbdkit.log" &
  NBDKIT_PID=$!
  for ((i = 0; i < 100; i++)); do
    nbd-client 127.0.0.1 "$NBD_PORT" /dev/nbd0 -b 4096 -readonly >>"$W/nbdkit.log" 2>&1 && break
    sleep 0.1
  done
  ATTACH_NS=$(now_ns)
  mount -o ro,noload /dev/nbd0 "$MNT" || { log "nbd mount failed: $(tail -n 5 "$W/nbdkit.log")"; nbd_stop; return 1; }
  ready c "$t0"
  res=$(timed "$t0" "$MNT/model.safetensors"); record c cold "$res" "$m"
  drop_caches
  res=$(timed "$(now_ns)" "$MNT/model.safetensors"); record c warm "$res"
  ((REP == 1)) && verify c "$MNT/model.safetensors"
  nbd_stop
}
nbd_stop() {
  mountpoint -q "$MNT" && umount "$MNT"
  nbd-client -d /dev/nbd0 >/dev/null 2>&1
  kill "$NBDKIT_PID" 2>/dev/null; wait "$NBDKIT_PID" 2>/dev/null; NBDKIT_PID=
  rm -rf "$W/nbdcache"
}

# vduse_start NAME OBJECT OPTS: starts the daemon on $URL/OBJECT and mounts it at $MNT
vduse_start() {
  local name=$1 obj=$2 opts=$3
  DEV_BACKEND="$URL/$obj,connections=4,cache-dir=$W/cache-$name$opts${MODEL_REMOTE_OPTS:-}" \
    dev_start "$name" "" --readonly --serial "$name" ||
    { log "$name did not start: $(tail -n 5 "${DLOG[$name]}")"; dev_stop "$name" 10; return 1; }
  ATTACH_NS=$(now_ns) CREATED_NS=$DEV_CREATED_NS
  mount -o ro,noload "/dev/${DDEV[$name]}" "$MNT" || { log "$name: mount failed"; dev_stop "$name" 10; return 1; }
}
vduse_stop() {  # NAME; keeps the daemon's log in bench/raw/ (not in git) for a look at its phases
  mountpoint -q "$MNT" && umount "$MNT"
  dev_stop "$1" 10; rm -rf "$W/cache-$1"
  mkdir -p "$REPO/bench/raw" && cp "${DLOG[$1]}" "$REPO/bench/raw/model-load-$1-rep${REP:-0}.log" 2>/dev/null
}

row_vduse() {  # ROW
  local row=$1 t0 m res obj=model.ext4 opts=,format=raw
  [[ $row == d ]] || { obj=model.zst; opts=,format=zstd; }
  [[ $row == f ]] && opts+=",prefetch-trace=$TRACE"
  rm -rf "$W/cache-$row"; drop_caches; warm_tool "$row"
  m=$(mark); t0=$(now_ns)
  vduse_start "$row" "$obj" "$opts" || return 1
  ready "$row" "$t0"
  res=$(timed "$t0" "$MNT/model.safetensors"); record "$row" cold "$res" "$m"
  drop_caches
  res=$(timed "$(now_ns)" "$MNT/model.safetensors"); record "$row" warm "$res"
  ((REP == 1)) && verify "$row" "$MNT/model.safetensors"
  vduse_stop "$row"
}

# container_paths: the start-up list under $MNT
container_paths() { printf "$MNT/%s " "${STARTUP[@]}"; }

row_container() {  # ROW (g: cold start, h: with the recorded trace)
  local row=$1 t0 m res opts=,format=zstd
  [[ $row == h ]] && opts+=",prefetch-trace=$TRACE_G"
  rm -rf "$W/cache-$row"; drop_caches; warm_tool "$row"
  m=$(mark); t0=$(now_ns)
  vduse_start "$row" rootfs.zst "$opts" || return 1
  ready "$row" "$t0"
  # shellcheck disable=SC2046 # the paths have no spaces
  res=$(timed "$t0" $(container_paths)); record "$row" cold "$res" "$m"
  drop_caches
  # shellcheck disable=SC2046
  res=$(timed "$(now_ns)" $(container_paths)); record "$row" warm "$res"
  vduse_stop "$row"
}

run_row() {
  case $1 in
    a|b) row_download "$1" ;;
    c) row_nbdkit ;;
    d|e|f) row_vduse "$1" ;;
    g|h) row_container "$1" ;;
  esac
}

rows=()
want_rows=$MODEL_ROWS; ((${#STARTUP[@]})) && want_rows+=" g h"
for r in $want_rows; do
  if [[ $r == [fh] ]] && ((!HAVE_TRACE)); then
    echo "($r) skipped: no --prefetch-trace" >&2; sample "$r skipped - no --prefetch-trace"; continue
  fi
  rows+=("$r")
done

sample "meta file_bytes $FILE_BYTES"
sample "meta zst_bytes $ZST_BYTES"
sample "meta img_bytes $IMG_BYTES"
sample "meta rate $MODEL_RATE"
sample "meta reps $REPS"
sample "meta kernel $(uname -r)"
sample "meta date $(date -u +%F)"
sample "meta cpus $(nproc)"
drop_caches; t0=$(now_ns); "$BIN" --help >/dev/null 2>&1
sample "meta bin_cold_load_s $(secs_since "$t0")"   # `vduse-blk --help` with its libraries on 9p, cold
t0=$(now_ns); "$BIN" --help >/dev/null 2>&1
sample "meta bin_help_s $(secs_since "$t0")"   # the same, in the page cache: start-up under emulation

if ((${#STARTUP[@]})); then
  sample "meta startup_files ${#STARTUP[@]}"
  sample "meta startup_bytes $START_BYTES"
  sample "meta rootfs_zst_bytes $(stat -c %s "$W/www/rootfs.zst")"
fi
if [[ " ${rows[*]} " == *" h "* ]]; then
  log "priming: recording the trace of one cold start of (g)"
  REP=0
  vduse_start hprime rootfs.zst ",format=zstd,record-trace=$TRACE_G" || die "priming start failed"
  # shellcheck disable=SC2046
  timed "$(now_ns)" $(container_paths) >/dev/null
  vduse_stop hprime
  [[ -s $TRACE_G ]] || log "priming wrote no trace at $TRACE_G"
fi
if [[ " ${rows[*]} " == *" f "* ]]; then
  log "priming: recording the trace of one cold start of (e)"
  REP=0
  vduse_start prime model.zst ",format=zstd,record-trace=$TRACE" || die "priming start failed"
  timed "$(now_ns)" "$MNT/model.safetensors" >/dev/null
  vduse_stop prime
  [[ -s $TRACE ]] || log "priming wrote no trace at $TRACE"
fi

for ((REP = 1; REP <= REPS; REP++)); do
  n=${#rows[@]}
  for ((k = 0; k < n; k++)); do   # rotate the order each repetition
    r=${rows[$(((k + REP - 1) % n))]}
    log "rep $REP row $r"
    run_row "$r"
  done
done
log "done in $SECONDS s"
