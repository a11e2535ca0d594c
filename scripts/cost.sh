#!/usr/bin/env bash
# Instructions per HTTP request in the gateway and in the agent, counted by valgrind's callgrind:
# repeatable whatever else this shared machine does. Runs the real gateway and agent under
# callgrind twice, behind them nginx serving 1 KiB, once with N1 and once with N2 keep-alive GETs
# (one curl connection), and divides the difference of each process's total by N2 - N1, so
# start-up, the SSH handshake and shutdown cancel out. Prints the figures and writes the top of
# each process's profile (self cost per function) and its callgrind file to target/cost/.
#
#   scripts/cost.sh [N1=500] [N2=2500]      G2C_BENCH_BIN=DIR counts the binaries in DIR instead
set -euo pipefail
n1=${1:-500}
n2=${2:-2500}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
need=()
for pkg in nginx curl python3 valgrind; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --workspace --bins >&2
bin="${G2C_BENCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release}"
out_dir="${CARGO_TARGET_DIR:-$root/target}/cost"
mkdir -p "$out_dir"

work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-cost.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 1200); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }

# --- nginx serving 1 KiB (not counted) ---------------------------------------------------------
chmod 0755 "$work"
mkdir -p "$work/www" "$work/nginx"
head -c 1024 /dev/urandom >"$work/www/1k"
ng_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
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

# curl config for `n` GETs on one keep-alive connection.
requests() { # n url key
  {
    echo "header = \"G2C-Key: $3\""
    echo "silent"
    for _ in $(seq 1 "$1"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$2"; done
  } >"$work/curl-$1.cfg"
  curl -K "$work/curl-$1.cfg" --fail
}

# Total instructions in a callgrind output file.
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# One run: gateway and agent under callgrind, `n` requests after the same warm-up.
run() { # n → sets gw_ir, agent_ir
  local n=$1 d="$work/run-$1"
  mkdir -p "$d"
  cat >"$d/gateway.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[ssh]
listen = "127.0.0.1:0"
[backchannel]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "$d/store.db"
TOML
  G2C_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$d/gateway.out" \
    "$bin/g2c-gateway" -c "$d/gateway.toml" run --ready-file "$d/ready" 2>"$d/gw.log" &
  local gw_pid=$!
  pids+=($gw_pid)
  wait_for "[ -s $d/ready ]"
  ready() { python3 -c "import json; print(json.load(open('$d/ready'))['$1'])"; }
  local bc http
  bc=$(ready backchannel) http=$(ready http)
  gw() { "$bin/g2c-gateway" -c "$d/gateway.toml" "$@"; }
  G2C_LOG_DIR="$d/logs" "$bin/g2c-agent" -c "$d/agent.toml" register --backchannel "http://$bc" \
    --token "$(gw token create)" --service "web=127.0.0.1:$ng_port" >/dev/null
  printf '\n[local_api]\nlisten = "127.0.0.1:0"\n' >>"$d/agent.toml"
  local reg key
  reg=$(python3 -c "import tomllib; print(tomllib.load(open('$d/agent.toml','rb'))['registration_id'])")
  key=$(gw key create --registration "$reg")
  G2C_LOG=warn G2C_LOG_DIR="$d/logs" valgrind --tool=callgrind --callgrind-out-file="$d/agent.out" \
    "$bin/g2c-agent" -c "$d/agent.toml" run 2>"$d/agent.log" &
  local agent_pid=$!
  pids+=($agent_pid)
  local url="http://$http/r/$reg/1k"
  wait_for "curl -sf -o /dev/null -H 'G2C-Key: $key' $url"
  requests 50 "$url" "$key"
  requests "$n" "$url" "$key"
  kill -TERM "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  kill -TERM "$gw_pid"
  wait "$gw_pid" 2>/dev/null || true
  gw_ir=$(total "$d/gateway.out")
  agent_ir=$(total "$d/agent.out")
  last_run=$d
}

run "$n1"
gw1=$gw_ir agent1=$agent_ir
run "$n2"
gw2=$gw_ir agent2=$agent_ir
for p in gateway agent; do
  cp "$last_run/$p.out" "$out_dir/$p.callgrind"
  callgrind_annotate --inclusive=no "$out_dir/$p.callgrind" 2>/dev/null | head -60 >"$out_dir/$p-profile.txt" || true
done
python3 - "$n1" "$n2" "$gw1" "$gw2" "$agent1" "$agent2" <<'PY'
import sys
n1, n2, g1, g2, a1, a2 = map(int, sys.argv[1:])
g = (g2 - g1) / (n2 - n1)
a = (a2 - a1) / (n2 - n1)
print(f"instructions per request ({n2 - n1} requests of difference, 1 KiB keep-alive GETs):")
print(f"  gateway  {g:10,.0f}")
print(f"  agent    {a:10,.0f}")
print(f"  total    {g + a:10,.0f}")
PY
echo "profiles (self cost per function): $out_dir/{gateway,agent}-profile.txt; raw: $out_dir/*.callgrind"
