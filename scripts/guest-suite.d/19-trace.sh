# shellcheck shell=bash
# shellcheck disable=SC2015 # C && ok || notok: ok never fails
# guest-suite.d/19-trace.sh - section "trace" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_trace: (vduse-blk only; issue 17) recorded prefetch on a container-
# start-like workload: an ext4 image of 48 files in object storage; a first
# cold start with --record-trace mounts it and reads 16 of the files out of
# order; the trace is written on stop. A second cold start (empty cache)
# with --prefetch-trace fetches those chunks ahead of the guest: the same
# files, read in another order, wait for the network far less (stats), and
# every file read equals its source.

trace_stat() { "$BIN" stats "$1" 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'; }

# trace_read NAME MNT ORDER...: mounts the device read-only, reads the files
# in ORDER comparing each with its source, unmounts; prints the seconds taken.
trace_read() {
  local name=$1 mnt=$2 f t0 bad=0; shift 2
  t0=$(date +%s.%N)
  mount -o ro,noload /dev/"${DDEV[$name]}" "$mnt" || { echo "mount failed"; return 1; }
  for f in "$@"; do cmp -s "$mnt/$f" "$W/trsrc/$f" || { echo "$f differs"; bad=1; }; done
  umount "$mnt"
  ((bad == 0)) && awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
}

run_trace() {
  section "remote backend: --record-trace then --prefetch-trace (container start)"
  if [[ $PEER != vduse-blk ]]; then skip "trace record/replay" "vduse-blk only"; return; fi
  local www=$W/trwww port=18084 n=tr1 trace=$W/start.trace mnt=$W/trmnt i size t1 t2 w1 w2 req fetched
  mkdir -p "$www" "$W/trsrc" "$mnt"
  for ((i = 0; i < 48; i++)); do
    size=$(( (96 + (i * 37) % 1400) * 1024 ))
    head -c "$size" /dev/urandom >"$W/trsrc/f$i.bin"
  done
  if ! mkfs.ext4 -q -F -b 4096 -d "$W/trsrc" "$www/fs.img" 96M; then
    notok "trace: mkfs.ext4 -d builds the image"; return
  fi
  if ! nginx_start "$www" $port "$W/trnginx"; then
    notok "trace: nginx serves the image" "$(tail -n 5 "$W"/trnginx/logs/*.log 2>/dev/null)"; return
  fi
  local first=(f7.bin f31.bin f2.bin f44.bin f19.bin f11.bin f38.bin f0.bin f25.bin f13.bin f46.bin f5.bin f29.bin f20.bin f41.bin f16.bin)
  local again=(f16.bin f41.bin f0.bin f20.bin f7.bin f29.bin f5.bin f44.bin f46.bin f13.bin f25.bin f38.bin f11.bin f19.bin f2.bin f31.bin)
  local url=http://127.0.0.1:$port/fs.img common="chunk=256K,memory=64M,format=raw"

  export DEV_BACKEND="$url,cache-dir=$W/trcache1,$common"
  if ! dev_start $n "$www/fs.img" --serial trace1 --queues 2 --record-trace "$trace"; then
    notok "trace: recording device appears" "$(logtail $n)"; unset DEV_BACKEND; nginx_stop; return
  fi
  if t1=$(trace_read $n "$mnt" "${first[@]}"); then ok "trace: first start reads 16 files equal to their sources ($t1 s)"
  else notok "trace: first start reads 16 files equal to their sources" "$t1" "$(logtail $n)"; fi
  sleep 1.2
  w1=$(trace_stat $n reads_waited_for_network)
  stop_checks $n "trace record"
  local chunks; chunks=$(sed -n 's/^chunks \([0-9]*\)$/\1/p' "$trace" 2>/dev/null)
  if [[ -n $chunks ]] && ((chunks > 0)) && grep -q "record-trace: wrote $chunks chunks" "${DLOG[$n]}"
  then ok "trace: the stop wrote a trace of $chunks chunks"
  else notok "trace: the stop writes the trace" "$(head -n 6 "$trace" 2>&1)" "$(logtail $n)"; fi

  export DEV_BACKEND="$url,cache-dir=$W/trcache2,$common"
  if ! dev_start $n "$www/fs.img" --serial trace2 --queues 2 --prefetch-trace "$trace"; then
    notok "trace: replaying device appears" "$(logtail $n)"; unset DEV_BACKEND; nginx_stop; return
  fi
  grep -q "prefetch-trace: replaying $chunks chunks" "${DLOG[$n]}" && ok "trace: the second start replays the trace" \
    || notok "trace: the second start replays the trace" "$(logtail $n)"
  for ((i = 0; i < 100; i++)); do
    req=$(trace_stat $n trace_prefetch_requests); fetched=$(trace_stat $n chunks_fetched)
    [[ -n $req && -n $fetched ]] && ((req > 0 && fetched >= chunks - 2)) && break
    sleep 0.2
  done
  if t2=$(trace_read $n "$mnt" "${again[@]}"); then ok "trace: after the replay the files (another order) equal their sources ($t2 s)"
  else notok "trace: after the replay the files equal their sources" "$t2" "$(logtail $n)"; fi
  sleep 1.2
  w2=$(trace_stat $n reads_waited_for_network)
  if [[ -n $w1 && -n $w2 ]] && ((w2 * 4 <= w1)); then
    ok "trace: reads that waited for the network: $w1 on the first start, $w2 after the replay ($req chunks replayed)"
  else
    notok "trace: the replay spares the guest's waits" "waited: first ${w1:-?}, replay ${w2:-?}; requested ${req:-?}" \
      "$("$BIN" stats $n 2>&1 | head -n 14)"
  fi
  stop_checks $n "trace replay"
  unset DEV_BACKEND
  nginx_stop
}
