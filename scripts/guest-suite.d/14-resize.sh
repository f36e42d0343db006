# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/14-resize.sh - section "resize" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_resize: (vduse-blk only) online resize through the control socket: a
# mounted ext4 grows with resize2fs while fio verifies a file in it, the kernel
# sees the new size without re-attaching, e2fsck is clean; shrinking needs
# --shrink; a resize before the driver binds keeps the new size.

run_resize() {
  section "resize: online grow of a mounted ext4 under fio verify"
  if [[ $PEER != vduse-blk ]]; then skip "online resize" "qsd resizes via QMP block_resize, not this CLI"; return; fi
  local n=e2ersz img=$W/rsz.img dev out sz mnt=$W/rmnt fpid rc i
  if ! dev_start "$n" "$img" --size 64M --serial E2E-RSZ --queues 2; then
    notok "resize: device appears" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  sz=$(blockdev --getsize64 "/dev/$dev")
  [[ $sz == 67108864 ]] && ok "resize: /dev/$dev starts at 64 MiB" || notok "resize: /dev/$dev starts at 64 MiB" "getsize64: $sz"
  mkdir -p "$mnt"
  if ! mkfs.ext4 -q -F "/dev/$dev" >"$W/rsz.mkfs" 2>&1 || ! mount "/dev/$dev" "$mnt"; then
    notok "resize: mkfs.ext4 + mount" "$(cat "$W/rsz.mkfs")" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  # fio writes and verifies a file in the filesystem while the disk grows under it.
  (cd "$W" && exec timeout -k 5 300 fio --name=rszv --filename="$mnt/fio.dat" --size=24M --bs=4k --rw=randwrite \
      --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --loops=6 \
      --verify_state_save=0 --output-format=terse --terse-version=3) >"$W/rsz.fio" 2>"$W/rsz.fio.err" &
  fpid=$!
  sleep 1
  if out=$(timeout 60 "$BIN" resize "$n" 256M 2>&1); then ok "resize: vduse-blk resize $n 256M ($out)"
  else notok "resize: vduse-blk resize $n 256M" "$out" "$(logtail $n)"; fi
  for ((i = 0; i < 50; i++)); do
    sz=$(blockdev --getsize64 "/dev/$dev"); [[ $sz == 268435456 ]] && break; sleep 0.1
  done
  [[ $sz == 268435456 ]] && ok "resize: blockdev --getsize64 /dev/$dev shows 256 MiB without re-attaching" \
    || notok "resize: blockdev --getsize64 shows 256 MiB" "getsize64: $sz" "$(dmesgtail)"
  if out=$(timeout 120 resize2fs "/dev/$dev" 2>&1); then ok "resize: resize2fs grows the mounted ext4 online"
  else notok "resize: resize2fs grows the mounted ext4 online" "$out" "$(dmesgtail)"; fi
  wait "$fpid"; rc=$?
  if ((rc == 0)) && awk -F';' '/^3;/ {n++; if ($5 != 0 || $6 == 0) bad=1} END {exit !(n > 0 && !bad)}' "$W/rsz.fio"; then
    ok "resize: fio --verify=crc32c on a file in the filesystem passes across the resize"
  else notok "resize: fio verify across the resize" "fio exit $rc" "$(tail -n 15 "$W/rsz.fio.err")" "$(logtail $n)"; fi
  # Use the new space: more than the old disk held.
  if dd if=/dev/urandom of="$mnt/big" bs=1M count=120 conv=fsync status=none 2>"$W/rsz.dd"; then
    local sum1 sum2
    sum1=$(md5sum <"$mnt/big")
    umount "$mnt" && mount "/dev/$dev" "$mnt" && sum2=$(md5sum <"$mnt/big")
    [[ $sum1 == "$sum2" ]] && ok "resize: 120 MiB written past the old end reads back after a remount" \
      || notok "resize: data past the old end reads back" "$sum1 vs ${sum2:-}"
  else notok "resize: write 120 MiB into the grown filesystem" "$(cat "$W/rsz.dd")" "$(df -h "$mnt")"; fi
  umount "$mnt"
  if out=$(e2fsck -fn "/dev/$dev" 2>&1); then ok "resize: e2fsck -fn is clean"
  else notok "resize: e2fsck -fn is clean" "$out"; fi
  # Shrinking needs --shrink: one line on stderr, exit 1, nothing changed.
  out=$("$BIN" resize "$n" 128M 2>&1); rc=$?
  sz=$(blockdev --getsize64 "/dev/$dev")
  [[ $rc == 1 && $out == *--shrink* && $(wc -l <<<"$out") == 1 && $sz == 268435456 ]] \
    && ok "resize: shrinking without --shrink is refused (exit 1, one line)" \
    || notok "resize: shrinking without --shrink is refused" "exit $rc: $out" "getsize64: $sz"
  out=$("$BIN" stats "$n" --json 2>&1)
  [[ $out == *'"capacity_bytes":268435456'* ]] && ok "resize: stats --json reports the new capacity" \
    || notok "resize: stats --json reports the new capacity" "$out"
  stop_checks "$n" "resized device"
  [[ $(stat -c %s "$img") == 268435456 ]] && ok "resize: the image file grew to 256 MiB" \
    || notok "resize: the image file grew to 256 MiB" "$(stat -c %s "$img")"

  section "resize: before the driver binds (no config interrupt possible)"
  local m=e2ers2 img2=$W/rsz2.img
  if ! dev_start "$m" "$img2" --no-attach --size 16M --serial E2E-RS2; then
    notok "resize early: device appears" "$(logtail $m)"; dev_stop "$m" 5; return
  fi
  if out=$(timeout 30 "$BIN" resize "$m" 32M 2>&1) && [[ $out == *"no config interrupt"* ]]; then
    ok "resize early: accepted, says no interrupt was sent"
  else notok "resize early: accepted, says no interrupt was sent" "$out" "$(logtail $m)"; fi
  if out=$(vdpa dev add name "$m" mgmtdev vduse 2>&1); then
    dev=$(dev_wait serial:E2E-RS2 "$DEV_TIMEOUT"); DDEV[$m]=$dev
    sz=$([[ -n $dev ]] && blockdev --getsize64 "/dev/$dev")
    [[ $sz == 33554432 ]] && ok "resize early: the driver binds at the new size (32 MiB)" \
      || notok "resize early: the driver binds at the new size" "dev ${dev:-none}, getsize64 ${sz:-}" "$(logtail $m)"
  else notok "resize early: vdpa dev add" "$out"; fi
  stop_checks "$m" "early-resized device"
}
