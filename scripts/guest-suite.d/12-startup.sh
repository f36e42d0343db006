# shellcheck shell=bash
# shellcheck disable=SC2015,SC2034 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/12-startup.sh - section "startup" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_startup: (vduse-blk only) one writer per image and start-up failures in
# the user's terms: a second daemon on the same image is refused; a mounted
# block device is refused; a FIFO fails at once instead of blocking; SIGTERM
# ends a start-up stuck on a remote server that never answers; a missing
# directory is named as such.

# startup_fails NAME SECS EXPECTED-TEXT ARGS...: create must exit non-zero within
# SECS with EXPECTED-TEXT on stderr and leave no /dev/vduse/NAME behind.
startup_fails() {
  local label=$1 secs=$2 want=$3 out rc; shift 3
  out=$(timeout "$secs" "$BIN" create "$@" 2>&1); rc=$?
  if ((rc != 0 && rc != 124)) && [[ $out == *"$want"* && ! -e /dev/vduse/$1 ]]; then
    ok "$label: refused in time ($(head -n 1 <<<"$out"))"
  else
    notok "$label: refused within $secs s, saying '$want'" "exit status $rc (124: still running after $secs s)" "$out"
  fi
}

run_startup() {
  section "startup: one writer per image, non-images, signals and messages at start-up"
  if [[ $PEER != vduse-blk ]]; then skip "start-up checks" "vduse-blk only"; return; fi
  local img=$W/shared.img n=e2eown loopdev mnt=$W/mnt fifo=$W/fifo port pid rc t i lfd lpid
  # A second daemon on an image in use (issue 14: both used to start, and one's files vanished).
  if dev_start "$n" "$img" --no-attach --size 32M --serial E2E-OWN; then
    startup_fails "second daemon on the same image" 20 "in use by another process" e2eown2 --backend "file:$img"
    startup_fails "read-only daemon on an image being written" 20 "being written by another process" \
      e2eown3 --backend "file:$img" --readonly
    dev_stop "$n" 10
    ((STOP_RC == 0)) && ok "first daemon still stops cleanly" || notok "first daemon still stops cleanly" "$(logtail $n)"
  else
    notok "first daemon on $img starts" "$(logtail $n)"
  fi
  # A mounted block device.
  modprobe loop 2>/dev/null
  truncate -s 64M "$W/loop.img"
  if loopdev=$(losetup -f --show "$W/loop.img") && mkfs.ext4 -q "$loopdev" && mkdir -p "$mnt" && mount "$loopdev" "$mnt"; then
    startup_fails "mounted block device" 20 "is in use (mounted" e2eloop --backend "file:$loopdev"
    umount "$mnt"
  else
    notok "set up a mounted loop device" "losetup/mkfs/mount failed"
  fi
  [[ -n ${loopdev:-} ]] && losetup -d "$loopdev" 2>/dev/null
  # Not an image: a FIFO (used to block forever in open, even read-only).
  mkfifo "$fifo"
  startup_fails "FIFO as image (read-only)" 10 "a FIFO" e2efifo --backend "file:$fifo" --readonly
  startup_fails "FIFO as zstd image" 10 "a FIFO" e2efifo2 --backend "zstd:$fifo"
  head -c 1M /dev/urandom >"$W/small.raw"
  if "$BIN" image pack "$W/small.raw" "$W/small.zst" >/dev/null 2>&1; then
    startup_fails "FIFO as zstd overlay" 10 "a FIFO" e2efifo3 --backend "zstd:$W/small.zst,overlay=$fifo"
  else
    notok "pack a small zstd image" "$("$BIN" image pack "$W/small.raw" "$W/small.zst" 2>&1)"
  fi
  # A missing directory is named, not reported as a read-only problem.
  startup_fails "image in a missing directory" 10 "does not exist" e2enodir --backend "file:$W/no/such/dir/disk.img" --size 64M
  # SIGTERM while a remote probe waits on a server that accepts but never answers.
  ip link set lo up 2>/dev/null
  exec {lfd}< <(python3 -c 'import socket,sys,time
s=socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True); time.sleep(120)')
  lpid=$!
  read -r -t 90 port <&"$lfd"
  if [[ -n $port ]]; then
    "$BIN" create e2esilent --backend "http://127.0.0.1:$port/disk.img,connect-timeout=30,timeout=60" 2>"$W/silent.log" &
    pid=$!
    sleep 3
    t=$SECONDS
    kill -TERM "$pid"
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"; wait "$pid" 2>/dev/null
      notok "SIGTERM during a stuck remote probe ends create" "still running 5 s after SIGTERM" "$(cat "$W/silent.log")"
    else
      wait "$pid"; rc=$?
      ((rc == 143)) && [[ ! -e /dev/vduse/e2esilent ]] \
        && ok "SIGTERM during a stuck remote probe ends create at once (exit $rc, $((SECONDS - t)) s)" \
        || notok "SIGTERM during a stuck remote probe ends create with status 143" "exit $rc" "$(cat "$W/silent.log")"
    fi
  else
    notok "start a silent TCP listener" "python3 printed no port"
  fi
  kill "$lpid" 2>/dev/null
  exec {lfd}<&-
}
