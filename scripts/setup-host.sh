#!/usr/bin/env bash
# setup-host.sh - install what a fresh Debian 12 machine lacks to build and test
# vduse-blk (needs root and apt). The guest kernel and virtme-ng are fetched by
# scripts/run-in-guest.sh on first use and cached.
set -euo pipefail
pkgs=(liburing-dev libaio-dev libzstd-dev zstd fio e2fsprogs util-linux iproute2 kmod
      libcurl4-openssl-dev libssl-dev nginx-light curl
      qemu-system-x86 qemu-system-common busybox-static xz-utils file python3-venv gnuplot-nox
      aria2 nbdkit nbd-client prometheus)  # promtool: the metrics section checks the exposition with `promtool check metrics`
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup-host: installing ${missing[*]}" >&2
  apt-get update -qq >&2 || true
  # Packages with services (nginx) must not start them here: the tests run
  # their own instances, and a busy port 80 would fail the install.
  policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1; fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?
  ((own_policy)) && rm -f "$policy"
  ((rc == 0)) || exit "$rc"
fi
command -v swift >/dev/null || { echo "setup-host: swift (6.x) is not on PATH" >&2; exit 1; }
