# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/01-basic.sh - section "basic" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_basic: create --attach; size, serial, queues, driver binding, `vduse-blk
# list`; ext4 round trip (mkfs, files, fsck, remount, checksums); discard,
# write-zeroes and punch (device reads zeroes, backing file shrinks); SIGTERM of
# an idle device.

run_basic() {
  section "basic: create --attach, size/serial/queues, ext4, discard, SIGTERM (idle)"
  local n=e2e0 img=$W/basic.img ser=E2E-SER-0 t dev
  t=$SECONDS
  if ! dev_start "$n" "$img" --attach --size 256M --queues 4 --serial "$ser"; then
    notok "create --attach: a /dev/vd* with serial $ser appears" "$(logtail $n)" "$(dmesgtail)"
    dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  ok "create --attach: /dev/$dev with serial $ser appears ($((SECONDS - t)) s)"
  local drv; drv=$(basename "$(readlink /sys/bus/vdpa/devices/$n/driver 2>/dev/null)" 2>/dev/null)
  [[ $drv == virtio_vdpa && -d /sys/bus/vdpa/devices/$n ]] && ok "vdpa device $n is bound to virtio_vdpa" \
    || notok "vdpa device $n is bound to virtio_vdpa" "driver: ${drv:-none}"
  local size lbs hw want_hw
  size=$(($(cat /sys/block/"$dev"/size) * 512)); lbs=$(cat /sys/block/"$dev"/queue/logical_block_size)
  [[ $size == $((256 << 20)) ]] && ok "size is 256M" || notok "size is 256M" "/sys/block/$dev/size*512 = $size"
  [[ $lbs == 512 ]] && ok "logical block size 512" || notok "logical block size 512" "got $lbs"
  # shellcheck disable=SC2012 # counts names only
  hw=$(ls /sys/block/"$dev"/mq | wc -l); want_hw=$(($(nproc) < 4 ? $(nproc) : 4))
  [[ $hw == "$want_hw" ]] && ok "blk-mq uses $hw hw queues (--queues 4, $(nproc) vCPUs)" \
    || notok "blk-mq uses $want_hw hw queues (--queues 4, $(nproc) vCPUs)" "got $hw"
  if [[ $PEER == vduse-blk ]]; then
    local l; l=$(timeout 10 "$BIN" list 2>&1)
    grep -qw -- "$n" <<<"$l" && ok "vduse-blk list shows $n" || notok "vduse-blk list shows $n" "$l"
  else skip "vduse-blk list shows $n" "not a qsd feature"; fi

  # ext4 round trip
  local mnt=$W/mnt sums=$W/sums i j
  mkdir -p "$mnt"
  t=$SECONDS
  if mkfs.ext4 -q -F /dev/"$dev" >"$W/mkfs.out" 2>&1 && mount /dev/"$dev" "$mnt"; then
    for i in 0 1 2 3; do
      mkdir -p "$mnt/d$i/sub"
      for j in $(seq 0 24); do
        head -c $(( (RANDOM % 256 + 1) * 1024 + RANDOM % 1000 )) /dev/urandom >"$mnt/d$i/f$j"
      done
      head -c 3M /dev/urandom >"$mnt/d$i/sub/big"
      ln -s "f0" "$mnt/d$i/link"
    done
    (cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$sums"
    sync
    if umount "$mnt"; then ok "ext4: mkfs, mount, write $(wc -l <"$sums") files, sync, umount ($((SECONDS - t)) s)"
    else notok "ext4: umount" "$(mount | grep "$mnt")"; fi
  else
    notok "ext4: mkfs + mount" "$(cat "$W/mkfs.out")" "$(dmesgtail)" "$(logtail $n)"
  fi
  if [[ -s $sums ]] && ! mountpoint -q "$mnt"; then
    check "ext4: fsck.ext4 -fn is clean" fsck.ext4 -fn /dev/"$dev"
    echo 3 >/proc/sys/vm/drop_caches
    if mount /dev/"$dev" "$mnt"; then
      check "ext4: remount, sha256 of all files match" bash -c "cd $(printf %q "$mnt") && sha256sum --quiet -c $(printf %q "$sums")"
      umount "$mnt"
    else notok "ext4: remount" "$(dmesgtail)"; fi
  fi

  # discard and write-zeroes
  local dmax zmax
  dmax=$(cat /sys/block/"$dev"/queue/discard_max_bytes); zmax=$(cat /sys/block/"$dev"/queue/write_zeroes_max_bytes)
  ((dmax > 0)) && ok "discard advertised (discard_max_bytes=$dmax)" || notok "discard advertised" "discard_max_bytes=0"
  ((zmax > 0)) && ok "write-zeroes advertised (write_zeroes_max_bytes=$zmax)" || notok "write-zeroes advertised" "write_zeroes_max_bytes=0"
  # discard: blkdiscard (VIRTIO_BLK_T_DISCARD); zeroout: blkdiscard -z (BLKZEROOUT,
  # i.e. WRITE_ZEROES *without* the unmap flag: the kernel passes NOUNMAP, so the
  # range may stay allocated); punch: fallocate -p on the block device (WRITE_ZEROES
  # with VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the device should deallocate).
  local mode label off cmd b0 b1 out
  for mode in discard zeroout punch; do
    case $mode in
      discard) off=64;  label="blkdiscard";  cmd=(blkdiscard -o $((64 << 20)) -l $((16 << 20))) ;;
      zeroout) off=96;  label="blkdiscard -z"; cmd=(blkdiscard -z -o $((96 << 20)) -l $((16 << 20))) ;;
      punch)   off=128; label="fallocate -p (write-zeroes+unmap)"; cmd=(fallocate -p -o $((128 << 20)) -l $((16 << 20))) ;;
    esac
    head -c 16M /dev/urandom >"$W/rand16"
    dd if="$W/rand16" of=/dev/"$dev" bs=1M seek=$off oflag=direct conv=fsync status=none
    b0=$(stat -c %b "$img")
    if out=$("${cmd[@]}" /dev/"$dev" 2>&1); then
      sync; b1=$(stat -c %b "$img")
      if cmp -s -n $((16 << 20)) <(dd if=/dev/"$dev" bs=1M skip=$off count=16 iflag=direct status=none) /dev/zero; then
        ok "$label: 16M range reads back as zeroes"
      else notok "$label: 16M range reads back as zeroes" "$(logtail $n)"; fi
      if [[ $mode == zeroout ]]; then
        ((b1 <= b0)) && ok "$label: backing file does not grow ($b0 -> $b1 blocks of 512; NOUNMAP, shrinking optional)" \
          || notok "$label: backing file does not grow" "stat -c %b: $b0 -> $b1"
      elif ((b1 <= b0 - (16 << 20) / 512 / 2)); then
        ok "$label: backing file shrinks ($b0 -> $b1 blocks of 512)"
      else notok "$label: backing file's allocated blocks shrink" "stat -c %b: $b0 -> $b1" "$(logtail $n)"; fi
    else
      notok "$label on /dev/$dev" "$out" "$(logtail $n)"
    fi
  done
  stop_checks "$n" "idle device"
}
