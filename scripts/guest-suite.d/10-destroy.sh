# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/10-destroy.sh - section "destroy" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_destroy: (vduse-blk only) `vduse-blk destroy` removes the device of a
# SIGKILLed daemon.

run_destroy() {
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
