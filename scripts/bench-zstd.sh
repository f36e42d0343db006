#!/usr/bin/env bash
# bench-zstd.sh - benchmarks of the zstd image backend on a generated raw image
# that compresses like a real disk: an ext4 file system (mkfs.ext4 -d, no root
# needed) holding headers and docs (text), shared libraries (binaries) and a
# slice of random data, with free space left zero.
#
#   1. pack throughput and size: `vduse-blk image pack` (level 3, seekable,
#      CHUNK-sized frames) against stock `zstd -3 -T0` of the whole raw image
#      (one stream, not seekable: the best ratio one can hope for);
#   2. 4 KiB random-read IOPS of the zstd backend with a cold (no) and a warm
#      (everything cached) chunk cache, as a ratio to the sync file backend on
#      the same raw image (in the page cache).
#
# Environment: SIZE_MB (raw image size, default 512), CHUNK (default 64K),
# THREADS (default nproc), SECONDS_EACH (IOPS run length, default 3),
# QUEUES (default 1), WORK (scratch dir, default a fresh temp dir, removed),
# BUILD (swift scratch path, default .build).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-512}
CHUNK=${CHUNK:-64K}
THREADS=${THREADS:-$(nproc)}
SECONDS_EACH=${SECONDS_EACH:-3}
QUEUES=${QUEUES:-1}
BUILD=${BUILD:-.build}
if [[ -z ${WORK:-} ]]; then WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$WORK"

command -v zstd >/dev/null || { echo "bench-zstd: the zstd CLI is needed" >&2; exit 1; }
command -v mkfs.ext4 >/dev/null || PATH=$PATH:/usr/sbin:/sbin

echo "== release build"
swift build -c release --scratch-path "$BUILD" --product vduse-blk 2>&1 | tail -n 1
BIN=$BUILD/release/vduse-blk

now() { date +%s.%N; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

echo "== raw image: ${SIZE_MB} MiB ext4"
stage=$WORK/stage
rm -rf "$stage"; mkdir -p "$stage"/{text,bin}
budget=$(( SIZE_MB * 1024 * 1024 * 55 / 100 ))   # fill about 55%
copy_until() {  # copy_until SRC_DIR DEST BYTES
  local src=$1 dest=$2 limit=$3 total=0 f s
  while IFS= read -r -d '' f; do
    s=$(stat -c %s "$f"); (( total + s > limit )) && break
    cp -- "$f" "$dest/$(echo "$f" | tr / _)" 2>/dev/null && total=$(( total + s ))
  done < <(find "$src" -type f -size +1k -print0 2>/dev/null | sort -z)
}
copy_until /usr/include "$stage/text" $(( budget * 35 / 100 ))
copy_until /usr/share/doc "$stage/text" $(( budget * 50 / 100 ))
copy_until /usr/lib/x86_64-linux-gnu "$stage/bin" $(( budget * 40 / 100 ))
head -c $(( budget * 10 / 100 )) /dev/urandom > "$stage/random.bin"
raw=$WORK/disk.raw
rm -f "$raw"; truncate -s "${SIZE_MB}M" "$raw"
mkfs.ext4 -q -F -d "$stage" "$raw"
rm -rf "$stage"
cat "$raw" > /dev/null   # page cache warm for everybody
raw_bytes=$(stat -c %s "$raw")
echo "used: $(du -k "$raw" | awk '{print $1 / 1024}') MiB allocated of ${SIZE_MB} MiB"

echo "== pack (level 3, ${CHUNK} chunks, ${THREADS} threads) vs zstd -3 -T0"
t0=$(now); "$BIN" image pack "$raw" "$WORK/disk.zst" --chunk-size "$CHUNK" --level 3 --threads "$THREADS" --force >/dev/null; t1=$(now)
zstd -q -f -3 -T0 "$raw" -o "$WORK/whole.zst"; t2=$(now)
zstd -q -f -3 -T1 "$raw" -o "$WORK/whole1.zst"; t3=$(now)
ours=$(stat -c %s "$WORK/disk.zst"); whole=$(stat -c %s "$WORK/whole.zst")
awk -v raw="$raw_bytes" -v ours="$ours" -v whole="$whole" \
    -v tp="$(echo "$t1 - $t0" | bc)" -v tz="$(echo "$t2 - $t1" | bc)" -v tz1="$(echo "$t3 - $t2" | bc)" -v th="$THREADS" 'BEGIN {
  printf "%-34s %10s %8s %9s %11s\n", "", "size MiB", "ratio", "seconds", "MiB/s"
  printf "%-34s %10.1f %8.2f %9.2f %11.0f\n", "vduse-blk image pack (seekable)", ours / 1048576, raw / ours, tp, raw / 1048576 / tp
  printf "%-34s %10.1f %8.2f %9.2f %11.0f\n", "zstd -3 -T0 (one stream)", whole / 1048576, raw / whole, tz, raw / 1048576 / tz
  printf "%-34s %10s %8s %9.2f %11.0f\n", "zstd -3 -T1 (one stream)", "", "", tz1, raw / 1048576 / tz1
  printf "seekable size / whole-stream size: %.3f   pack speed / zstd -T0 speed: %.2f (%d threads)\n", ours / whole, tz / tp, th
}'
"$BIN" image verify "$WORK/disk.zst"
zstd -q -d -c "$WORK/disk.zst" | cmp - "$raw" && echo "stock zstd -d restores the raw image: OK"

echo "== 4 KiB random reads"
"$BIN" image bench-read "$WORK/disk.zst" "$raw" --seconds "$SECONDS_EACH" --queues "$QUEUES"
