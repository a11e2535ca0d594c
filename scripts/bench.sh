#!/usr/bin/env bash
# Side-by-side load benchmark: direct vs through gateway + agent, in the same run, on loopback.
# Starts nginx (backend), a gateway and an agent, then measures in interleaved rounds:
#   a. HTTP keep-alive req/s, 1 KiB body, 32 connections (wrk)
#   b. latency at concurrency 1, p50 and p99 (wrk --latency)
#   c. 1 GiB download throughput (curl)
#   d. MySQL sysbench oltp_read_only, 8 threads (scripts/bench-mysql.sh)
#   e. gateway RSS with 1,000 idle agents (real SSH sessions, one key each) and one agent's RSS
#   f. bulk throughput over a 50 ms round trip (user-space delay proxy) vs plain TCP over it
#   h. latency at concurrency 1 to an app that writes head and body in two writes with Nagle on
#      (scripts/demo_app.py, Python's http.server), direct vs through the tunnel
#   g. a cluster (scripts/cluster.sh --bench): entering through a node without the agent's tunnel
#      (it forwards over the peer link) vs through the node that holds it, same nginx behind
# and prints one table of medians with ratios to direct. Not a test: a shared 2-core machine is
# noisy; compare ratios, not absolute numbers.
#
#   scripts/bench.sh [ROUNDS=3] [SECONDS=8]      BENCH_SKIP=d,e to leave parts out
set -euo pipefail
rounds=${1:-3}
secs=${2:-8}
skip=",${BENCH_SKIP:-},"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need=()
pkgs=(nginx wrk curl python3)
[[ $skip != *,g,* ]] && pkgs+=(postgresql haproxy openssl)
for pkg in "${pkgs[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# G2C_BENCH_BIN=DIR measures the gateway and agent binaries in DIR instead (e.g. a build of
# another commit, to compare two builds' ratios in runs made one after the other).
cargo build --release --workspace --bins >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release"
tunnel_bin="${G2C_BENCH_BIN:-$bin}"

work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 600); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# --- backend: nginx serving 1 KiB, 256 MiB and 1 GiB files ----------------------------------
# nginx's workers drop to an unprivileged user: they must be able to read the files.
chmod 0755 "$work"
mkdir -p "$work/www" "$work/nginx"
head -c 1024 /dev/urandom >"$work/www/1k"
truncate -s 256M "$work/www/256m"
truncate -s 1G "$work/www/1g"
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

# --- gateway + agent -------------------------------------------------------------------------
cat >"$work/gateway.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[ssh]
listen = "127.0.0.1:0"
[backchannel]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[limits]
port_range_start = 11000
port_range_end = 12999
TOML
G2C_LOG=warn "$tunnel_bin/g2c-gateway" -c "$work/gateway.toml" run --ready-file "$work/ready" 2>"$work/gw.log" &
gw_pid=$!
pids+=($gw_pid)
wait_for "[ -s $work/ready ]"
ready() { python3 -c "import json; print(json.load(open('$work/ready'))['$1'])"; }
bc=$(ready backchannel); http=$(ready http); ssh_port=$(ready ssh | cut -d: -f2)
gw() { "$tunnel_bin/g2c-gateway" -c "$work/gateway.toml" "$@"; }
register() { # config, then services...
  local cfg=$1; shift
  local args=()
  for s in "$@"; do args+=(--service "$s"); done
  G2C_LOG_DIR="$work/logs" "$tunnel_bin/g2c-agent" -c "$cfg" register --backchannel "http://$bc" \
    --token "$(gw token create)" "${args[@]}" >/dev/null
  python3 -c "import tomllib; print(tomllib.load(open('$cfg','rb'))['registration_id'])"
}
connected() { curl -sf -H "Authorization: Bearer $(cat "$work/admin_token" 2>/dev/null)" "http://$(ready admin)/v1/registrations" | python3 -c "import json,sys; print(sum(1 for r in json.load(sys.stdin) if r['connected']))"; }
# An agent `name` serving `service` as "web" (its own config, its GUI on a free port), dialling
# the gateway's SSH port or `ssh_port` if given; sets agent_reg, agent_key and agent_pid.
start_agent() { # name service [ssh_port]
  local name=$1 service=$2 ssh=${3:-}
  agent_reg=$(register "$work/$name.toml" "web=$service")
  [[ -z $ssh ]] || sed -i "s/^ssh_port = .*/ssh_port = $ssh/" "$work/$name.toml"
  printf '\n[local_api]\nlisten = "127.0.0.1:0"\n' >>"$work/$name.toml"
  agent_key=$(gw key create --registration "$agent_reg")
  G2C_LOG=warn G2C_LOG_DIR="$work/logs" "$tunnel_bin/g2c-agent" -c "$work/$name.toml" run 2>"$work/$name.log" &
  agent_pid=$!
  pids+=($agent_pid)
}
start_agent agent "127.0.0.1:$ng_port"
reg=$agent_reg key=$agent_key
tunnel="http://$http/r/$reg"
wait_for "curl -sf -o /dev/null -H 'G2C-Key: $key' $tunnel/1k"
agent_idle_rss=$(rss_kib "$agent_pid")

