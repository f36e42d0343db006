#!/usr/bin/env bash
# check-install.sh - stage scripts/install.sh into a temporary DESTDIR (from an
# existing release build) and check what it installs: the binary runs, the man
# page renders, each completion script names the subcommands, and systemd
# accepts the unit (systemd-analyze verify, where systemd is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
DESTDIR=$stage bash scripts/install.sh --no-build >/dev/null
fail() { echo "check-install: $*" >&2; exit 1; }
"$stage/usr/local/bin/vduse-blk" --help | grep -q create || fail "installed binary does not run"
grep -q '^\.Nm vduse-blk\|vduse-blk' "$stage/usr/local/share/man/man1/vduse-blk.1" || fail "man page empty"
if command -v groff >/dev/null; then
  groff -man -Tutf8 "$stage/usr/local/share/man/man1/vduse-blk.1" 2>/dev/null | grep -q "destroy" || fail "man page does not render"
fi
for c in share/bash-completion/completions/vduse-blk share/zsh/site-functions/_vduse-blk share/fish/vendor_completions.d/vduse-blk.fish; do
  grep -q "create" "$stage/usr/local/$c" || fail "completion $c lacks the subcommands"
done
unit=$stage/etc/systemd/system/vduse-blk@.service
grep -q "ExecStart=/usr/local/bin/vduse-blk create %i" "$unit" || fail "unit's ExecStart is wrong"
if command -v systemd-analyze >/dev/null; then
  inst=$stage/vduse-blk@disk0.service
  sed "s|/usr/local/bin/vduse-blk|$stage/usr/local/bin/vduse-blk|" "$unit" >"$inst"
  out=$(systemd-analyze verify --man=no "$inst" 2>&1) || true
  [[ -z $out ]] || fail "systemd-analyze verify: $out"
fi
echo "install: binary, man page, bash/zsh/fish completions and the systemd unit check out"
