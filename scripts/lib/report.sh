# shellcheck shell=bash
# lib/report.sh - TAP-like reporting for the test scripts (sourced): one line
# per check, "ok - NAME", "not ok - NAME" followed by "#   " detail lines, or
# "skip - NAME # WHY"; counters in REPORT_PASS, REPORT_FAILED, REPORT_SKIPPED
# (the guest suite writes them to its counts file); a final "N passed, M failed"
# line from summary, whose status is 0 only if nothing failed.
#
#   ok NAME                   notok NAME [DETAIL...]   skip NAME WHY
#   note TEXT...              "# TEXT"
#   check NAME CMD...         ok if CMD succeeds; its output only shown when it fails
#   section TITLE...          "# [S s] == TITLE" (S: seconds since this file was sourced)
#   summary [TEXT]            "# K skipped[; TEXT]", then "N passed, M failed"
# ok, notok and skip always return 0, so `COND && ok X || notok X` is an if/else.

REPORT_PASS=0 REPORT_FAILED=0 REPORT_SKIPPED=0
REPORT_T0=$SECONDS

ok()    { echo "ok - $1"; ((++REPORT_PASS)); return 0; }
notok() {
  echo "not ok - $1"; ((++REPORT_FAILED)); shift
  local l
  for l in "$@"; do [[ -n $l ]] && printf '%s\n' "$l" | sed 's/^/#   /'; done
  return 0
}
skip()  { echo "skip - $1 # $2"; ((++REPORT_SKIPPED)); return 0; }
note()  { echo "# $*"; }
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "command: $*" "$out"; fi
}
section() { note "[$((SECONDS - REPORT_T0)) s] == $*"; }

summary() {
  note "$REPORT_SKIPPED skipped${1:+; $1}"
  echo "$REPORT_PASS passed, $REPORT_FAILED failed"
  ((REPORT_FAILED == 0))
}
