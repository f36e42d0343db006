# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004,SC2034 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/11-example.sh - section "example" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_example: (vduse-blk only) the example package examples/ramdisk-backend, a
# backend written outside this repository's Sources, serves a real /dev/vdX:
# data written reads back, and SIGTERM tears it down cleanly. The host builds
# it first (scripts/test.sh does; or `swift build` in the example's folder).

run_example() {
  section "example: a device served from examples/ramdisk-backend (a backend outside Sources)"
  if [[ $PEER != vduse-blk ]]; then skip "example backend" "vduse-blk only"; return; fi
  local bin=$REPO/examples/ramdisk-backend/.build/debug/ramdisk-backend n=e2eram dev sum back
  if [[ ! -x $bin ]]; then skip "example backend" "not built ($bin)"; return; fi
  DLOG[$n]=$W/$n.log DDEV[$n]='' DKIND[$n]=vduse-blk
  "$bin" "$n" ram:64M,latency-us=20 --attach 2>"${DLOG[$n]}" &
  DPID[$n]=$!
  if ! dev=$(dev_wait serial:$n "$DEV_TIMEOUT" "${DPID[$n]}"); then
    notok "example: /dev/vd* with serial $n appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  DDEV[$n]=$dev
  ok "example: /dev/$dev with serial $n appears"
  [[ $(blockdev --getsize64 "/dev/$dev") == $((64 << 20)) ]] && ok "example: 64 MiB as the spec asked" \
    || notok "example: 64 MiB as the spec asked" "$(blockdev --getsize64 "/dev/$dev")"
  head -c $((4 << 20)) /dev/urandom >"$W/ex.bin"
  sum=$(sha256sum <"$W/ex.bin" | cut -d' ' -f1)
  dd if="$W/ex.bin" of="/dev/$dev" bs=1M seek=8 oflag=direct conv=fsync status=none
  back=$(dd if="/dev/$dev" bs=1M skip=8 count=4 iflag=direct status=none | sha256sum | cut -d' ' -f1)
  [[ $back == "$sum" ]] && ok "example: 4 MiB written with O_DIRECT read back identical" \
    || notok "example: 4 MiB written with O_DIRECT read back identical" "sha256 $back, wrote $sum" "$(logtail $n)"
  stop_checks "$n" "example device"
}
