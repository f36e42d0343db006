#!/usr/bin/env bash
# bench-startup.sh OLD_BIN [NEW_BIN] - start-up time of two vduse-blk builds,
# in the guest, alternating, same run: `--help`, and `create --attach` until
# the disk exists for a file: image and a remote raw image (nginx in the
# guest), split at /dev/vduse/NAME (process start + backend open) and the
# attach. Prints every round and the medians; ROUNDS (default 4).
# NEW_BIN defaults to .build/release/vduse-blk. Both paths must be under the
# repository (the guest sees it), e.g. a copy of an older build in .e2e-work/.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
if [[ ${1:-} != --in-guest ]]; then
  [[ $# -ge 1 ]] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
  OLD_BIN=$(realpath "$1") NEW_BIN=$(realpath "${2:-$REPO/.build/release/vduse-blk}")
  for b in "$OLD_BIN" "$NEW_BIN"; do
    [[ -x $b && $b == "$REPO"/* ]] || { echo "bench-startup: $b: not an executable under $REPO" >&2; exit 2; }
  done
  export OLD_BIN NEW_BIN ROUNDS=${ROUNDS:-4}
  VDUSE_VM_ENV="OLD_BIN NEW_BIN ROUNDS ${VDUSE_VM_ENV:-}" \
    exec bash "$HERE/run-in-guest.sh" "bash $(printf %q "$HERE/bench-startup.sh") --in-guest"
fi

# ---- in the guest -------------------------------------------------------------
# shellcheck source=scripts/lib/daemons.sh
source "$HERE/lib/daemons.sh"
# shellcheck source=scripts/lib/nginx.sh
source "$HERE/lib/nginx.sh"
W=$(mktemp -d /dev/shm/startup.XXXXXX)
trap 'dev_stop_all 5; nginx_stop; rm -rf "$W"' EXIT
mkdir -p "$W/www"; head -c 32M /dev/urandom >"$W/www/disk.img"
nginx_start "$W/www" 18092 "$W/nginx" || { echo "bench-startup: nginx did not start" >&2; exit 1; }
ms_since() { echo $(( (${EPOCHREALTIME/./} - $1) / 1000 )); }
declare -A samples=()
for ((round = 1; round <= ROUNDS; round++)); do
  for which in old new; do
    if [[ $which == old ]]; then BIN=$OLD_BIN; else BIN=$NEW_BIN; fi
    t0=${EPOCHREALTIME/./}; "$BIN" --help >/dev/null; samples[help-$which]+=" $(ms_since "$t0")"
    for kind in file remote; do
      if [[ $kind == file ]]; then DEV_BACKEND=file:$W/www/disk.img
      else DEV_BACKEND="http://127.0.0.1:18092/disk.img,format=raw,cache-dir=$W/cache-$round-$which"; fi
      export DEV_BACKEND
      t0=${EPOCHREALTIME/./}
      dev_start su "$W/www/disk.img" --readonly || { echo "bench-startup: $which $kind did not start" >&2; logtail su >&2; exit 1; }
      total=$(ms_since "$t0") created=$(( (DEV_CREATED_NS / 1000 - t0) / 1000 ))
      samples[$kind-$which]+=" $total" samples[attach-$kind-$which]+=" $((total - created))"
      echo "round $round $which $kind: /dev/vduse after $created ms, disk after $total ms"
      dev_stop su 10 >/dev/null || true
    done
  done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "medians of $ROUNDS rounds (ms), old -> new:"
for k in help file remote attach-file attach-remote; do
  echo "  $k: $(median "${samples[$k-old]}") -> $(median "${samples[$k-new]}")   (old:${samples[$k-old]}; new:${samples[$k-new]})"
done
