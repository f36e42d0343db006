# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/15-control.sh - section "control" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_control: (vduse-blk only) the control socket under hostile clients while
# fio verifies the disk; `destroy` of a running device: refused while mounted,
# otherwise it stops the daemon the clean way and waits for it.

CONTROL_HOSTILE_PY='
import json, socket, sys, time
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5); s.connect(path); return s
def ask(s, raw):
    try: s.sendall(raw)
    except OSError: pass   # the server may close first (a line over the limit): its reply is still there
    buf = b""
    try:
        while b"\n" not in buf:
            d = s.recv(65536)
            if not d: break
            buf += d
    except OSError as e:
        return {"client_error": str(e)}
    return json.loads(buf.split(b"\n")[0]) if b"\n" in buf else None
fails = []
def step(name): print("step: " + name, file=sys.stderr, flush=True)
step("malformed")
s = conn()
for raw, code in [(b"garbage\n", "bad_json"), (b"[1,2]\n", "bad_request"), (b"{\"cmd\":\"rm -rf\"}\n", "unknown_command"),
                  (b"{\"cmd\":\"resize\",\"size\":true}\n", "bad_request"), (b"{\"cmd\":\"resize\",\"size\":-5}\n", "bad_request"),
                  (b"\xff\xfe\x00\n", "bad_json")]:
    r = ask(s, raw)
    if not r or r.get("ok") is not False or r.get("error") != code: fails.append("%r -> %r" % (raw, r))
s.close()
step("huge line")
r = ask(conn(), b"x" * (1 << 20))
if not r or r.get("error") != "line_too_long": fails.append("huge line -> %r" % (r,))
step("40 connections")
many = []
for i in range(40):
    try: many.append(conn())
    except OSError: break
busy = 0
for c in many:
    try:
        c.settimeout(0.2); d = c.recv(4096)
        if b"busy" in d: busy += 1
    except OSError: pass
if busy == 0: fails.append("40 connections: none turned away as busy")
for c in many: c.close()
step("a client that never reads")
hog = conn(); hog.setblocking(False); t = time.time(); dropped = False
while time.time() - t < 60 and not dropped:
    try: hog.send(b"{\"cmd\":\"stats\"}\n" * 256)
    except BlockingIOError: time.sleep(0.01)
    except OSError: dropped = True
if not dropped: fails.append("a client that never reads was not dropped within 60 s")
hog.close()
step("info after the abuse")
time.sleep(0.5)
r = ask(conn(), b"{\"cmd\":\"info\"}\n")
if not r or r.get("ok") is not True: fails.append("info after the abuse -> %r" % (r,))
print("; ".join(fails) if fails else "all answered as documented", flush=True)
sys.exit(1 if fails else 0)
'

run_control() {
  section "control: hostile control-socket clients while fio verifies"
  if [[ $PEER != vduse-blk ]]; then skip "control socket" "a vduse-blk feature"; return; fi
  local n=e2ectl img=$W/ctl.img dev out rc sock mode fpid mnt=$W/cmnt
  if ! dev_start "$n" "$img" --size 64M --serial E2E-CTL --queues 2; then
    notok "control: device appears" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  sock=${VDUSE_BLK_RUN_DIR:-/run/vduse-blk}/$n.sock
  mode=$(stat -c '%a %F %U' "$sock" 2>&1)
  [[ $mode == "600 socket root" ]] && ok "control: $sock is a root-only socket" || notok "control: $sock is a root-only socket" "$mode"
  out=$("$BIN" list --json 2>&1)
  [[ $out == *'"name":"'$n'"'* && $out == *'"daemon":true'* ]] && ok "control: list --json shows the running daemon" \
    || notok "control: list --json shows the running daemon" "$out"
  out=$("$BIN" stats "$n" 2>&1) && [[ $out == *capacity_bytes* ]] && ok "control: stats over the socket" \
    || notok "control: stats over the socket" "$out"
  (FIO_DIR=$W fio_dev "$dev" --name=ctlv --size=32M --bs=4k --rw=randwrite --ioengine=libaio --iodepth=16 \
      --verify=crc32c --verify_fatal=1 --do_verify=1 --loops=4 --verify_state_save=0 \
      --output-format=terse --terse-version=3) >"$W/ctl.fio" 2>"$W/ctl.fio.err" &
  fpid=$!
  if out=$(timeout 150 python3 -c "$CONTROL_HOSTILE_PY" "$sock" 2>"$W/hostile.err"); then ok "control: hostile clients get errors or are dropped ($out)"
  else notok "control: hostile clients get errors or are dropped" "exit status $? (124: timed out): $out" "$(cat "$W/hostile.err")" "$(logtail $n)"; fi
  wait "$fpid"; rc=$?
  if ((rc == 0)) && awk -F';' '/^3;/ {n++; if ($5 != 0 || $6 == 0) bad=1} END {exit !(n > 0 && !bad)}' "$W/ctl.fio"; then
    ok "control: fio verify undisturbed by the hostile clients"
  else notok "control: fio verify undisturbed" "fio exit $rc" "$(tail -n 15 "$W/ctl.fio.err")" "$(logtail $n)"; fi
  dev_running "$n" && ok "control: the daemon still runs" || notok "control: the daemon still runs" "$(logtail $n)"

  section "control: destroy of a running device"
  mkdir -p "$mnt"
  if mkfs.ext4 -q -F "/dev/$dev" >/dev/null 2>&1 && mount "/dev/$dev" "$mnt" && echo keep >"$mnt/f" && sync; then
    out=$(timeout 30 "$BIN" destroy "$n" 2>&1); rc=$?
    if [[ $rc == 1 && $out == *"mounted at $mnt"* && $(wc -l <<<"$out") == 1 ]] && dev_running "$n" \
       && [[ -e /sys/bus/vdpa/devices/$n ]] && [[ $(cat "$mnt/f") == keep ]] && echo more >>"$mnt/f" && sync; then
      ok "control: destroy refuses a mounted disk and touches nothing ($out)"
    else notok "control: destroy refuses a mounted disk and touches nothing" "exit $rc: $out" "$(logtail $n)"; fi
    umount "$mnt"
  else notok "control: mkfs + mount" "$(dmesgtail)"; fi
  local pid=${DPID[$n]} t0=$SECONDS
  out=$(timeout 60 "$BIN" destroy "$n" 2>&1); rc=$?
  # (the daemon is this shell's child: a zombie until waited for, which kill -0 still finds)
  if [[ $rc == 0 && ( ! -e /proc/$pid || $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ) ]] && [[ ! -e /dev/vduse/$n && ! -e /sys/bus/vdpa/devices/$n && ! -e $sock ]]; then
    ok "control: destroy stops the daemon and waits for it ($((SECONDS - t0)) s)"
  else notok "control: destroy stops the daemon and waits for it" "exit $rc: $out" "$(logtail $n)" "$(ls /dev/vduse)"; fi
  wait "$pid"; rc=$?
  [[ $rc == 0 ]] && ok "control: the daemon exited 0 (the SIGTERM path)" || notok "control: the daemon exited 0" "exit $rc" "$(logtail $n)"
  DPID[$n]=
  out=$("$BIN" stats "$n" 2>&1); rc=$?
  [[ $rc == 1 && $(wc -l <<<"$out") == 1 ]] && ok "control: stats of a stopped device: one line, exit 1" \
    || notok "control: stats of a stopped device: one line, exit 1" "exit $rc: $out"
}
