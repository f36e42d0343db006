#!/usr/bin/env bash
# install.sh - install vduse-blk: the release binary, its man page and shell
# completions (generated from the argument parser), and the systemd template
# unit vduse-blk@.service with /etc/vduse-blk/ for per-device config files.
#
#   bash scripts/install.sh                 # build (release) and install under /usr/local
#   PREFIX=/usr bash scripts/install.sh
#   DESTDIR=/tmp/stage bash scripts/install.sh --no-build   # stage an existing build
#
# Then: cp examples/systemd/disk0.conf /etc/vduse-blk/NAME.conf, edit it, and
# `systemctl enable --now vduse-blk@NAME`. Uninstall: the files listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local} DESTDIR=${DESTDIR:-}
BINDIR=$PREFIX/bin MANDIR=$PREFIX/share/man/man1
UNITDIR=${UNITDIR:-/etc/systemd/system} CONFDIR=${CONFDIR:-/etc/vduse-blk}
if ! command -v swift >/dev/null && [[ -r /etc/profile.d/swift.sh ]]; then source /etc/profile.d/swift.sh; fi
if ! command -v swift >/dev/null && [[ -x /opt/swift/usr/bin/swift ]]; then export PATH=/opt/swift/usr/bin:$PATH; fi

if [[ ${1:-} != --no-build ]]; then
  ((EUID == 0)) && bash scripts/setup-host.sh
  swift build -c release --product vduse-blk 2>&1 | tail -n 1
fi
bin=.build/release/vduse-blk
[[ -x $bin ]] || { echo "install.sh: no $bin (build first, or drop --no-build)" >&2; exit 1; }

# The man page: swift-argument-parser's generate-manual plugin.
swift package plugin generate-manual >/dev/null 2>&1 || { echo "install.sh: generate-manual failed" >&2; exit 1; }
man=.build/plugins/GenerateManual/outputs/vduse-blk/vduse-blk.1
[[ -s $man ]] || { echo "install.sh: no man page at $man" >&2; exit 1; }

installed=()
put() {  # put MODE SOURCE DEST
  install -D -m "$1" "$2" "$DESTDIR$3"; installed+=("$3")
}
put 755 "$bin" "$BINDIR/vduse-blk"
put 644 "$man" "$MANDIR/vduse-blk.1"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$bin" --generate-completion-script bash >"$tmp/bash"
"$bin" --generate-completion-script zsh >"$tmp/zsh"
"$bin" --generate-completion-script fish >"$tmp/fish"
put 644 "$tmp/bash" "$PREFIX/share/bash-completion/completions/vduse-blk"
put 644 "$tmp/zsh" "$PREFIX/share/zsh/site-functions/_vduse-blk"
put 644 "$tmp/fish" "$PREFIX/share/fish/vendor_completions.d/vduse-blk.fish"
sed "s|@BINDIR@|$BINDIR|g" examples/systemd/vduse-blk@.service >"$tmp/unit"
put 644 "$tmp/unit" "$UNITDIR/vduse-blk@.service"
install -d -m 755 "$DESTDIR$CONFDIR"
put 644 examples/systemd/disk0.conf "$CONFDIR/disk0.conf.example"
if [[ -z $DESTDIR ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then systemctl daemon-reload; fi
printf 'installed %s\n' "${installed[@]}"
