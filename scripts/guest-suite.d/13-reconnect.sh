# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/13-reconnect.sh - section "reconnect" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_reconnect: (vduse-blk only; issue 14) the daemon is SIGKILLed under
# `fio --verify=crc32c` (randwrite, 2 jobs, QD16) and the same `create` again
# adopts the device: fio ends with 0 errors and every block verifies; the
# pause the guest saw is fio's worst completion latency. Also: a second daemon
# on a live device is refused; SIGKILL during setup and after a driver reset;
# destroy of a dead daemon's device is bounded (refuses with in-flight I/O,
# fast when idle). The same kill test runs on a zstd image with an overlay and
# on a remote image (nginx in the guest) with an overlay (crash-safe through
# the overlay map journal), each followed by a clean restart and fio
# --verify_only of the same blocks. RECONNECT_OVERLAYS=0 skips those two.

# rc_restart NAME IMG [create options...]: the same `create` again, in the
# background (DPID/DLOG updated); waits until the daemon logs that it adopted
# (or created) the device. Status 1 if it died or took over 30 s.
# RC_STAGES: when the backend was open (the "adopting it" line) and when the
# device was adopted, in seconds after the spawn (0.1 s polling).
rc_restart() {
  local name=$1 img=$2 log i t0 topen=; shift 2
  log=$W/$name.$((++DSEQ)).log
  DLOG[$name]=$log
  : >"$log"
  t0=$(date +%s%N)
  "$BIN" create "$name" --backend "${DEV_BACKEND:-file:$img}" "$@" 2>"$log" &
  DPID[$name]=$!
  for ((i = 0; i < 300; i++)); do
    [[ -z $topen ]] && grep -q 'adopting it' "$log" && topen=$(date +%s%N)
    if grep -qE 'adopted /dev/vduse|created /dev/vduse' "$log"; then
      RC_STAGES=$(awk -v a="$t0" -v o="${topen:-0}" -v b="$(date +%s%N)" \
        'BEGIN { if (o > 0) printf "backend open %.1f s after the spawn, adopted at %.1f s", (o-a)/1e9, (b-a)/1e9; else printf "ready %.1f s after the spawn", (b-a)/1e9 }')
      return 0
    fi
    dev_running "$name" || return 1
    sleep 0.1
  done
  return 1
}

# rc_fio_json FILE: "errors max_clat_ms write_mib" from fio's JSON output.
rc_fio_json() {
  python3 - "$1" <<'PY'
import json, sys
try:
    text = open(sys.argv[1]).read()
    d = json.loads(text[text.index("{"):])
except Exception as e:
    print("-1 -1 0"); sys.exit()
errs = sum(j.get("error", 0) for j in d["jobs"])
clat = max(max(j["write"]["lat_ns"]["max"], j["read"]["lat_ns"]["max"]) for j in d["jobs"])
mib = sum(j["write"]["io_bytes"] for j in d["jobs"]) / 1048576
print(errs, "%.0f" % (clat / 1e6), "%.0f" % mib)
PY
}

# rc_kill_under_fio LABEL NAME IMG [create options...]: fio (randwrite, 2 jobs,
# QD16, crc32c verify) runs; 1.5 s in, SIGKILL the daemon, 1 s later start the
# same create again; fio must finish with 0 errors.
# rc_wait_writes DEV N: waits (up to 60 s) until DEV has completed N more writes
# than when called, so a kill lands while fio's I/O is really flowing.
rc_wait_writes() {
  local dev=$1 n=$2 base i
  base=$(awk '{print $5}' "/sys/block/$dev/stat")
  for ((i = 0; i < 600; i++)); do
    (($(awk '{print $5}' "/sys/block/$dev/stat") - base >= n)) && return 0
    sleep 0.1
  done
  return 1
}

