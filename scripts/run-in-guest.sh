#!/usr/bin/env bash
# run-in-guest.sh 'COMMAND' - run COMMAND as root in a throwaway QEMU guest that
# has VDUSE, for hosts whose kernel lacks VDUSE/vDPA.
#
# The guest boots Debian bookworm's 6.12 kernel (downloaded with apt, never
# installed) under virtme-ng with the host's own / as a read-only 9p root plus
# throwaway writable layers over /etc, /usr, /var, /tmp, ...; the repository
# directory is shared read-write and is COMMAND's working directory, so what the
# guest writes there is what the host sees afterwards. Modules vduse,
# virtio_vdpa and virtio_blk are loaded before COMMAND runs (vhost_vdpa instead
# of virtio_vdpa with VDUSE_VM_DRIVER=vhost). Software emulation (TCG) by default.
#
# COMMAND is a shell command line (several arguments are joined with spaces).
# Prints COMMAND's stdout/stderr and exits with its status; 124 when the guest was
# killed on timeout, 125 when the guest could not be prepared or booted, 255 when
# the guest reported no status (crash).
#
# First run on a Debian 12 host installs what is missing (needs root or sudo, apt
# and PyPI): qemu-system-x86, qemu-system-common, kmod, iproute2, fio, e2fsprogs,
# util-linux, busybox-static, xz-utils, udev (pinned to the installed libudev1),
# python3-venv, and virtme-ng 1.42 in a venv; later runs only boot.
#
# Environment:
#   VDUSE_VM_CACHE    cache dir: venv, downloaded .deb, trimmed kernel
#                     (default ~/.cache/vduse-blk-vm)
#   VDUSE_VM_KPKG     kernel package, e.g. linux-image-6.12.117+deb12-amd64-unsigned.
#                     Default: the newest kernel already in the cache, else the
#                     newest linux-image-6.12.*+deb12-amd64-unsigned apt offers.
#   VDUSE_VM_KERNEL_REFRESH=1  ignore cached kernels when choosing (pick apt's newest)
#   VDUSE_VM_DRIVER   virtio (default: vduse virtio_vdpa virtio_blk) or vhost
#                     (vduse vhost_vdpa: vdpa devices appear as /dev/vhost-vdpa-N)
#   VDUSE_VM_LOAD     exact list of modules to load (overrides VDUSE_VM_DRIVER)
#   VDUSE_VM_MODULES  extra modules to put into the guest's (small) module tree
#   VDUSE_VM_MEM / VDUSE_VM_CPUS   guest RAM / vCPUs (default 2G / 2)
#   VDUSE_VM_TIMEOUT  seconds before the VM is killed (default 1500)
#   VDUSE_VM_ENV      names of extra environment variables passed to COMMAND
#                     (PATH always is)
#   VDUSE_VM_RWDIRS   extra host dirs shared read-write (the repository always is)
#   VDUSE_VM_CWD      COMMAND's working directory (default: the repository root)
#   VDUSE_VM_VERBOSE=1  stream the guest kernel console (its tail is always shown
#                     when the guest dies or times out)
#   VDUSE_VM_KVM=1    use KVM instead of TCG (on Firecracker-style hosts a normal
#                     guest dies at once with "KVM internal error" and QEMU hangs)
set -euo pipefail

if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2
fi
CMD="$*"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VDUSE_VM_CACHE:-$HOME/.cache/vduse-blk-vm}
VNG_VERSION=1.42
case ${VDUSE_VM_DRIVER:-virtio} in
  virtio) DEFAULT_LOAD="vduse virtio_vdpa virtio_blk" ;;
  vhost)  DEFAULT_LOAD="vduse vhost_vdpa" ;;
  *) echo "run-in-guest: VDUSE_VM_DRIVER must be virtio or vhost" >&2; exit 125 ;;
esac
LOAD=${VDUSE_VM_LOAD:-$DEFAULT_LOAD}
# Modules copied into the guest's deliberately small module tree: 9p/overlay for the
# root, the vDPA/VDUSE stack, virtio/vhost helpers. A full tree makes udev in the
# guest load ~35 unrelated modules, which under TCG triples the boot time. Names
# that are built into the kernel (ext4, crc32c ...) are harmless here.
MODULES="9p 9pnet_virtio netfs overlay virtio_mmio vdpa vduse virtio_vdpa vhost_vdpa
  vhost_iotlb vhost virtio_blk virtio_net tun loop ext4 crc32c_generic $LOAD ${VDUSE_VM_MODULES:-}"
