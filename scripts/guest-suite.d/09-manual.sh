# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004,SC2034 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/09-manual.sh - section "manual" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_manual: (vduse-blk only) create without --attach, `vdpa dev add` and `vdpa
# dev del` by hand, clean stop.

run_manual() {
  section "manual: create without --attach, vdpa dev add/del by hand"
  if [[ $PEER != vduse-blk ]]; then skip "manual attach" "the qsd path is always manual"; return; fi
  local n=e2eman img=$W/man.img dev='' out
  if ! dev_start "$n" "$img" --no-attach --size 16M --serial E2E-MAN; then
    notok "no --attach: /dev/vduse/$n appears" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  ok "no --attach: /dev/vduse/$n appears"
  [[ ! -e /sys/bus/vdpa/devices/$n ]] && ok "no --attach: no vdpa device yet" || notok "no --attach: no vdpa device yet" "$(vdpa dev show 2>&1)"
  if out=$(vdpa dev add name "$n" mgmtdev vduse 2>&1); then
    dev=$(dev_wait serial:E2E-MAN "$DEV_TIMEOUT")
    [[ -n $dev ]] && ok "no --attach: vdpa dev add gives /dev/$dev" || notok "no --attach: vdpa dev add gives a block device" "$(logtail $n)"
    DDEV[$n]=$dev
    check "no --attach: vdpa dev del" timeout 20 vdpa dev del "$n"
  else notok "no --attach: vdpa dev add" "$out" "$(logtail $n)"; fi
  stop_checks "$n" "manually attached device"
}