# The fio job of the kill tests (rc_kill_under_fio adds the device, the size,
# --do_verify=1 and the output; rc_verify_again reruns it as --verify_only).
RC_FIO_JOB=(--name=rc --direct=1 --ioengine=libaio --rw=randwrite --bs=4k --iodepth=16 --numjobs=2
            --offset_increment=32M --verify=crc32c --verify_fatal=1 --verify_state_save=0)

rc_kill_under_fio() {
  local label=$1 name=$2 img=$3 sig=${RC_SIGNAL:-KILL} pause=${RC_DOWN:-1}; shift 3
  if ! dev_start "$name" "$img" "$@"; then
    notok "$label: device appears" "$(logtail "$name")"; dev_stop "$name" 5; return 1
  fi
  local dev=${DDEV[$name]} out=$W/$name.fio.json rc t0 t1
  (cd "$W" && exec timeout -k 5 300 fio "${RC_FIO_JOB[@]}" --filename="/dev/$dev" --size="${RC_FIO_SIZE:-24M}" \
     --do_verify=1 --output-format=json --output="$out" >"$W/$name.fio.err" 2>&1) &
  local fpid=$!
  rc_wait_writes "$dev" "${RC_WAIT_WRITES:-3000}" || note "$label: fio wrote fewer than 3000 blocks in 60 s"
  t0=$(date +%s.%N)
  kill -"$sig" "${DPID[$name]}"; wait "${DPID[$name]}" 2>/dev/null; DPID[$name]=
  sleep "$pause"
  if ! rc_restart "$name" "$img" "$@"; then
    notok "$label: the same create adopts the device" "$(logtail "$name")" "$(dmesgtail)"
    kill -KILL $fpid 2>/dev/null; wait $fpid 2>/dev/null
    return 1
  fi
  t1=$(date +%s.%N)
  grep -q 'adopting' "${DLOG[$name]}" && ok "$label: the same create adopts the device ($(grep -o 'queue [0-9]*: resuming.*' "${DLOG[$name]}" | head -n 2 | tr '\n' ';'))" \
    || notok "$label: the same create adopts the device" "$(logtail "$name")"
  wait $fpid; rc=$?
  local errs clat mib
  read -r errs clat mib < <(rc_fio_json "$out")
  [[ $errs == -1 ]] && note "fio output: $(head -c 600 "$out" | tr '\n' ' ')"
  if ((rc == 0)) && [[ $errs == 0 ]]; then
    ok "$label: fio randwrite 2x QD16 verify=crc32c across SIG$sig + restart: 0 errors, every block verified ($mib MiB)"
  else
    notok "$label: fio across SIG$sig + restart" "fio status $rc, errors $errs" "$(tail -n 15 "$W/$name.fio.err")" "$(logtail "$name")" "$(dmesgtail)"
  fi
  note "$label: pause seen by the guest (fio worst total latency, submit to completion): ${clat} ms; daemon down $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (signal to adopted, $pause s of it deliberate; $RC_STAGES)"
  return 0
}