MEM=${VDUSE_VM_MEM:-2G}
CPUS=${VDUSE_VM_CPUS:-2}
TIMEOUT=${VDUSE_VM_TIMEOUT:-1500}

log() { echo "run-in-guest: $*" >&2; }
die() { log "$*"; exit 125; }

SUDO=
if ((EUID != 0)); then command -v sudo >/dev/null && SUDO=sudo; fi

# --- host packages ------------------------------------------------------------
apt_updated=
apt_update() {
  [[ -n $apt_updated ]] && return
  log "apt-get update"
  $SUDO apt-get update -qq >&2 || log "warning: apt-get update failed"
  apt_updated=1
}
apt_install() {
  apt_update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

ensure_host_tools() {
  local pkgs=() pair
  for pair in qemu-system-x86_64:qemu-system-x86 qemu-storage-daemon:qemu-system-common \
              depmod:kmod vdpa:iproute2 fio:fio mkfs.ext4:e2fsprogs blkdiscard:util-linux \
              flock:util-linux busybox:busybox-static xz:xz-utils timeout:coreutils; do
    have "${pair%%:*}" || pkgs+=("${pair#*:}")
  done
  ((${#pkgs[@]} == 0)) || { log "installing ${pkgs[*]}"; apt_install $(printf '%s\n' "${pkgs[@]}" | sort -u); }
  # virtme-ng's guest init needs udevd (for /dev/virtio-ports/*, its stdio and
  # exit-status channels). Pin udev to the installed libudev1, or apt would upgrade
  # systemd on the host.
  if [[ ! -x /lib/systemd/systemd-udevd && ! -x /usr/lib/systemd/systemd-udevd ]]; then
    local v; v=$(dpkg-query -W -f='${Version}' libudev1 2>/dev/null || true)
    log "installing udev${v:+=$v}"
    apt_install "udev${v:+=$v}" || apt_install udev
  fi
}

# virtme-ng, pinned, in its own venv (vng runs virtme-run etc. via PATH).
VNG=$CACHE/venv/bin/vng
ensure_vng() {
  [[ -x $VNG ]] && "$VNG" --version 2>/dev/null | grep -q " $VNG_VERSION\$" && return
  log "installing virtme-ng $VNG_VERSION into $CACHE/venv"
  local py=python3; [[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
  rm -rf "$CACHE/venv"
  "$py" -m venv "$CACHE/venv" >&2 2>/dev/null || {
    rm -rf "$CACHE/venv"; apt_install python3-venv; "$py" -m venv "$CACHE/venv" >&2; }
  "$CACHE/venv/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION" >&2
}

# --- guest kernel: downloaded (never installed), trimmed to $MODULES -----------
kver_of() { local k=${1#linux-image-}; echo "${k%-unsigned}"; }
kroot_of() { echo "$CACHE/kernels/$1"; }
kernel_ready() {  # vmlinuz there and every wanted module resolvable in the small tree
  local r; r=$(kroot_of "$1")
  [[ -f $r/boot/vmlinuz-$1 && -f $r/.complete ]] &&
    modprobe -d "$r" -S "$1" -a --show-depends $MODULES >/dev/null 2>&1
}
apt_kernels() {  # newest last
  apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null |
    awk '{print $1}' | sort -V
}
pick_kernel() {
  if [[ -n ${VDUSE_VM_KPKG:-} ]]; then KPKG=$VDUSE_VM_KPKG; return; fi
  if [[ ${VDUSE_VM_KERNEL_REFRESH:-0} != 1 && -d $CACHE/kernels ]]; then
    local k
    k=$(cd "$CACHE/kernels" && ls -d 6.12.*+deb12-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $k && -f $CACHE/kernels/$k/.complete ]]; then KPKG=linux-image-$k-unsigned; return; fi
  fi
  KPKG=$(apt_kernels | tail -n 1)
  if [[ -z $KPKG ]]; then apt_update; KPKG=$(apt_kernels | tail -n 1); fi
  if [[ -z $KPKG ]]; then  # the metapackage names the current ABI
    local dep
    dep=$(apt-cache depends linux-image-6.12-amd64 2>/dev/null | awk '/Depends: linux-image-6/{print $2; exit}')
    [[ -n $dep ]] && KPKG=${dep%-unsigned}-unsigned
  fi
  [[ -n $KPKG ]] || die "apt offers no linux-image-6.12.*+deb12-amd64-unsigned; set VDUSE_VM_KPKG"
}

ensure_kernel() {
  pick_kernel
  KVER=$(kver_of "$KPKG")
  kernel_ready "$KVER" && return
  local debdir=$CACHE/debs deb root full dl f rel
  mkdir -p "$debdir"
  deb=$(ls "$debdir/${KPKG}_"*.deb 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z $deb ]]; then
    apt-cache show "$KPKG" 2>/dev/null | grep -q '^Filename:' || apt_update
    apt-cache show "$KPKG" 2>/dev/null | grep -q '^Filename:' ||
      die "apt has no $KPKG; set VDUSE_VM_KPKG to one that \`apt-cache search linux-image-6.12\` lists"
    log "downloading $KPKG (~110 MB)"
    local sandbox=(); ((EUID != 0)) || sandbox=(-o APT::Sandbox::User=root)
    (cd "$debdir" && apt-get -q "${sandbox[@]}" download "$KPKG" >&2) ||
      die "apt-get download $KPKG failed"
    deb=$(ls "$debdir/${KPKG}_"*.deb | sort -V | tail -n 1)
  fi
  log "building a trimmed module tree for $KVER"
  root=$(kroot_of "$KVER"); dl=$CACHE/unpack
  rm -rf "$dl" "$root"; mkdir -p "$dl" "$root/boot" "$root/lib/modules/$KVER"
  dpkg-deb -x "$deb" "$dl"
  full=$dl/lib/modules/$KVER
  [[ -f $dl/boot/vmlinuz-$KVER ]] || die "no boot/vmlinuz-$KVER in $deb"
  cp "$dl/boot/vmlinuz-$KVER" "$dl/boot/config-$KVER" "$root/boot/"
  depmod -b "$dl" "$KVER"            # the .deb ships no modules.dep
  # Copy the wanted modules with their dependencies, decompressed (faster under TCG).
  modprobe -d "$dl" -S "$KVER" -a --show-depends $MODULES | awk '$1 == "insmod" {print $2}' |
    sort -u | while read -r f; do
      rel=${f#"$full"/}; mkdir -p "$root/lib/modules/$KVER/${rel%/*}"
      case $f in
        *.xz)  xz -dc "$f" >"$root/lib/modules/$KVER/${rel%.xz}" ;;
        *.zst) zstd -dc "$f" >"$root/lib/modules/$KVER/${rel%.zst}" ;;
        *)     cp "$f" "$root/lib/modules/$KVER/$rel" ;;
      esac
    done
  cp "$full"/modules.builtin "$full"/modules.builtin.modinfo "$full"/modules.order "$root/lib/modules/$KVER/"
  depmod -b "$root" "$KVER"
  rm -rf "$dl"
  modprobe -d "$root" -S "$KVER" -a --show-depends $MODULES >/dev/null ||
    die "module tree for $KVER is incomplete (modules: $MODULES)"
  touch "$root/.complete"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9                                 # one setup at a time; released before the VM runs
ensure_host_tools
ensure_vng
ensure_kernel
flock -u 9; exec 9>&-
((SECONDS < 3)) || log "setup took ${SECONDS}s (cached from now on)"
KROOT=$(kroot_of "$KVER")

# --- the script the guest runs ---------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vduse-blk-vm.XXXXXX")   # on the host fs: the guest sees it
tpid= c1= c2=
cleanup() {  # on an early exit (signal) stop the VM and the output relays
  set +e
  if [[ -n $tpid ]]; then  # timeout forwards TERM to its group (vng, QEMU)
    kill -TERM "$tpid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 -- "-$tpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$tpid" 2>/dev/null
    wait "$tpid" 2>/dev/null
  fi
  [[ -z $c1 ]] || kill "$c1" "$c2" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM HUP
trap 'exit 130' INT

CWD=${VDUSE_VM_CWD:-$REPO}
{
  echo '#!/bin/bash'
  printf 'export PATH=%q\n' "$PATH"
  for v in ${VDUSE_VM_ENV:-}; do [[ -v $v ]] && printf 'export %s=%q\n' "$v" "${!v}"; done
  printf 'export VDUSE_VM_GUEST=1\n'
  printf 'mods=(%s)\n' "$LOAD"
  cat <<'EOF'
if ! modprobe -a "${mods[@]}"; then
  echo "run-in-guest: modprobe ${mods[*]} failed" >&2; dmesg | tail -n 20 >&2; exit 125
fi
if [[ " ${mods[*]} " == *" vduse "* && ! -c /dev/vduse/control ]]; then
  echo "run-in-guest: /dev/vduse/control missing" >&2; dmesg | tail -n 20 >&2; exit 125
fi
EOF
  printf 'cd %q || exit 125\n' "$CWD"
  printf 'exec bash -c %q\n' "$CMD"
} >"$TMP/guest.sh"

args=(--run "$KROOT/boot/vmlinuz-$KVER" --user root --force-9p
      --memory "$MEM" --cpus "$CPUS" --cwd "$CWD")
# virtiofsd from Debian 12 (QEMU 7.2) is too old for vng: --force-9p.
[[ ${VDUSE_VM_KVM:-0} == 1 ]] || args+=(--disable-kvm)
[[ ${VDUSE_VM_VERBOSE:-0} == 1 ]] && args+=(--verbose)
# The kernel/init log also goes to a file through a virtio console (hvc0; ttyS0 is
# vng's and one 8250 driver drives one console only); its tail is shown on failure.
qlog="-chardev file,id=vmlog,path=$TMP/console.log -device virtio-serial-pci,id=vmlogbus"
args+=("--qemu-opts=$qlog -device virtconsole,bus=vmlogbus.0,chardev=vmlog" --append "console=hvc0 loglevel=7")
declare -A seen=()
for d in "$REPO" ${VDUSE_VM_RWDIRS:-}; do
  d=$(cd "$d" && pwd) || die "no such dir: $d"
  [[ $d == / || -n ${seen[$d]:-} ]] && continue
  seen[$d]=1; args+=("--rwdir=$d")
done

# QEMU reopens /proc/self/fd/1 and /2; if both are one regular file the streams
# overwrite each other (each writes at its own offset). Relay through FIFOs.
mkfifo "$TMP/out" "$TMP/err"
cat "$TMP/out" & c1=$!
cat "$TMP/err" >&2 & c2=$!
# COMMAND's stdin is ours, but /dev/null for a terminal (vng would switch it to raw
# mode) or a closed stdin (vng crashes). Passed as fd 5: '&' would give /dev/null.
if [[ -t 0 ]] || ! (exec 6<&0) 2>/dev/null; then exec 5</dev/null; else exec 5<&0; fi
t_boot=$SECONDS
# timeout (not --foreground) signals its whole process group: vng and QEMU.
PATH=$CACHE/venv/bin:$PATH timeout -k 10 "$TIMEOUT" "$VNG" "${args[@]}" -- "bash $TMP/guest.sh" \
  <&5 5<&- >"$TMP/out" 2>"$TMP/err" &
tpid=$!
exec 5<&-
rc=0
while kill -0 "$tpid" 2>/dev/null; do wait "$tpid" || rc=$?; done
# timeout made its own process group (pgid = its pid): make sure QEMU is gone too
for ((i = 0; i < 100; i++)); do kill -0 -- "-$tpid" 2>/dev/null || break; sleep 0.1; done
kill -KILL -- "-$tpid" 2>/dev/null || true
tpid=
wait "$c1" "$c2" 2>/dev/null || true
c1= c2=
case $rc in
  124|137) log "timed out after ${TIMEOUT}s (VDUSE_VM_TIMEOUT)"; rc=124 ;;
  255) log "guest reported no exit status (crash or boot failure?)" ;;
esac
if ((rc == 124 || rc == 255)) && [[ -s $TMP/console.log ]]; then
  log "last lines of the guest console:"; tail -n 40 "$TMP/console.log" >&2
fi
[[ ${VDUSE_VM_VERBOSE:-0} == 1 ]] && log "guest ran $((SECONDS - t_boot))s (boot + command)"
exit "$rc"
