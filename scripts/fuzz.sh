#!/usr/bin/env bash
# fuzz.sh - build (cached, in .build-fuzz) and run the libFuzzer targets.
#   scripts/fuzz.sh TARGET [SECONDS] [LIBFUZZER FLAGS...]   run one target (default 60 s)
#   scripts/fuzz.sh --all SECONDS                           run every target for SECONDS each
#   scripts/fuzz.sh --build                                 only build every target
#   scripts/fuzz.sh --list                                  list the targets
# Seeds come from Fuzz/corpus/TARGET (read only); what libFuzzer learns goes to
# .build-fuzz/work/TARGET; findings to .build-fuzz/findings/TARGET/. Exits
# non-zero on a finding (crash, invariant violation, timeout, leak, OOM) and
# prints the path of the input that triggered it (see Fuzz/README.md).
# Env: FUZZ_TIMEOUT (s per input, default 10), FUZZ_RSS_MB (default 2048),
#      FUZZ_NICE (default 10), FUZZ_SCRATCH (default .build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(queue control parse zstd remote overlay crash)
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
NICE=${FUZZ_NICE:-10}

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

fuzzer_lib() {
  local swiftc resdir lib
  swiftc=$(command -v swiftc)
  swiftc=$(readlink -f "$swiftc")
  for resdir in "$(dirname "$swiftc")"/../lib/clang/*/lib/linux "$(dirname "$swiftc")"/../lib/swift/clang/lib/linux; do
    lib="$resdir/libclang_rt.fuzzer_no_main-x86_64.a"
    if [[ -f $lib ]]; then readlink -f "$lib"; return; fi
  done
  echo "fuzz.sh: libclang_rt.fuzzer_no_main-x86_64.a not found next to $swiftc" >&2
  exit 1
}

# Every Swift module is compiled with ASan plus libFuzzer's coverage
# instrumentation (-sanitize=fuzzer given to the frontend only, so the driver
# does not link libFuzzer's own main); libFuzzer's driver is linked from the
# no_main archive and started by FuzzMain (Sources/FuzzHarness/FuzzMain.swift).
build() {
  local lib t
  lib=$(fuzzer_lib)
  mkdir -p "$SCRATCH"
  for t in "$@"; do
    echo "== building fuzz-$t (release, ASan + libFuzzer) in $SCRATCH"
    local rc=0
    nice -n "$NICE" swift build -c release --scratch-path "$SCRATCH" --sanitize=address \
      -Xswiftc -Xfrontend -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING \
      -Xlinker "$lib" -Xlinker -lstdc++ --product "fuzz-$t" >"$SCRATCH/build.log" 2>&1 || rc=$?
    grep -v -E "Cannot export local symbol|^\[[0-9]+/[0-9]+\]|^Fetch|^Comput|^Creating|^Working copy" \
      "$SCRATCH/build.log" || true
    [[ $rc -eq 0 && -x $SCRATCH/release/fuzz-$t ]] || { echo "fuzz.sh: build of fuzz-$t failed"; exit 1; }
  done
}

run() {
  local t=$1 secs=$2; shift 2
  local bin=$SCRATCH/release/fuzz-$t work=$SCRATCH/work/$t findings=$SCRATCH/findings/$t log
  mkdir -p "$work" "$findings"
  log=$SCRATCH/fuzz-$t.log
  echo "== fuzz-$t for ${secs}s (corpus $work + Fuzz/corpus/$t, log $log)"
  local rc=0
  SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
    nice -n "$NICE" "$bin" "$work" "Fuzz/corpus/$t" -max_total_time="$secs" \
      -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -print_final_stats=1 \
      -artifact_prefix="$findings/" "$@" >"$log" 2>&1 || rc=$?
  grep -E "^#[0-9]+ +(DONE|INITED)" "$log" | tail -n 2 || true
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log" || true
  if [[ $rc -ne 0 ]]; then
    grep -E "Fatal error|fuzz invariant|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|SUMMARY" "$log" | head -n 5 || true
    local unit
    unit=$(grep -o -E "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/Test unit written to //')
    echo "FINDING in fuzz-$t (exit $rc): ${unit:-see $log}"
    echo "  reproduce: $bin ${unit:-FILE}   (or: swift run fuzz-$t ${unit:-FILE})"
    return 1
  fi
  echo "fuzz-$t: no finding"
}

[[ $# -ge 1 ]] || usage
case $1 in
  --list) printf '%s\n' "${TARGETS[@]}" ;;
  --build) build "${TARGETS[@]}" ;;
  --all)
    secs=${2:?--all needs SECONDS}
    build "${TARGETS[@]}"
    failed=()
    for t in "${TARGETS[@]}"; do run "$t" "$secs" || failed+=("$t"); done
    if [[ ${#failed[@]} -gt 0 ]]; then echo "fuzz.sh: findings in: ${failed[*]}"; exit 1; fi
    ;;
  -h|--help) usage ;;
  *)
    t=$1; secs=${2:-60}; shift; [[ $# -gt 0 ]] && shift
    [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "unknown target '$t' (targets: ${TARGETS[*]})"; exit 2; }
    build "$t"
    run "$t" "$secs" "$@"
    ;;
esac