# rc_qsd_side_by_side: the same SIGKILL + restart with qemu-storage-daemon's
# vduse-blk export (its reconnect log lives in TMPDIR, a tmpfs here): a note
# with its pause, for comparison; a check only that fio verified.
rc_qsd_side_by_side() {
  command -v qemu-storage-daemon >/dev/null || { skip "qemu-storage-daemon reconnect" "not installed"; return; }
  local n=e2eqrc img=$W/qrc.img out=$W/qrc.fio.json t0 t1 rc
  if ! DEV_PEER=qsd dev_start "$n" "$img" --size 128M --queues 2 --serial E2E-QRC; then
    skip "qemu-storage-daemon reconnect" "its device did not appear: $(logtail "$n" | tail -n 3 | tr '\n' ' ')"
    dev_stop "$n" 5; return
  fi
  local dev=${DDEV[$n]}
  (cd "$W" && exec timeout -k 5 300 fio --name=q --filename="/dev/$dev" --direct=1 --ioengine=libaio \
     --rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=24M --offset_increment=32M \
     --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
     --output-format=json --output="$out" >"$W/qrc.fio.err" 2>&1) &
  local fpid=$!
  rc_wait_writes "$dev" 3000
  t0=$(date +%s.%N)
  kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null
  sleep 1
  qsd_args "$n" "$img" --size 128M --queues 2 --serial E2E-QRC
  qemu-storage-daemon --blockdev "$QSD_BLOCKDEV" --export "$QSD_EXPORT" 2>>"${DLOG[$n]}" &
  DPID[$n]=$!
  wait $fpid; rc=$?
  t1=$(date +%s.%N)
  local errs clat mib
  read -r errs clat mib < <(rc_fio_json "$out")
  if ((rc == 0)) && [[ $errs == 0 ]]; then
    ok "qemu-storage-daemon: fio verify across SIGKILL + restart: 0 errors ($mib MiB)"
  else
    notok "qemu-storage-daemon: fio verify across SIGKILL + restart" "fio status $rc, errors $errs" "$(tail -n 5 "$W/qrc.fio.err")" "$(logtail "$n")"
  fi
  note "qemu-storage-daemon: pause seen by the guest ${clat} ms (same 1 s deliberate downtime)"
  dev_stop "$n" 10
}

# rc_verify_again LABEL NAME SERIAL: after a kill test, a clean stop (SIGTERM:
# the overlay closes), a fresh `create` of the same backend (DEV_BACKEND; a new
# device, the overlay reopened from its file and map journal) and fio
# --verify_only of every block the kill test wrote.
rc_verify_again() {
  local label=$1 name=$2 serial=$3 out rc
  dev_stop "$name" 10
  if ((STOP_RC != 0)); then notok "$label: the adopting daemon exits 0 on SIGTERM" "status $STOP_RC" "$(logtail "$name")"; fi
  if ! dev_start "$name" "$W/$name.none" --queues 2 --serial "$serial"; then
    notok "$label: a fresh create after the crash serves the overlay" "$(logtail "$name")"; dev_stop "$name" 5; return
  fi
  out=$(cd "$W" && timeout -k 5 120 fio "${RC_FIO_JOB[@]}" --filename="/dev/${DDEV[$name]}" --size="${RC_FIO_SIZE:-24M}" \
        --verify_only --output-format=terse --terse-version=3 2>"$W/$name.vo.err"); rc=$?
  if ((rc == 0)) && [[ -n $out ]] && ! awk -F';' '/^3;/ && ($5 != 0 || $6 == 0) {bad = 1} END {exit !bad}' <<<"$out"; then
    ok "$label: after a clean stop and a fresh create every block still verifies ($(awk -F';' '/^3;/{kb += $6} END {printf "%.0f MiB", kb/1024}' <<<"$out") read)"
  else
    notok "$label: after a clean stop and a fresh create every block still verifies" "fio status $rc" "$(tail -n 8 "$W/$name.vo.err")" "$(logtail "$name")"
  fi
  dev_stop "$name" 10
}

