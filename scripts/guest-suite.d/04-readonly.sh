# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/04-readonly.sh - section "readonly" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_readonly: --readonly: the ro flag, a direct write fails, reads return the
# image's data, the image is unchanged.

run_readonly() {
  section "readonly: --readonly"
  local n=e2ero img=$W/ro.img dev s0 s1 out
  head -c 32M /dev/urandom >"$img"; s0=$(sha256sum <"$img")
  if ! dev_start "$n" "$img" --size 32M --readonly --serial E2E-RO; then
    notok "readonly: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  [[ $(cat /sys/block/"$dev"/ro) == 1 ]] && ok "readonly: /sys/block/$dev/ro is 1" || notok "readonly: /sys/block/$dev/ro is 1" "got $(cat /sys/block/"$dev"/ro)"
  if out=$(dd if=/dev/zero of=/dev/"$dev" bs=4k count=4 seek=10 oflag=direct conv=fsync 2>&1); then
    notok "readonly: a direct write fails" "dd succeeded: $out"
  else ok "readonly: a direct write fails ($(tail -n 1 <<<"$out"))"; fi
  cmp -s -n $((1 << 20)) "$img" <(dd if=/dev/"$dev" bs=1M count=1 iflag=direct status=none) \
    && ok "readonly: reads return the image's data" || notok "readonly: reads return the image's data" "$(logtail $n)"
  stop_checks "$n" "readonly device"
  s1=$(sha256sum <"$img")
  [[ $s0 == "$s1" ]] && ok "readonly: image checksum unchanged" || notok "readonly: image checksum unchanged" "$s0 -> $s1"
}
