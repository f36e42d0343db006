# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/06-remote.sh - section "remote" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_remote: (vduse-blk only) an ext4 image served over HTTP by a private nginx
# (lib/nginx.sh): cold, then warm after a restart (disk cache reused, `vduse-blk
# stats`), then a zstd image fetched remotely with writes in an overlay.

run_remote() {
  section "remote backend: an ext4 image over HTTP from nginx, cached in memory and on disk"
  if [[ $PEER != vduse-blk ]]; then skip "remote backend" "vduse-blk only"; return; fi
  local www=$W/www tree=$W/rtree m=$W/mnt cache=$W/rcache port=18080 f dev fetched
  mkdir -p "$www" "$tree/docs" "$m"
  for f in $(seq 1 60); do seq 1 $((f * 250)) >"$tree/docs/f$f.txt"; done
  head -c 4M /dev/urandom >"$tree/random.bin"
  truncate -s 64M "$www/disk.img"
  mkfs.ext4 -q -F -d "$tree" "$www/disk.img" >/dev/null
  (cd "$tree" && find . -type f -exec sha256sum {} + | sort -k2) >"$W/rtree.sums"
  if nginx_start "$www" $port "$W/nginx"; then ok "remote: nginx serves the image on 127.0.0.1:$port"
  else notok "remote: nginx serves the image" "$(cat "$W"/nginx/logs/*.log 2>/dev/null | tail -n 5)"; return; fi
  local url=http://127.0.0.1:$port/disk.img
  read_tree() {  # NAME LABEL: mount read-only, every file's sha256 equals the source tree's
    if mount -o ro,noload /dev/"${DDEV[$1]}" "$m" &&
       (cd "$m" && find . -type f ! -path './lost+found/*' -exec sha256sum {} + | sort -k2) | diff -q - "$W/rtree.sums" >/dev/null
    then ok "remote: $2"
    else notok "remote: $2" "$(logtail "$1")"; fi
    umount "$m" 2>/dev/null
  }
  stat_of() { "$BIN" stats "$1" 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'; }

  DEV_BACKEND="$url,cache-dir=$cache,chunk=256K" dev_start r1 "$www/disk.img" --serial remote1 --queues 2 \
    || { notok "remote: device appears" "$(logtail r1)"; return; }
  read_tree r1 "every file of the ext4 tree reads back equal to the source (cold)"
  sleep 1.2  # the stats file is rewritten every second
  fetched=$(stat_of r1 bytes_fetched)
  if [[ -n $fetched && $fetched -gt 0 ]]; then ok "remote: vduse-blk stats shows the fetch (bytes_fetched $fetched)"
  else notok "remote: vduse-blk stats shows the fetch" "$("$BIN" stats r1 2>&1 | head -n 5)"; fi
  stop_checks r1 "remote cold"

  DEV_BACKEND="$url,cache-dir=$cache,chunk=256K" dev_start r2 "$www/disk.img" --serial remote2 --queues 2 \
    || { notok "remote: device restarts" "$(logtail r2)"; return; }
  read_tree r2 "after a restart every file still reads back equal"
  sleep 1.2
  local refetched hits; refetched=$(stat_of r2 bytes_fetched); hits=$(stat_of r2 hits_disk)
  if [[ -n $refetched && -n $hits ]] && ((hits > 0 && refetched * 20 <= fetched)); then
    ok "remote: the disk cache is reused after a restart (fetched $refetched bytes vs $fetched cold, $hits disk hits)"
  else notok "remote: the disk cache is reused after a restart" "fetched $refetched bytes vs $fetched cold, disk hits $hits"; fi
  if cmp <(dd if=/dev/"${DDEV[r2]}" bs=1M iflag=direct status=none) "$www/disk.img"
  then ok "remote: the whole device equals the served image byte for byte"
  else notok "remote: the whole device equals the served image byte for byte" "$(logtail r2)"; fi
  stop_checks r2 "remote warm"

  # zstd image over HTTP, writes through an overlay.
  "$BIN" image pack "$www/disk.img" "$www/disk.zst" --chunk-size 64K >/dev/null 2>&1
  local sum0; sum0=$(sha256sum <"$www/disk.zst")
  DEV_BACKEND="http://127.0.0.1:$port/disk.zst,cache-dir=$cache,overlay=$W/r.ovl" dev_start rz "$www/disk.img" --serial remotez \
    || { notok "remote zstd: device appears" "$(logtail rz)"; return; }
  dev=${DDEV[rz]}
  if cmp <(dd if=/dev/"$dev" bs=1M iflag=direct status=none) "$www/disk.img"
  then ok "remote zstd: compressed chunks fetched remotely read back equal to the raw image"
  else notok "remote zstd: compressed chunks fetched remotely read back equal to the raw image" "$(logtail rz)"; fi
  head -c 1M /dev/urandom >"$W/rpat"
  dd if="$W/rpat" of=/dev/"$dev" bs=64k seek=100 oflag=direct conv=fsync status=none
  if cmp <(dd if=/dev/"$dev" bs=64k skip=100 count=16 iflag=direct status=none) "$W/rpat"
  then ok "remote zstd: writes land in the overlay and read back"
  else notok "remote zstd: writes land in the overlay and read back" "$(logtail rz)"; fi
  stop_checks rz "remote zstd"
  if [[ $(sha256sum <"$www/disk.zst") == "$sum0" ]]; then ok "remote zstd: the served object is never modified"
  else notok "remote zstd: the served object is never modified"; fi
  nginx_stop
}
