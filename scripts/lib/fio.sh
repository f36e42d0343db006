# shellcheck shell=bash
# lib/fio.sh - fio on a block device, for the guest suite and the benchmarks
# (sourced).
#
#   fio_dev DEV [fio options...]   fio --filename=/dev/DEV --direct=1 OPTIONS
#       (DEV: vdX or a path), run in FIO_DIR (default W, else .) so that verify
#       state files land there, under `timeout -k 5 FIO_TIMEOUT` when that is set;
#       stdout and status are fio's (124/137: timed out).
#   fio_terse FIELD...             print the named fields of each terse v3 line on
#       stdin (--output-format=terse --terse-version=3, or --minimal), ';'-separated:
#       error read_kib read_iops write_kib write_iops
#   fio_verify LABEL DEV [fio options...]   a check (needs lib/report.sh and
#       lib/daemons.sh): write, then verify (crc32c, fatal), under FIO_RUNTIME
#       (default 90 s); ok when fio exits 0, every job reports error 0 and both
#       wrote and read (verified) data. The check line carries jobs, MiB and IOPS.

# terse v3 field numbers (fio's HOWTO, "Terse output")
declare -A FIO_TERSE=([error]=5 [read_kib]=6 [read_iops]=8 [write_kib]=47 [write_iops]=49)

fio_dev() {
  local dev=$1; shift
  [[ $dev == /* ]] || dev=/dev/$dev
  local t=()
  [[ -n ${FIO_TIMEOUT:-} ]] && t=(timeout -k 5 "$FIO_TIMEOUT")
  (cd "${FIO_DIR:-${W:-.}}" && exec "${t[@]}" fio --filename="$dev" --direct=1 "$@")
}

fio_terse() {
  local f cols=()
  for f in "$@"; do cols+=("\$${FIO_TERSE[$f]:?fio_terse: unknown field $f}"); done
  awk -F';' -v OFS=';' "/^3;/ { print $(IFS=,; echo "${cols[*]}") }"
}

fio_verify() {
  local label=$1 dev=$2 out rc; shift 2
  local runtime=${FIO_RUNTIME:-90}
  out=$(FIO_DIR=$W FIO_TIMEOUT=$((runtime + 120)) fio_dev "$dev" \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --runtime="$runtime" \
        --output-format=terse --terse-version=3 "$@" 2>"$W/fio.err"); rc=$?
  local jobs bad
  jobs=$(grep -c '^3;' <<<"$out")
  # terse v3: 5 error, 6 read KiB, 8 read IOPS, 47 write KiB, 49 write IOPS
  bad=$(awk -F';' '/^3;/ && ($5 != 0 || $6 == 0 || $47 == 0)' <<<"$out")
  if ((rc == 0 && jobs > 0)) && [[ -z $bad ]]; then
    ok "$label ($(awk -F';' '/^3;/{n++; w += $49; r += $8; kb += $47} END {printf "%d jobs, %.0f MiB, write %.0f IOPS, verify-read %.0f IOPS", n, kb/1024, w, r}' <<<"$out"))"
  else
    notok "$label" "fio exit status $rc, $jobs terse lines" "bad jobs: $bad" "$(tail -n 15 "$W/fio.err")" "$(logtail "${CUR:-}")"
    return 1
  fi
}