# rc_overlay_backends: the kill test on `zstd:IMAGE,overlay=PATH` and on a
# remote image served by nginx with an overlay (issue 14 item 6), each then
# verified again after a clean restart.
rc_overlay_backends() {
  local raw=$W/rcz.raw zst=$W/rcz.zst out www=$W/rcwww port=18081 zovl=$SHARED/rcz.ovl
  local sz=${RC_OVL_FIO_SIZE:-12M}
  truncate -s 64M "$raw"
  # The zstd overlay lives on the slow 9p share, so that overlay writes are
  # really in flight in the daemon at the kill (resubmitted by the adopter).
  if out=$("$BIN" image pack "$raw" "$zst" --chunk-size 64K 2>&1); then
    DEV_BACKEND="zstd:$zst,overlay=$zovl" RC_FIO_SIZE=8M RC_WAIT_WRITES=500 \
      rc_kill_under_fio "zstd+overlay (overlay on 9p)" e2erz "$W/e2erz.none" --queues 2 --serial E2E-RZ0 \
      && DEV_BACKEND="zstd:$zst,overlay=$zovl" RC_FIO_SIZE=8M rc_verify_again "zstd+overlay" e2erz E2E-RZ0
    dev_stop e2erz 10
  else
    notok "zstd+overlay: image pack" "$out"
  fi
  rm -f "$raw" "$zst" "$zovl"
  if ! command -v nginx >/dev/null; then skip "remote+overlay SIGKILL" "nginx not installed"; return; fi
  mkdir -p "$www"; truncate -s 64M "$www/base.img"
  if ! nginx_start "$www" $port "$W/rcnginx"; then
    notok "remote+overlay: nginx serves the image" "$(tail -n 5 "$W"/rcnginx/logs/*.log 2>/dev/null)"; return
  fi
  local spec="http://127.0.0.1:$port/base.img,cache-dir=$W/rccache,overlay=$W/rcr.ovl"
  DEV_BACKEND=$spec RC_FIO_SIZE=$sz RC_WAIT_WRITES=1000 \
    rc_kill_under_fio "remote+overlay" e2err "$W/e2err.none" --queues 2 --serial E2E-RR0 \
    && DEV_BACKEND=$spec RC_FIO_SIZE=$sz rc_verify_again "remote+overlay" e2err E2E-RR0
  dev_stop e2err 10
  nginx_stop
  rm -rf "$www" "$W/rccache" "$W/rcr.ovl"
}

# rc_no_log: the benchmark switch --no-inflight-log (A/B of the log's cost)
# writes no log, and after a SIGKILL the same create refuses to adopt (saying
# why) instead of guessing; destroy then removes the idle device.
rc_no_log() {
  local n=e2ernl img=$W/rnl.img out rc
  if ! dev_start "$n" "$img" --size 16M --queues 1 --serial E2E-RNL --no-inflight-log; then
    notok "--no-inflight-log: device appears" "$(logtail "$n")"; dev_stop "$n" 5; return
  fi
  local st=${VDUSE_BLK_RUN_DIR:-/run/vduse-blk}/$n
  [[ -f $st/lock && ! -e $st/inflight ]] && ok "--no-inflight-log: the device is served with a lock and no in-flight log" \
    || notok "--no-inflight-log: lock, no in-flight log" "$(ls -l "$st" 2>&1)"
  udevadm settle -t 10 2>/dev/null; sleep 0.5
  kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null; DPID[$n]=
  out=$(timeout 20 "$BIN" create "$n" --backend "file:$img" --queues 1 --serial E2E-RNL 2>&1); rc=$?
  if ((rc != 0)) && [[ $out == *"no in-flight log"* ]]; then
    ok "--no-inflight-log: after SIGKILL the same create refuses to adopt (\"${out##*vduse-blk: }\")"
  else notok "--no-inflight-log: after SIGKILL the same create refuses to adopt" "status $rc: $out"; fi
  out=$(timeout 60 "$BIN" destroy "$n" 2>&1); rc=$?
  if ((rc == 0)) && [[ ! -e /dev/vduse/$n ]]; then ok "--no-inflight-log: destroy removes the dead daemon's device"
  else notok "--no-inflight-log: destroy removes the dead daemon's device" "status $rc: $out"; fi
}

