# shellcheck shell=bash
# shellcheck disable=SC2015,SC2004 # C && ok || notok: ok never fails; D*[$n]: assoc arrays
# guest-suite.d/16-metrics.sh - section "metrics" of scripts/guest-suite.sh,
# sourced in the guest (globals and helpers: see the driver's header).
# run_metrics: (vduse-blk only; issue 15 items 3 and 6, issue 16 item 3) a
# device with --metrics serves Prometheus text that `promtool check metrics`
# accepts (a strict parser when promtool is missing); after a short fio the
# read/write counters match what fio issued and each queue's service-time
# histogram counts every completed request; hostile HTTP leaves the daemon
# serving; a backing store that runs out of space (a small tmpfs) shows up
# as error counters and as rate-limited daemon log lines naming the errno.

METRICS_PARSE_PY='
import re, sys
name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label = name.replace(":", "") + r"=\"(?:[^\"\\\n]|\\[\\\"n])*\""
sample = re.compile(r"^(" + name + r")(\{" + label + r"(?:," + label + r")*\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)( -?[0-9]+)?$")
bad = 0
for line in sys.stdin.read().split("\n")[:-1]:
    if line.startswith("# HELP ") or line.startswith("# TYPE "): continue
    if not sample.match(line): print("malformed: %r" % line); bad += 1
sys.exit(1 if bad else 0)
'

# metrics_sum TEXT NAME [LABEL_REGEX]: the sum of NAME samples whose labels match.
metrics_sum() {
  awk -v n="$2" -v re="${3:-.}" '
    { split($1, a, "{"); if (a[1] != n) next; if ($1 !~ re) next; s += $2 }
    END { printf "%.0f\n", s }' <<<"$1"
}

# metrics_check LABEL TEXT: promtool check metrics (or the strict parser).
metrics_check() {
  local label=$1 text=$2 out
  if command -v promtool >/dev/null; then
    if out=$(promtool check metrics <<<"$text" 2>&1) && [[ -z $out ]]; then ok "$label: promtool check metrics is clean"
    else notok "$label: promtool check metrics is clean" "$out"; fi
  else
    if out=$(python3 -c "$METRICS_PARSE_PY" <<<"$text" 2>&1); then ok "$label: every line parses (no promtool here)"
    else notok "$label: every line parses" "$out"; fi
  fi
}

# metrics_idle DEV URL: scrapes URL while DEV is idle: the kernel's counters
# (/sys/block/DEV/stat: reads, read sectors, writes, written sectors) read
# before and after the scrape agree. Sets MET_TEXT and MET_STAT; status 1 if
# the scrape failed or DEV never held still (5 tries).
metrics_idle() {
  local dev=$1 url=$2 a b i
  for ((i = 0; i < 5; i++)); do
    a=$(awk '{print $1, $3, $5, $7}' "/sys/block/$dev/stat")
    MET_TEXT=$(curl -sf --max-time 10 "$url") || return 1
    b=$(awk '{print $1, $3, $5, $7}' "/sys/block/$dev/stat")
    MET_STAT=$b
    [[ $a == "$b" ]] && return 0
    sleep 1
  done
  return 1
}

