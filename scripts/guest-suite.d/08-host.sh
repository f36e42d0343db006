# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/08-host.sh - section "host" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_host: a device on an image in the shared repo dir (9p); the guest writes a
# pattern at an odd offset and records it in HOSTENV; host_verify, run on the
# host after the guest is gone (or in the guest at the end of a --in-guest run),
# checks that the image holds exactly that and zeros elsewhere.

run_host() {
  section "host: image on the shared repo dir ($SHARED)"
  local n=e2ehost dev off=$((5 * 1024 * 1024 + 4096)) len=$((3 * 1024 * 1024)) imgsize=$((32 << 20)) sha
  rm -f "$HOSTIMG" "$HOSTENV"; truncate -s "$imgsize" "$HOSTIMG"
  if ! dev_start "$n" "$HOSTIMG" --size 32M --serial E2E-HOST; then
    notok "host: device on a 9p-backed image appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  head -c "$len" /dev/urandom >"$W/pattern"; sha=$(sha256sum <"$W/pattern" | cut -d' ' -f1)
  if dd if="$W/pattern" of=/dev/"$dev" bs=4k seek=$((off / 4096)) oflag=direct conv=fsync status=none &&
     cmp -s "$W/pattern" <(dd if=/dev/"$dev" bs=4k skip=$((off / 4096)) count=$((len / 4096)) iflag=direct status=none); then
    ok "host: 3M pattern written at $off reads back through the device"
  else notok "host: pattern written at $off reads back through the device" "$(logtail $n)"; fi
  stop_checks "$n" "9p-backed device"
  sync
  printf 'OFFSET=%s\nLEN=%s\nSHA=%s\nIMGSIZE=%s\n' "$off" "$len" "$sha" "$imgsize" >"$HOSTENV"; sync
}

# host_verify: the host-side check of what run_host wrote through the device.
host_verify() {
  if [[ ! -f $HOSTENV ]]; then
    notok "host: backing image on the shared dir holds what the guest wrote" "no $HOSTENV (guest section 'host' did not finish)"
    return
  fi
  local OFFSET LEN SHA IMGSIZE
  # shellcheck disable=SC1090
  . "$HOSTENV"
  local size got why=()
  size=$(stat -c %s "$HOSTIMG" 2>/dev/null || echo missing)
  [[ $size == "$IMGSIZE" ]] || why+=("image size $size, expected $IMGSIZE")
  got=$(tail -c +$((OFFSET + 1)) "$HOSTIMG" | head -c "$LEN" | sha256sum | cut -d' ' -f1)
  [[ $got == "$SHA" ]] || why+=("region at $OFFSET+$LEN has sha256 $got, guest wrote $SHA")
  cmp -s -n "$OFFSET" "$HOSTIMG" /dev/zero || why+=("bytes before offset $OFFSET are not all zero")
  local rest=$((IMGSIZE - OFFSET - LEN))
  cmp -s -n "$rest" <(tail -c +$((OFFSET + LEN + 1)) "$HOSTIMG") /dev/zero || why+=("bytes after the region are not all zero")
  if ((${#why[@]} == 0)); then
    ok "host: backing image on the shared dir holds exactly what the guest wrote ($LEN bytes at $OFFSET, zeros elsewhere)"
  else
    notok "host: backing image on the shared dir holds exactly what the guest wrote" "${why[@]}"
  fi
}
