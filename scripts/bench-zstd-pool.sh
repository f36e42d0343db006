#!/usr/bin/env bash
# bench-zstd-pool.sh - host-side A/B of zstd decompression off the queue
# threads: whole-image sequential reads (`vduse-blk image bench-seq`, 1 MiB
# reads, QD1 and QD4, pass 1 cold, pass 2 warm) of a zstd image, local
# (`zstd:`) and from a loopback nginx (`http://`, cache-dir=none), then 4 KiB
# random reads (`vduse-blk image bench-read`: file, cold inline, cold pool,
# warm, and the decompression bound), for each binary given, alternating
# rounds so both see the same machine.
#
#   scripts/bench-zstd-pool.sh IMAGE.zst RAW.img BIN [BIN...]
#
# IMAGE.zst and RAW.img: e.g. the WORK files of scripts/bench-zstd.sh.
# Environment: ROUNDS (default 2), PORT (default 18093), SECONDS_EACH (3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/nginx.sh
[[ $# -ge 3 ]] || { sed -n 2,14p "$0" >&2; exit 64; }
image=$(readlink -f "$1") raw=$(readlink -f "$2"); shift 2
ROUNDS=${ROUNDS:-2} PORT=${PORT:-18093} SECONDS_EACH=${SECONDS_EACH:-3}
W=$(mktemp -d /tmp/zpool.XXXXXX); trap 'nginx_stop; rm -rf "$W"' EXIT
mkdir -p "$W/www"; ln -s "$image" "$W/www/disk.zst"
cat "$image" "$raw" >/dev/null   # page cache warm for every row
nginx_start "$W/www" "$PORT" "$W/nginx" || { echo "bench-zstd-pool: nginx did not start" >&2; exit 1; }
url=http://127.0.0.1:$PORT/disk.zst
passes() { "$1" image bench-seq "$2" --depth "$3" --passes 2 | awk '/^pass/ { printf "%s ", $3 }'; }
for ((r = 1; r <= ROUNDS; r++)); do
  for bin in "$@"; do
    echo "== round $r: $bin"
    for d in 1 4; do
      echo "zstd: local  QD$d pass1/pass2 MiB/s: $(passes "$bin" "zstd:$image" $d)"
      echo "http: remote QD$d pass1/pass2 MiB/s: $(passes "$bin" "$url,cache-dir=none" $d)"
    done
    "$bin" image bench-read "$image" "$raw" --seconds "$SECONDS_EACH"
  done
done
echo "file: QD1 pass1/pass2 MiB/s: $(passes "$1" "file:$raw" 1)"
