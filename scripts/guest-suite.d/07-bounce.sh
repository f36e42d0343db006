# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/07-bounce.sh - section "bounce" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_bounce: (vduse-blk only) --bounce user (VDUSE_IOTLB_REG_UMEM): pages
# registered, reads and fio verify through them, unbind + bind under the daemon.

# Daemon-supplied bounce pages (VDUSE_IOTLB_REG_UMEM): the kernel copies request
# data into our memory instead of its own; data already in flight when they are
# registered (the partition scan) must survive the switch.
run_bounce() {
  section "bounce: --bounce user (VDUSE_IOTLB_REG_UMEM)"
  if [[ $PEER != vduse-blk ]]; then skip "user bounce pages" "vduse-blk only"; return; fi
  local n=e2eumem img=$W/umem.img dev
  head -c 64M /dev/urandom >"$img"
  if ! dev_start "$n" "$img" --queues 2 --serial E2E-UMEM --bounce user --log-level info; then
    notok "bounce user: device appears" "$(logtail $n)" "$(dmesgtail)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  local i
  for ((i = 0; i < 50; i++)); do grep -q "daemon pages registered" "${DLOG[$n]}" && break; sleep 0.1; done
  if grep -q "daemon pages registered" "${DLOG[$n]}"
  then ok "bounce user: $(grep -o 'bounce region: .*' "${DLOG[$n]}" | head -n 1)"
  else notok "bounce user: the daemon registers its pages" "$(logtail $n)" "$(dmesgtail)"; fi
  if cmp <(dd if=/dev/"$dev" bs=1M iflag=direct status=none) "$img"
  then ok "bounce user: the whole device reads back equal to the image"
  else notok "bounce user: the whole device reads back equal to the image" "$(logtail $n)"; fi
  fio_verify "bounce user: fio 4k randwrite+verify QD32 numjobs 2" "$dev" --name=umem --bs=4k --rw=randwrite \
    --size=8M --offset_increment=8M --ioengine=io_uring --iodepth=32 --numjobs=2
  fio_verify "bounce user: fio 1M seq write+verify QD8" "$dev" --name=umem-seq --bs=1M --rw=write \
    --size=32M --offset=32M --ioengine=libaio --iodepth=8
  # Unbind and bind again under the running daemon: the driver resets the device
  # (the kernel drops its bounce mapping, keeps our pages) and probes it afresh.
  timeout 20 vdpa dev del "$n"
  timeout 20 vdpa dev add name "$n" mgmtdev vduse
  local again
  again=$(dev_wait "vdpa:$n" 10)
  if [[ -n $again ]] && cmp <(dd if=/dev/"$again" bs=1M iflag=direct status=none) "$img"
  then ok "bounce user: after vdpa dev del + add, the device reads back equal to the image"
  else notok "bounce user: after vdpa dev del + add, the device reads back equal to the image" "device: ${again:-none}" "$(logtail $n)" "$(dmesgtail)"; fi
  DDEV[$n]=$again
  stop_checks "$n" "bounce user"
}
