# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/05-zstd.sh - section "zstd" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_zstd: (vduse-blk only) a compressed seekable image (`image pack`)
# read-only, then with an overlay: ext4 tree intact, fio verify, a flushed
# pattern survives a restart, the base image is never modified.

run_zstd() {
  section "zstd backend"
  if [[ $PEER != vduse-blk ]]; then skip "zstd backend" "vduse-blk only"; return; fi
  local raw=$W/zraw.img zst=$W/zbase.zst ovl=$W/zbase.ovl tree=$W/ztree m=$W/mnt f out sum0
  mkdir -p "$tree/docs" "$m"
  for f in $(seq 1 40); do seq 1 $((f * 300)) >"$tree/docs/f$f.txt"; done
  head -c 3M /dev/urandom >"$tree/random.bin"
  truncate -s 64M "$raw"
  mkfs.ext4 -q -F -d "$tree" "$raw" >/dev/null
  if out=$("$BIN" image pack "$raw" "$zst" --chunk-size 64K 2>&1) && "$BIN" image verify "$zst" >/dev/null 2>&1
  then ok "zstd: image pack + verify ($(stat -c %s "$zst") bytes from 64 MiB)"
  else notok "zstd: image pack + verify" "$out"; return; fi
  sum0=$(sha256sum <"$zst")
  (cd "$tree" && find . -type f -exec sha256sum {} + | sort -k2) >"$W/ztree.sums"

  DEV_BACKEND="zstd:$zst" dev_start zro "$raw" --serial zstd-ro --queues 2 || { notok "zstd: read-only device appears" "$(logtail zro)"; return; }
  local dev=${DDEV[zro]}
  if [[ $(cat /sys/block/"$dev"/ro) == 1 ]] && ! dd if=/dev/zero of=/dev/"$dev" bs=4k count=1 oflag=direct status=none 2>/dev/null
  then ok "zstd: without an overlay the device is read-only"
  else notok "zstd: without an overlay the device is read-only" "ro=$(cat /sys/block/"$dev"/ro)"; fi
  if cmp <(dd if=/dev/"$dev" bs=1M iflag=direct status=none) "$raw"; then ok "zstd: device reads equal the raw image"
  else notok "zstd: device reads equal the raw image" "$(logtail zro)"; fi
  stop_checks zro "zstd read-only"

  DEV_BACKEND="zstd:$zst,overlay=$ovl,cache=16M" dev_start zrw "$raw" --serial zstd-rw --queues 2 \
    || { notok "zstd: overlay device appears" "$(logtail zrw)"; return; }
  dev=${DDEV[zrw]}
  if mount -o ro /dev/"$dev" "$m" && (cd "$m" && find . -type f ! -path './lost+found/*' -exec sha256sum {} + | sort -k2) | diff -q - "$W/ztree.sums" >/dev/null
  then ok "zstd: ext4 tree on the compressed image reads back intact"
  else notok "zstd: ext4 tree on the compressed image reads back intact" "$(logtail zrw)"; fi
  umount "$m" 2>/dev/null
  fio_verify "zstd+overlay: fio 4k randwrite QD16 verify" "$dev" --name=zv --rw=randwrite --bs=4k --iodepth=16 \
    --ioengine=io_uring --size=16M --offset=32M
  head -c 1M /dev/urandom >"$W/zpat"
  dd if="$W/zpat" of=/dev/"$dev" bs=64k seek=16 oflag=direct conv=fsync status=none
  stop_checks zrw "zstd overlay"
  DEV_BACKEND="zstd:$zst,overlay=$ovl" dev_start zrw2 "$raw" --serial zstd-rw2 --queues 1 \
    || { notok "zstd: overlay device restarts" "$(logtail zrw2)"; return; }
  dev=${DDEV[zrw2]}
  if cmp <(dd if=/dev/"$dev" bs=64k skip=16 count=16 iflag=direct status=none) "$W/zpat"
  then ok "zstd: data flushed to the overlay survives a daemon restart"
  else notok "zstd: data flushed to the overlay survives a daemon restart" "$(logtail zrw2)"; fi
  stop_checks zrw2 "zstd overlay restart"
  if [[ $(sha256sum <"$zst") == "$sum0" ]]; then ok "zstd: the base image is never modified"
  else notok "zstd: the base image is never modified"; fi
}
