# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/03-fio.sh - section "fio" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_fio: fio write+verify (QD1/QD32, 1 and 4 jobs, 64k sequential) with
# --engine uring (queue threads waiting in io_uring) and --engine aio, then
# SIGTERM of the daemon while fio runs: fio ends, nothing is left behind.

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
  FIO_TIMEOUT=60 fio_dev "$dev" --name=load --ioengine=libaio --rw=randrw --bs=4k \
    --iodepth=16 --numjobs=2 --size=64M --offset_increment=64M --time_based --runtime=45 \
    --output-format=terse --terse-version=3 >"$W/load-$eng.out" 2>"$W/load-$eng.err" &
  fpid=$!
  st=$(awk '{print $1 + $5}' /sys/block/"$dev"/stat); sleep 4
  if ! kill -0 $fpid 2>/dev/null; then notok "engine $eng: fio load is running before SIGTERM" "$(cat "$W/load-$eng.err")"; fi
  note "I/Os during 4 s of load: $(( $(awk '{print $1 + $5}' /sys/block/"$dev"/stat) - st ))"
  stop_checks "$n" "engine $eng: SIGTERM during fio"
  t=$SECONDS; wait $fpid; frc=$?
  if ((frc == 124 || frc == 137)); then notok "engine $eng: fio ends after SIGTERM (not hung)" "fio was killed by timeout (rc $frc)"
  else ok "engine $eng: fio ends after SIGTERM (rc $frc, $(grep -c . "$W/load-$eng.err") stderr lines, $((SECONDS - t)) s after the daemon)"; fi
  no_leftovers "engine $eng: after SIGTERM"
}

run_fio() { fio_engine uring; fio_engine aio; }