run_metrics() {
  section "metrics: Prometheus exporter, counters against fio, backing-store failures"
  if [[ $PEER != vduse-blk ]]; then skip "metrics" "a vduse-blk feature"; return; fi
  local n=e2emet img=$W/met.img dev url port=19464 out m0 m1 rc
  url=http://127.0.0.1:$port/metrics
  out=$("$BIN" create x --backend file:/nonexistent --metrics localhost:1 2>&1); rc=$?
  [[ $rc == 64 && $out == *--metrics* ]] && ok "metrics: a host name is a usage error naming --metrics" \
    || notok "metrics: a host name is a usage error naming --metrics" "exit $rc: $out"
  if ! dev_start "$n" "$img" --size 64M --serial E2E-MET --queues 2 --metrics "127.0.0.1:$port"; then
    notok "metrics: device appears" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  dev=${DDEV[$n]}
  udevadm settle 2>/dev/null; sleep 1
  local k0 k1
  if ! metrics_idle "$dev" "$url"; then
    notok "metrics: curl scrapes $url" "$(logtail $n)"; dev_stop "$n" 5; return
  fi
  m0=$MET_TEXT k0=$MET_STAT
  ok "metrics: curl scrapes $url ($(wc -l <<<"$m0") lines)"
  metrics_check "metrics (idle)" "$m0"
  [[ $(metrics_sum "$m0" vduse_blk_up "device=\"$n\"") == 1 ]] && ok "metrics: vduse_blk_up is 1 while served" \
    || notok "metrics: vduse_blk_up is 1 while served" "$(grep vduse_blk_up <<<"$m0")"
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/nope") == 404 ]] \
    && ok "metrics: other paths get 404" || notok "metrics: other paths get 404"

  # fio: 4 KiB random writes, then reads, 2 jobs x QD8, a fixed number of I/Os each.
  local ios=1500 fw fr jw jr
  FIO_DIR=$W fio_dev "$dev" --name=mw --rw=randwrite --bs=4k --size=32M --number_ios=$ios --ioengine=libaio \
      --iodepth=8 --numjobs=2 --group_reporting --norandommap --randrepeat=0 \
      --output-format=terse --terse-version=3 >"$W/met-w.fio" 2>"$W/met.fio.err" \
    && FIO_DIR=$W fio_dev "$dev" --name=mr --rw=randread --bs=4k --size=32M --number_ios=$ios --ioengine=libaio \
      --iodepth=8 --numjobs=2 --group_reporting --norandommap --randrepeat=0 \
      --output-format=terse --terse-version=3 >"$W/met-r.fio" 2>>"$W/met.fio.err"
  rc=$?
  jw=$(fio_terse write_kib <"$W/met-w.fio"); jr=$(fio_terse read_kib <"$W/met-r.fio")
  # fio's close makes udev re-probe the disk (blkid reads): let that finish first.
  udevadm settle 2>/dev/null; sleep 1
  metrics_idle "$dev" "$url"
  m1=$MET_TEXT k1=$MET_STAT
  metrics_check "metrics (after fio)" "$m1"
  if ((rc != 0)) || [[ -z $jw || -z $jr ]]; then
    notok "metrics: fio ran" "exit $rc" "$(tail -n 5 "$W/met.fio.err")"
  else
    fw=$(( ($(metrics_sum "$m1" vduse_blk_written_bytes_total "device=\"$n\"") - $(metrics_sum "$m0" vduse_blk_written_bytes_total "device=\"$n\"")) / 1024 ))
    fr=$(( ($(metrics_sum "$m1" vduse_blk_read_bytes_total "device=\"$n\"") - $(metrics_sum "$m0" vduse_blk_read_bytes_total "device=\"$n\"")) / 1024 ))
    local ww rr
    ww=$(( $(metrics_sum "$m1" vduse_blk_requests_total "type=\"write\"") - $(metrics_sum "$m0" vduse_blk_requests_total "type=\"write\"") ))
    rr=$(( $(metrics_sum "$m1" vduse_blk_requests_total "type=\"read\"") - $(metrics_sum "$m0" vduse_blk_requests_total "type=\"read\"") ))
    # The guest kernel's own counters for the disk (/sys/block/vdX/stat: reads, read
    # sectors, writes, written sectors) saw exactly the requests the device served.
    local kr kw ks_r ks_w
    read -r kr ks_r kw ks_w <<<"$(paste <(tr ' ' '\n' <<<"$k1") <(tr ' ' '\n' <<<"$k0") | awk '{printf "%d ", $1 - $2}')"
    [[ $rr == "$kr" && $ww == "$kw" && $fr == $((ks_r / 2)) && $fw == $((ks_w / 2)) ]] \
      && ok "metrics: counters equal the guest kernel's for the disk (read $rr req/$fr KiB, write $ww req/$fw KiB)" \
      || notok "metrics: counters equal the guest kernel's for the disk" "exporter: read $rr req/$fr KiB, write $ww req/$fw KiB" \
                 "kernel: read $kr req/$((ks_r / 2)) KiB, write $kw req/$((ks_w / 2)) KiB"
    # Direct I/O: written bytes are fio's exactly. Reads also carry udev's probing
    # after fio's close (blkid): at least fio's, at most 8 MiB more.
    [[ $fw == "$jw" ]] && ok "metrics: written bytes = fio's (${fw} KiB)" \
      || notok "metrics: written bytes = fio's" "exporter ${fw} KiB, fio ${jw} KiB"
    ((fr >= jr && fr <= jr + 8192)) && ok "metrics: read bytes cover fio's (${fr} KiB, fio ${jr} KiB)" \
      || notok "metrics: read bytes cover fio's" "exporter ${fr} KiB, fio ${jr} KiB"
    ((ww <= 2 * ios && ww >= ios && rr >= ios && rr <= 2 * ios + 512)) \
      && ok "metrics: request counters match fio's I/Os (write $ww, read $rr; fio issued $((2 * ios)) each)" \
      || notok "metrics: request counters match fio's I/Os" "write $ww, read $rr; fio issued $((2 * ios)) each"
  fi
  local q cnt tot fails=()
  for q in 0 1; do
    cnt=$(metrics_sum "$m1" vduse_blk_service_time_seconds_count "queue=\"$q\"")
    tot=$(metrics_sum "$m1" vduse_blk_requests_total "device=\"$n\",queue=\"$q\"")
    [[ $cnt == "$tot" && $cnt -gt 0 ]] || fails+=("queue $q: histogram count $cnt, requests $tot")
  done
  ((${#fails[@]} == 0)) && ok "metrics: each queue's service-time histogram counts every completed request" \
    || notok "metrics: histogram count = completed requests" "${fails[@]}"
  [[ $(metrics_sum "$m1" vduse_blk_in_flight_requests "device=\"$n\"") == 0 ]] && ok "metrics: nothing in flight when idle" \
    || notok "metrics: nothing in flight when idle" "$(grep in_flight <<<"$m1")"
  # Device-side service time next to fio's completion latency (issue 16 item 3).
  local svc clat
  svc=$(awk '/^vduse_blk_service_time_seconds_(sum|count)/ { if ($1 ~ /_sum/) s += $2; else c += $2 } END { if (c) printf "%.1f", s / c * 1e6 }' <<<"$m1")
  clat=$(awk -F';' '/^3;/ { print $16 }' "$W/met-r.fio")
  note "metrics: mean device-side service time ${svc} us (all requests); fio randread mean completion latency ${clat} us"

  # Hostile HTTP: garbage, a huge head, a client that never finishes; the device keeps serving.
  out=$(timeout 30 python3 - "$port" <<'PY' 2>&1
import socket, sys, time
port = int(sys.argv[1])
def talk(raw, wait=6):
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try: s.sendall(raw)
    except OSError: pass
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            data += d
    except OSError: pass
    s.close()
    return data.split(b"\r\n")[0]
print(talk(b"\xff\x00garbage\r\n\r\n"), talk(b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 100000 + b"\r\n\r\n"))
slow = socket.create_connection(("127.0.0.1", port)); slow.sendall(b"GET /met"); t = time.time()
try: closed = slow.recv(10) == b""
except OSError: closed = True
print("slow client closed after %.1f s" % (time.time() - t) if closed else "slow client not closed")
PY
)
  if [[ $out == *"400 Bad Request"*"431"*"closed after"* ]] && curl -sf --max-time 10 "$url" >/dev/null && dev_running "$n"; then
    ok "metrics: hostile HTTP clients get errors or time out; the exporter still answers ($(tail -n 1 <<<"$out"))"
  else notok "metrics: hostile HTTP clients get errors or time out" "$out" "$(logtail $n)"; fi
  dev_stop "$n" 10 && ok "metrics: the daemon stops cleanly" || notok "metrics: the daemon stops cleanly" "exit $STOP_RC" "$(logtail $n)"
  curl -sf --max-time 3 "$url" >/dev/null && notok "metrics: the exporter is gone with the daemon" || ok "metrics: the exporter is gone with the daemon"

  section "metrics: a backing store out of space (ENOSPC) is counted and logged"
  local fs=$W/fullfs n2=e2enospc lines t0
  mkdir -p "$fs" && mount -t tmpfs -o size=4M tmpfs "$fs" || { notok "metrics: tmpfs for ENOSPC" "mount failed"; return; }
  if ! dev_start "$n2" "$fs/img" --size 64M --serial E2E-NOSPC --queues 1 --metrics "127.0.0.1:$port"; then
    notok "metrics: ENOSPC device appears" "$(logtail $n2)"; dev_stop "$n2" 5; umount "$fs"; return
  fi
  t0=$SECONDS
  out=$(dd if=/dev/urandom of="/dev/${DDEV[$n2]}" bs=1M count=16 oflag=direct 2>&1); rc=$?
  sleep 2.5     # the failure reporter runs once a second
  m1=$(curl -sf --max-time 10 "$url")
  local errs
  errs=$(metrics_sum "$m1" vduse_blk_request_errors_total "type=\"write\"")
  ((rc != 0 && errs > 0)) && [[ $(metrics_sum "$m1" vduse_blk_last_error_errno) == 28 ]] \
    && ok "metrics: the guest sees the I/O error; write errors counted ($errs), last errno 28 (ENOSPC)" \
    || notok "metrics: ENOSPC counted" "dd exit $rc: $(tail -n 1 <<<"$out")" "errors $errs" "$(grep -E 'errors_total|errno' <<<"$m1")"
  lines=$(grep -c 'failed by the backing store' "${DLOG[$n2]}")
  if ((lines >= 1 && lines <= SECONDS - t0 + 2)) && grep -q 'queue 0: .*write .*No space left on device (errno 28)' "${DLOG[$n2]}"; then
    ok "metrics: the daemon logs the failures, rate-limited ($lines line(s) in $((SECONDS - t0)) s): $(grep -m1 'failed by the backing store' "${DLOG[$n2]}" | cut -c1-160)"
  else notok "metrics: the daemon logs the failures, rate-limited" "$lines lines in $((SECONDS - t0)) s" "$(logtail $n2)"; fi
  dev_stop "$n2" 10
  umount "$fs"
}
