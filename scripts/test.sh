#!/usr/bin/env bash
# test.sh - every test: release build (no warnings allowed), the unit and
# simulated-driver suite (swift test), then the end-to-end suite against the
# real kernel inside a QEMU guest (scripts/guest-suite.sh), then hostile-input
# hardening: every libFuzzer target for a bounded time and the unit tests under
# AddressSanitizer and ThreadSanitizer (scripts/ci-hardening.sh).
#   VDUSE_SKIP_GUEST=1      skip the guest suite
#   VDUSE_SKIP_HARDENING=1  skip fuzzing and sanitizers
set -euo pipefail
cd "$(dirname "$0")/.."
# A non-login shell may lack the toolchain's PATH entry (/etc/profile.d/swift.sh).
if ! command -v swift >/dev/null && [[ -r /etc/profile.d/swift.sh ]]; then source /etc/profile.d/swift.sh; fi
if ! command -v swift >/dev/null && [[ -x /opt/swift/usr/bin/swift ]]; then export PATH=/opt/swift/usr/bin:$PATH; fi
bash scripts/setup-host.sh

echo "== no unsafe flags (SwiftPM refuses them in a versioned dependency)"
if grep -n 'unsafeFlags' Package.swift; then echo "Package.swift must not use unsafeFlags"; exit 1; fi

echo "== release build"
log=$(mktemp)
swift build -c release 2>&1 | tee "$log" | tail -n 3
if grep -E '(warning|error):' "$log" | grep -v 'Source files for' | grep -q .; then
  echo "release build has warnings or errors:"; grep -E '(warning|error):' "$log" | sort -u; exit 1
fi
rm -f "$log"

echo "== install script (staged): man page, completions, systemd unit"
bash scripts/check-install.sh

echo "== example package (a backend outside Sources, depending on this package by path)"
(cd examples/ramdisk-backend && swift build 2>&1 | tail -n 1 && .build/debug/ramdisk-backend --self-test)

echo "== unit and simulated-driver tests"
swift test --disable-swift-testing 2>&1 | tail -n 40

hardening=0
if [[ ${VDUSE_SKIP_HARDENING:-0} != 1 && -f scripts/ci-hardening.sh ]]; then
  echo "== hardening: fuzz targets, AddressSanitizer, ThreadSanitizer"
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/ci-hardening.sh || hardening=1
fi

if [[ ${VDUSE_SKIP_GUEST:-0} != 1 ]]; then
  echo "== end-to-end suite in the guest"
  bash scripts/guest-suite.sh || exit 1
fi
if ((hardening)); then echo "hardening failed (see above)"; exit 1; fi
