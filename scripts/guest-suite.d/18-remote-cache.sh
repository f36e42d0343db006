# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/18-remote-cache.sh - section "remote-cache" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_remote-cache: (vduse-blk only; issue 17) the remote backend's bounded
# disk tier: an image 4x `cache-size=` read end to end evicts least recently
# used chunks (punched out) and the data file's allocated blocks never pass
# the budget + one chunk; after a clean restart the chunks still on disk are
# served from it; after a SIGKILL and the same create again (the device is
# adopted) the cache is reopened crash-safely; byte-exact every time.

rcache_alloc() { stat -c '%b %B' "$1" 2>/dev/null | awk '{ print $1 * $2 }'; }

# rcache_restart NAME [create options...]: the same create again after a
# SIGKILL (the device is still bound); waits until the daemon adopted it.
rcache_restart() {
  local name=$1 log i; shift
  log=$W/$name.$((++DSEQ)).log
  DLOG[$name]=$log
  : >"$log"
  "$BIN" create "$name" --backend "$DEV_BACKEND" "$@" 2>"$log" &
  DPID[$name]=$!
  for ((i = 0; i < 300; i++)); do
    grep -qE 'adopted /dev/vduse|created /dev/vduse' "$log" && return 0
    dev_running "$name" || return 1
    sleep 0.1
  done
  return 1
}

run_remote-cache() {
  section "remote backend: a disk cache bounded by cache-size= (eviction, restart, crash)"
  if [[ $PEER != vduse-blk ]]; then skip "remote disk cache" "vduse-blk only"; return; fi
  local www=$W/rcwww cache=$W/rccache port=18083 chunk=$((256 << 10)) budget=$((4 << 20)) n=rc1 data a
  mkdir -p "$www"
  head -c 16M /dev/urandom >"$www/disk.img"   # 4x the budget
  if ! nginx_start "$www" $port "$W/rcnginx"; then
    notok "remote-cache: nginx serves the image" "$(cat "$W"/rcnginx/logs/*.log 2>/dev/null | tail -n 5)"; return
  fi
  local url=http://127.0.0.1:$port/disk.img
  export DEV_BACKEND="$url,cache-dir=$cache,chunk=256K,cache-size=4M,memory=2M,format=raw"
  stat_of() { "$BIN" stats "$1" 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'; }
  within_budget() {  # LABEL NAME
    data=$(find "$cache" -maxdepth 1 -name "*.data" | head -n 1); a=$(rcache_alloc "$data")
    if [[ -n $a ]] && ((a <= budget + chunk)); then ok "remote-cache: $1: the data file holds $a bytes, budget $budget (+ one chunk)"
    else notok "remote-cache: $1: the data file stays within its budget" "allocated ${a:-?} bytes of $data, budget $budget" "$(logtail "$2")"; fi
  }
  whole_equal() {  # LABEL NAME
    if cmp <(dd if=/dev/"${DDEV[$2]}" bs=1M iflag=direct status=none) "$www/disk.img"
    then ok "remote-cache: $1: the whole device equals the served image"
    else notok "remote-cache: $1: the whole device equals the served image" "$(logtail "$2")"; fi
  }

  if ! dev_start $n "$www/disk.img" --serial rcache1 --queues 2; then
    notok "remote-cache: device appears" "$(logtail $n)"; unset DEV_BACKEND; nginx_stop; return
  fi
  whole_equal "cold read of an image 4x the cache" $n
  sleep 1.5  # let the disk writer catch up and the stats file refresh
  local evicted; evicted=$(stat_of $n chunks_evicted_disk)
  if [[ -n $evicted ]] && ((evicted > 0)); then ok "remote-cache: least recently used chunks were evicted ($evicted chunks)"
  else notok "remote-cache: chunks are evicted" "chunks_evicted_disk=${evicted:-?}" "$("$BIN" stats $n 2>&1 | head -n 30)"; fi
  within_budget "after the cold pass" $n
  stop_checks $n "remote-cache cold"
  within_budget "after a clean stop" $n

  if ! dev_start $n "$www/disk.img" --serial rcache2 --queues 2; then
    notok "remote-cache: device restarts" "$(logtail $n)"; unset DEV_BACKEND; nginx_stop; return
  fi
  grep -q 'reusing disk cache' "${DLOG[$n]}" && ok "remote-cache: the restarted daemon reuses the bounded cache" \
    || notok "remote-cache: the restarted daemon reuses the bounded cache" "$(logtail $n)"
  # The last chunks are the ones kept: read them before a forward pass evicts them.
  if cmp <(dd if=/dev/"${DDEV[$n]}" bs=1M skip=14 iflag=direct status=none) <(tail -c 2M "$www/disk.img")
  then ok "remote-cache: the image's tail reads back equal after the restart"
  else notok "remote-cache: the image's tail reads back equal after the restart" "$(logtail $n)"; fi
  sleep 1.2
  local hits; hits=$(stat_of $n hits_disk)
  if [[ -n $hits ]] && ((hits > 0)); then ok "remote-cache: chunks kept on disk are served after the restart ($hits disk hits)"
  else notok "remote-cache: chunks kept on disk are served after the restart" "hits_disk=${hits:-?}"; fi
  whole_equal "after a restart" $n
  within_budget "after the second pass" $n

  # SIGKILL (no final persist), then the same create adopts the device.
  kill -KILL "${DPID[$n]}"; wait "${DPID[$n]}" 2>/dev/null; DPID[$n]=
  if rcache_restart $n --serial rcache2 --queues 2; then
    ok "remote-cache: after SIGKILL the same create adopts the device"
    whole_equal "after SIGKILL + adopt" $n
    within_budget "after SIGKILL + adopt" $n
  else
    notok "remote-cache: after SIGKILL the same create adopts the device" "$(logtail $n)" "$(dmesgtail)"
  fi
  stop_checks $n "remote-cache after crash"
  unset DEV_BACKEND
  nginx_stop
}