run_reconnect() {
  section "reconnect: SIGKILL of the daemon, then the same create adopts the device"
  if [[ $PEER != vduse-blk ]]; then skip "reconnect" "vduse-blk only (qsd: see RECONNECT_QSD)"; return; fi
  local n=e2erc img=$W/rc.img out t0 secs
  t0=$(date +%s%N); "$BIN" --help >/dev/null 2>&1
  note "a vduse-blk process start (--help) takes $(( ($(date +%s%N) - t0) / 1000000 )) ms in this guest (part of every restart's pause)"
  local opts=(--size 128M --queues 2 --serial E2E-RC0)
  # A slow image (on the 9p share, io_uring punts to workers): requests are
  # really in flight in the daemon at the kill, so the log's resubmission runs.
  if [[ ${RECONNECT_SLOW:-1} == 1 ]]; then
    local slow=e2erc9 simg9=$SHARED/rc9p.img
    RC_FIO_SIZE=8M RC_WAIT_WRITES=500 rc_kill_under_fio "file on 9p (slow)" "$slow" "$simg9" --size 64M --queues 2 --serial E2E-RC9
    grep -ho 'queue [0-9]*: resuming.*' "${DLOG[$slow]}" | sed 's/^/# slow: /'
    dev_stop "$slow" 10
    rm -f "$simg9"
  fi
  rc_kill_under_fio "file" "$n" "$img" "${opts[@]}"
  # Planned upgrade: SIGUSR2 drains and leaves the device; the new binary's create adopts it.
  if dev_running "$n"; then
    local fpid2
    (cd "$W" && exec timeout -k 5 300 fio --name=up --filename="/dev/${DDEV[$n]}" --direct=1 --ioengine=libaio \
       --rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=24M --offset_increment=32M \
       --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
       --output-format=json --output="$W/up.fio.json" >"$W/up.fio.err" 2>&1) &
    fpid2=$!
    rc_wait_writes "${DDEV[$n]}" 3000 || note "upgrade: fio wrote fewer than 3000 blocks in 60 s"
    t0=$(date +%s.%N)
    local oldlog=${DLOG[$n]}
    kill -USR2 "${DPID[$n]}"; wait "${DPID[$n]}"; local urc=$?; DPID[$n]=
    if rc_restart "$n" "$img" "${opts[@]}"; then
      local t1 errs clat mib
      t1=$(date +%s.%N)
      wait $fpid2; rc=$?
      read -r errs clat mib < <(rc_fio_json "$W/up.fio.json")
      if ((urc == 0 && rc == 0)) && [[ $errs == 0 ]] && grep -q 'handed .* over' "$oldlog"; then
        ok "planned upgrade (SIGUSR2, then the same create): fio verify 0 errors ($mib MiB), old daemon exited 0"
      else notok "planned upgrade under fio" "daemon exit $urc, fio status $rc, errors $errs" "$(logtail "$n")"; fi
      note "upgrade: pause seen by the guest ${clat} ms; handover $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (signal to adopted; $RC_STAGES)"
    else
      notok "planned upgrade: the new daemon adopts" "$(logtail "$n")"
      kill -KILL $fpid2 2>/dev/null; wait $fpid2 2>/dev/null
    fi
  fi

  # A second daemon on the live device is refused, and changes nothing.
  if dev_running "$n"; then
    out=$(timeout 20 "$BIN" create "$n" --backend "file:$img" "${opts[@]}" 2>&1); local rc=$?
    if ((rc != 0)) && [[ $out == *"in use by pid ${DPID[$n]}"* ]] && dev_running "$n"; then
      ok "a second daemon on the live device is refused (\"${out##*: }\")"
    else notok "a second daemon on the live device is refused" "status $rc: $out"; fi
    # Options that do not match the device: clear error, device untouched.
    kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null; DPID[$n]=
    out=$(timeout 20 "$BIN" create "$n" --backend "file:$img" --size 128M --queues 1 --serial E2E-RC0 2>&1); rc=$?
    if ((rc != 0)) && [[ $out == *"other"* || $out == *"queue"* ]]; then
      ok "adopting with other options is refused (\"${out##*vduse-blk: }\")"
    else notok "adopting with other options is refused" "status $rc: $out"; fi
    if rc_restart "$n" "$img" "${opts[@]}" && FIO_RUNTIME=20 fio_verify "after a refused adoption the right options adopt and serve" "${DDEV[$n]}" \
        --name=v --ioengine=libaio --rw=randwrite --bs=4k --iodepth=8 --size=8M; then :; fi
  fi

  # SIGKILL during a driver reset: the daemon is stopped (SIGSTOP), the unbind
  # resets the device and waits for the daemon's answer to SET_STATUS 0; the
  # daemon is SIGKILLed with that message unanswered, and the same create
  # answers it (the kernel re-queues it). Then SIGKILL after the reset (an idle,
  # reset device is adopted) and a re-bind while no daemon listens.
  local vdev upid i
  vdev=$(basename "$(readlink -f /sys/block/"${DDEV[$n]}"/device 2>/dev/null)" 2>/dev/null)
  if dev_running "$n" && [[ $vdev == virtio* ]]; then
    udevadm settle -t 10 2>/dev/null
    kill -STOP "${DPID[$n]}"
    (echo "$vdev" >/sys/bus/virtio/drivers/virtio_blk/unbind) 2>/dev/null &
    upid=$!
    sleep 1.5
    local waiting=no; kill -0 $upid 2>/dev/null && waiting=yes
    kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null; DPID[$n]=
    sleep 0.5
    if rc_restart "$n" "$img" "${opts[@]}"; then
      for ((i = 0; i < 300; i++)); do kill -0 $upid 2>/dev/null || break; sleep 0.1; done
      if ! kill -0 $upid 2>/dev/null && [[ ! -e /sys/block/${DDEV[$n]} ]]; then
        ok "SIGKILL during a driver reset (unbind waiting on the daemon: $waiting): the same create answers the reset, the unbind completes"
      else
        notok "SIGKILL during a driver reset: the unbind completes after the restart" "unbind still waiting: $(kill -0 $upid 2>/dev/null && echo yes || echo no)" "$(logtail "$n")" "$(dmesgtail)"
      fi
    else
      notok "SIGKILL during a driver reset: the same create adopts" "$(logtail "$n")" "$(dmesgtail)"
    fi
    wait $upid 2>/dev/null
  fi
  if dev_running "$n" && [[ $vdev == virtio* ]]; then
    sleep 0.5
    kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null; DPID[$n]=
    (echo "$vdev" >/sys/bus/virtio/drivers/virtio_blk/bind) 2>/dev/null &
    local bpid=$!
    sleep 1
    if rc_restart "$n" "$img" "${opts[@]}" && wait $bpid && DDEV[$n]=$(dev_wait serial:E2E-RC0 30); then
      FIO_RUNTIME=20 fio_verify "SIGKILL after a driver reset: re-bound device serves and verifies" "${DDEV[$n]}" \
        --name=v --ioengine=libaio --rw=randwrite --bs=4k --iodepth=8 --size=8M
    else
      notok "SIGKILL after a driver reset: re-bound device serves" "$(logtail "$n")" "$(dmesgtail)"
    fi
  else
    skip "SIGKILL during and after a driver reset" "no running daemon or virtio device ($vdev)"
  fi
  dev_stop "$n" 10
  [[ ! -e /dev/vduse/$n ]] && ok "SIGTERM after adoption removes the device" || notok "SIGTERM after adoption removes the device" "$(ls /dev/vduse)" "$(logtail "$n")"

  if [[ ${RECONNECT_OVERLAYS:-1} == 1 ]]; then rc_overlay_backends; fi
  rc_no_log

  # SIGKILL during setup: as soon as /dev/vduse/NAME exists, before attach.
  local s=e2ers simg=$W/rs.img
  truncate -s 64M "$simg"
  "$BIN" create "$s" --backend "file:$simg" --queues 1 --serial E2E-RS0 --attach 2>"$W/$s.0.log" &
  local spid=$!
  for ((i = 0; i < 300; i++)); do [[ -c /dev/vduse/$s ]] && break; sleep 0.02; done
  kill -KILL $spid; wait $spid 2>/dev/null
  if [[ -c /dev/vduse/$s ]]; then
    DLOG[$s]=$W/$s.0.log DKIND[$s]=vduse-blk
    if rc_restart "$s" "$simg" --queues 1 --serial E2E-RS0 --attach && DDEV[$s]=$(dev_wait serial:E2E-RS0 30); then
      FIO_RUNTIME=20 fio_verify "SIGKILL during setup: the same create adopts, attaches and serves" "${DDEV[$s]}" \
        --name=v --ioengine=libaio --rw=randwrite --bs=4k --iodepth=8 --size=8M
    else
      notok "SIGKILL during setup: the same create adopts and attaches" "$(logtail "$s")" "$(dmesgtail)"
    fi
    dev_stop "$s" 10
  else
    skip "SIGKILL during setup" "the daemon was killed before /dev/vduse/$s existed"
  fi

  # destroy after SIGKILL with I/O in flight: bounded, never wedges vdpa.
  local d=e2erd dimg=$W/rd.img
  if dev_start "$d" "$dimg" --size 64M --queues 1 --serial E2E-RD0; then
    (cd "$W" && exec timeout -k 5 120 fio --name=rd --filename="/dev/${DDEV[$d]}" --direct=1 --ioengine=libaio \
       --rw=randwrite --bs=4k --iodepth=16 --time_based --runtime=8 --output-format=json --output="$W/rd.json" \
       >"$W/rd.fio.err" 2>&1) &
    local fpid=$!
    sleep 1.5
    kill -KILL "${DPID[$d]}"; wait "${DPID[$d]}" 2>/dev/null; DPID[$d]=
    t0=$SECONDS
    out=$(timeout 60 "$BIN" destroy "$d" 2>&1); rc=$?; secs=$((SECONDS - t0))
    if ((rc == 1 && secs < 10)) && [[ $out == *"in flight"* ]]; then
      ok "destroy with I/O in flight and no daemon refuses in ${secs} s, saying how to recover"
    elif ((rc == 0 && secs < 30)); then
      ok "destroy with I/O in flight and no daemon finishes in ${secs} s"
    else
      notok "destroy with I/O in flight and no daemon is bounded" "status $rc after $secs s: $out"
    fi
    note "destroy said: ${out//$'\n'/ | }"
    if [[ -e /dev/vduse/$d ]]; then
      if rc_restart "$d" "$dimg" --size 64M --queues 1 --serial E2E-RD0; then
        wait $fpid; rc=$?
        ((rc == 0)) && ok "the recovery it names works: adopt, fio completes (status 0)" || notok "fio completes after adoption" "status $rc" "$(tail -n 5 "$W/rd.fio.err")"
        udevadm settle -t 10 2>/dev/null; sleep 1   # fio's close triggers a udev probe (a read)
        kill -KILL "${DPID[$d]}"; wait "${DPID[$d]}" 2>/dev/null; DPID[$d]=
        sleep 0.5
        t0=$SECONDS
        out=$(timeout 60 "$BIN" destroy "$d" 2>&1); rc=$?; secs=$((SECONDS - t0))
        if ((rc == 0)) && [[ ! -e /dev/vduse/$d ]] && ((secs < 15)); then
          ok "destroy of an idle dead daemon's device takes ${secs} s and says what it does (${out//$'\n'/ | })"
        else notok "destroy of an idle dead daemon's device is fast" "status $rc after $secs s: $out"
          rc_restart "$d" "$dimg" --size 64M --queues 1 --serial E2E-RD0   # leave nothing behind
        fi
      else
        notok "the recovery it names works" "$(logtail "$d")"
        kill -KILL $fpid 2>/dev/null; wait $fpid 2>/dev/null
      fi
    fi
    dev_stop "$d" 10
  else
    notok "destroy test device appears" "$(logtail "$d")"; dev_stop "$d" 5
  fi
  if [[ ${RECONNECT_QSD:-1} == 1 ]]; then rc_qsd_side_by_side; fi
  if timeout 10 vdpa dev show >/dev/null 2>&1; then ok "vdpa dev show still answers"; else notok "vdpa dev show still answers" "$(dmesgtail)"; fi
}