# wrk_run runs in a subshell (process substitution): failed requests are counted in a file.
wrk_run() { # url [wrk args...] -> prints requests/s; p50 ms; p99 ms
  local url=$1; shift
  local rps p50 p99 bad
  read -r rps p50 p99 bad < <(wrk "$@" -d "${secs}s" -H "G2C-Key: $key" "$url" | scripts/wrk_summary.py)
  echo "$bad" >>"$work/failed"
  echo "$rps $p50 $p99"
}
curl_speed() { # url -> MiB/s
  curl -s -o /dev/null -H "G2C-Key: $key" -w '%{speed_download} %{http_code}\n' "$1" |
    awk '{ if ($2 != 200) { print "download failed: " $2 > "/dev/stderr"; exit 1 } printf "%.1f\n", $1/1048576 }'
}

declare -a d_rps t_rps d_p50 t_p50 d_p99 t_p99 d_gib t_gib d_wan t_wan
for r in $(seq 1 "$rounds"); do
  read -r x _ _ < <(wrk_run "http://127.0.0.1:$ng_port/1k" -t2 -c32); d_rps+=("$x")
  read -r x _ _ < <(wrk_run "$tunnel/1k" -t2 -c32); t_rps+=("$x")
  read -r _ a b < <(wrk_run "http://127.0.0.1:$ng_port/1k" -t1 -c1 --latency); d_p50+=("$a"); d_p99+=("$b")
  read -r _ a b < <(wrk_run "$tunnel/1k" -t1 -c1 --latency); t_p50+=("$a"); t_p99+=("$b")
  d_gib+=("$(curl_speed "http://127.0.0.1:$ng_port/1g")")
  t_gib+=("$(curl_speed "$tunnel/1g")")
  echo "round $r: req/s ${d_rps[-1]} / ${t_rps[-1]}; p50 ${d_p50[-1]} / ${t_p50[-1]} ms; 1 GiB ${d_gib[-1]} / ${t_gib[-1]} MiB/s" >&2
done

# --- f. wide-area link: 25 ms each way ---------------------------------------------------------
if [[ $skip != *,f,* ]]; then
  "$bin/g2c-delay-proxy" --to "127.0.0.1:$ssh_port" --delay-ms 25 --port-file "$work/p_ssh" &
  pids+=($!)
  "$bin/g2c-delay-proxy" --to "127.0.0.1:$ng_port" --delay-ms 25 --port-file "$work/p_web" &
  pids+=($!)
  wait_for "[ -s $work/p_ssh ] && [ -s $work/p_web ]"
  start_agent wan "127.0.0.1:$ng_port" "$(cat "$work/p_ssh")"
  wan_reg=$agent_reg wan_key=$agent_key
  wait_for "curl -sf -o /dev/null -H 'G2C-Key: $wan_key' http://$http/r/$wan_reg/1k"
  for r in $(seq 1 "$rounds"); do
    d_wan+=("$(curl_speed "http://127.0.0.1:$(cat "$work/p_web")/256m")")
    t_wan+=("$(key=$wan_key curl_speed "http://$http/r/$wan_reg/256m")")
    echo "round $r: 50 ms RTT bulk ${d_wan[-1]} / ${t_wan[-1]} MiB/s" >&2
  done
fi

# --- h. an app that writes head and body apart (Nagle on): no delayed-ACK stalls -------------
declare -a d_two t_two
if [[ $skip != *,h,* ]]; then
  python3 scripts/demo_app.py "$work/two.port" 2>"$work/two-app.log" &
  pids+=($!)
  wait_for "[ -s $work/two.port ]"
  two_app="127.0.0.1:$(cat "$work/two.port")"
  start_agent two "$two_app"
  two_reg=$agent_reg two_key=$agent_key
  wait_for "curl -sf -o /dev/null -H 'G2C-Key: $two_key' http://$http/r/$two_reg/"
  for r in $(seq 1 "$rounds"); do
    read -r _ a _ < <(wrk_run "http://$two_app/" -t1 -c1 --latency); d_two+=("$a")
    read -r _ a _ < <(key=$two_key wrk_run "http://$http/r/$two_reg/" -t1 -c1 --latency); t_two+=("$a")
    echo "round $r: two-write app c=1 p50 ${d_two[-1]} / ${t_two[-1]} ms" >&2
  done
fi

# --- e. 1,000 idle agents ----------------------------------------------------------------------
per_agent="skipped"
if [[ $skip != *,e,* ]]; then
  n=1000
  before=$(rss_kib "$gw_pid")
  idle_token=$(gw token create --uses $n --ttl 1h)
  "$bin/g2c-idle-agents" --backchannel "http://$bc" --token "$idle_token" --count $n \
    --dir "$work/idle" >"$work/idle.out" 2>"$work/idle.err" &
  idle_pid=$!
  pids+=($idle_pid)
  wait_for "grep -q '^connected' $work/idle.out || ! kill -0 $idle_pid 2>/dev/null"
  grep -q '^connected' "$work/idle.out" || { cat "$work/idle.err" >&2; exit 1; }
  sleep 3
  echo "gateway sees $(connected) connected agents" >&2
  after=$(rss_kib "$gw_pid")
  per_agent=$(( (after - before) / n ))
  kill -INT "$idle_pid" 2>/dev/null || true
fi

# --- d. MySQL ----------------------------------------------------------------------------------
mysql_table=""
if [[ $skip != *,d,* ]]; then
  mysql_table=$(scripts/bench-mysql.sh "$rounds" "$secs" 2>/dev/null)
fi

# --- g. cluster: through a node without the tunnel vs through its holder -----------------------
cluster_table=""
if [[ $skip != *,g,* ]]; then
  cluster_table=$(CLUSTER_APP="127.0.0.1:$ng_port" CLUSTER_PATH=/1k \
    scripts/cluster.sh --bench "$rounds" "$secs" 2>"$work/cluster.err") ||
    { tail -n 30 "$work/cluster.err" >&2; echo "cluster benchmark failed" >&2; exit 1; }
  grep '^cluster round' "$work/cluster.err" >&2 || true
fi

failures=$(awk '{s += $1} END {print s + 0}' "$work/failed")
python3 - "$failures" "$per_agent" "$agent_idle_rss" "$mysql_table" \
  "${d_rps[*]}" "${t_rps[*]}" "${d_p50[*]}" "${t_p50[*]}" "${d_p99[*]}" "${t_p99[*]}" \
  "${d_gib[*]}" "${t_gib[*]}" "${d_wan[*]:-}" "${t_wan[*]:-}" "${d_two[*]:-}" "${t_two[*]:-}" <<'PY'
import re, statistics as st, sys
failures, per_agent, agent_rss, mysql = sys.argv[1:5]
cols = [[float(x) for x in a.split()] for a in sys.argv[5:]]
d_rps, t_rps, d_p50, t_p50, d_p99, t_p99, d_gib, t_gib, d_wan, t_wan, d_two, t_two = cols
m = lambda v: st.median(v) if v else float("nan")
print("| figure | direct | tunnel | ratio / added | target |")
print("|---|---|---|---|---|")
print(f"| HTTP req/s, 1 KiB, 32 conns | {m(d_rps):,.0f} | {m(t_rps):,.0f} | {m(t_rps)/m(d_rps):.2f} | ≥ 0.50 |")
print(f"| latency c=1 p50 (ms) | {m(d_p50):.3f} | {m(t_p50):.3f} | +{m(t_p50)-m(d_p50):.3f} ms | ≤ +0.15 ms |")
print(f"| latency c=1 p99 (ms) | {m(d_p99):.3f} | {m(t_p99):.3f} | +{m(t_p99)-m(d_p99):.3f} ms | |")
print(f"| 1 GiB download (MiB/s) | {m(d_gib):.0f} | {m(t_gib):.0f} | {m(t_gib)/m(d_gib):.2f} | ≥ 0.35 |")
legs = dict(re.findall(r"^\| (direct|tunnel|relay2) \| (\d+) \|", mysql, re.M))
if len(legs) == 3:
    d, t, r = (int(legs[k]) for k in ("direct", "tunnel", "relay2"))
    print(f"| MySQL sysbench QPS, 8 threads | {d:,} | {t:,} | {t/d:.2f} | ≥ 0.75 |")
    print(f"| ↳ two bare relays, the floor of any two-hop tunnel | {d:,} | {r:,} | {r/d:.2f} | |")
else:
    print("| MySQL sysbench QPS, 8 threads | skipped | | | ≥ 0.75 |")
print(f"| gateway RSS per idle agent (1,000 agents) | | {per_agent} KiB | | ≤ 100 KiB |")
print(f"| one agent's idle RSS | | {int(agent_rss)/1024:.1f} MiB | | |")
if d_wan:
    print(f"| 50 ms RTT bulk, 256 MiB (MiB/s) | {m(d_wan):.1f} (plain TCP) | {m(t_wan):.1f} | {m(t_wan)/m(d_wan):.2f} | ≥ 0.80 |")
if d_two:
    print(f"| two-write app (Nagle on), c=1 p50 (ms) | {m(d_two):.3f} | {m(t_two):.3f} | {m(t_two)-m(d_two):+.3f} ms | no 40 ms stall |")
print(f"\nfailed requests during load runs: {failures}")
PY
[[ -z $cluster_table ]] || printf '\n%s\n' "$cluster_table"
