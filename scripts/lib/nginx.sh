# shellcheck shell=bash
# lib/nginx.sh - a private nginx (Debian nginx-light) serving one directory on
# 127.0.0.1, everything it writes kept under a work directory (sourced; by the
# guest suite's remote section and bench-remote.sh).
#
# nginx_start ROOT PORT WORKDIR: starts it in the background (NGINX_PID), waits
# until it answers; returns 1 if it does not within 10 s. nginx_stop stops it.
# Optional: NGINX_HTTP_EXTRA is inserted into the http block as is (e.g.
# "limit_rate 32m;", a log_format), NGINX_ACCESS_LOG replaces "off" (e.g.
# "PATH FORMAT"); bench-model-load.sh uses both.
nginx_start() {
  local root=$1 port=$2 work=$3 i
  ip link set lo up 2>/dev/null
  mkdir -p "$work/logs" "$work/tmp"
  cat >"$work/nginx.conf" <<CONF
daemon off; master_process off; user root; worker_processes 1; pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 256; }
http {
  ${NGINX_HTTP_EXTRA:-}
  access_log ${NGINX_ACCESS_LOG:-off}; sendfile on; tcp_nopush on; keepalive_requests 100000; etag on;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$port; root $root; }
}
CONF
  nginx -p "$work" -c "$work/nginx.conf" >"$work/logs/stdout.log" 2>&1 &
  NGINX_PID=$!
  for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null -r 0-0 "http://127.0.0.1:$port/" 2>/dev/null; [[ $? != 7 ]] && return 0
    kill -0 "$NGINX_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

nginx_stop() {
  [[ -n ${NGINX_PID:-} ]] && { kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; }
  NGINX_PID=
}
