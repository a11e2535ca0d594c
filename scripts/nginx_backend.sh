# Sourced by the benchmarks and the instruction counters: nginx on a free loopback port serving
# a 1 KiB file and, for each SIZE given, a sparse file of that size named in lower case
# (`256M` -> /256m), from $work/www. Needs `work`, `pids`, `free_port` and `wait_for` from the
# caller; sets `ng_port`.
#
#   nginx_start [SIZE...]
nginx_start() {
  # nginx's workers drop to an unprivileged user: they must be able to read the files.
  chmod 0755 "$work"
  mkdir -p "$work/www" "$work/nginx"
  head -c 1024 /dev/urandom >"$work/www/1k"
  local size
  for size in "$@"; do truncate -s "$size" "$work/www/${size,,}"; done
  ng_port=$(free_port)
  cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$ng_port; root $work/www; }
}
CONF
  nginx -c "$work/nginx.conf" -p "$work/nginx" &
  pids+=($!)
  wait_for "curl -sf -o /dev/null http://127.0.0.1:$ng_port/1k"
}
