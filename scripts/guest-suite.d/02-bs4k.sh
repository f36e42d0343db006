# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/02-bs4k.sh - section "bs4k" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_bs4k: --block-size 4096: logical block size, size, 1M written at 12K reads
# back from the device and from the backing file.

run_bs4k() {
  section "bs4k: --block-size 4096"
  local n=e2e4k img=$W/bs4k.img ser=E2E-SER-4K dev
  if ! dev_start "$n" "$img" --size 64M --block-size 4096 --queues 1 --serial "$ser"; then
    notok "create --block-size 4096: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  local lbs size
  lbs=$(cat /sys/block/"$dev"/queue/logical_block_size); size=$(($(cat /sys/block/"$dev"/size) * 512))
  [[ $lbs == 4096 ]] && ok "block-size 4096: logical block size is 4096" || notok "block-size 4096: logical block size is 4096" "got $lbs"
  [[ $size == $((64 << 20)) ]] && ok "block-size 4096: size is 64M" || notok "block-size 4096: size is 64M" "got $size"
  head -c 1M /dev/urandom >"$W/rand1"
  if dd if="$W/rand1" of=/dev/"$dev" bs=4k seek=3 oflag=direct conv=fsync status=none &&
     cmp -s "$W/rand1" <(dd if=/dev/"$dev" bs=4k skip=3 count=256 iflag=direct status=none) &&
     cmp -s -n $((1 << 20)) "$W/rand1" <(tail -c +$((3 * 4096 + 1)) "$img"); then
    ok "block-size 4096: 1M written at 12K reads back from device and backing file"
  else notok "block-size 4096: 1M written at 12K reads back" "$(logtail $n)"; fi
  stop_checks "$n" "4K device"
}
