#!/usr/bin/env bash
# Side-by-side load benchmark: direct vs through gateway + agent, in the same run, on loopback.
# Starts nginx (backend), a gateway and an agent, and the peer tunnels of scripts/peers.sh
# (rathole plain and Noise, ssh -R, bore) in front of the same nginx, then measures every leg in
# turn within each of the interleaved rounds:
#   a. HTTP keep-alive req/s, 1 KiB body, 32 connections (wrk), and its p99
#   b. latency at concurrency 1, p50 and p99 (wrk --latency)
#   c. 1 GiB download throughput (curl)
#   d. MySQL sysbench oltp_read_only, 8 threads (scripts/bench-mysql.sh, the peers too)
#   e. gateway RSS with 1,000 idle agents (real SSH sessions, one key each) and one agent's RSS
#   f. bulk throughput over a 50 ms round trip (user-space delay proxy) vs plain TCP over it
#   h. latency at concurrency 1 to an app that writes head and body in two writes with Nagle on
#      (scripts/demo_app.py, Python's http.server), direct vs through the tunnel
#   g. a cluster (scripts/cluster.sh --bench): entering through a node without the agent's tunnel
#      (it forwards over the peer link) vs through the node that holds it, same nginx behind
# and the RSS of each tunnel's processes after a-c; prints a table of medians with ratios to
# direct and one of every peer side by side (scripts/bench_table.py). Not a test: a shared
# 2-core machine is noisy; compare ratios, not absolute numbers.
#
#   scripts/bench.sh [ROUNDS=3] [SECONDS=8]      BENCH_SKIP=d,e to leave parts out (p: the peers)
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
# The helpers (delay proxy, idle agents, plain relay) from the release build; the gateway and
# agent measured are the ones we ship (scripts/dist.sh: LTO, hot code laid out together), or
# with G2C_BENCH_BIN=DIR the binaries in DIR (e.g. a build of another commit, to compare two
# builds' ratios in runs made one after the other).
cargo build --release --workspace --bins >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release"
tunnel_bin="${G2C_BENCH_BIN:-$(scripts/dist.sh)}"

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
# Where a process's RSS is: its own memory, and pages of its binary and libraries (shared with
# the page cache and any other process running the same files).
rss_split() {
  awk '/RssAnon/ {a=$2} /RssFile/ {f=$2} END {printf "%.1f MiB anonymous + %.1f MiB file-backed", a/1024, f/1024}' "/proc/$1/status"
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# --- backend: nginx serving 1 KiB, 256 MiB and 1 GiB files ----------------------------------
source "$root/scripts/nginx_backend.sh"
nginx_start 256M 1G

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
memory_split="idle agent: $(rss_split "$agent_pid")"

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

# --- peers: the same nginx behind rathole (plain, Noise), ssh -R and bore -------------------
legs=(direct tunnel)
declare -A base=([direct]="http://127.0.0.1:$ng_port" [tunnel]="$tunnel")
if [[ $skip != *,p,* ]]; then
  source "$root/scripts/peers.sh"
  peers_install
  for p in "${peer_names[@]}"; do
    if peer_up "$p" "127.0.0.1:$ng_port"; then
      legs+=("$p"); base[$p]="http://127.0.0.1:$peer_port"
      wait_for "curl -sf -o /dev/null ${base[$p]}/1k"
    fi
  done
fi

# --- a-c. every leg in turn within each round; results are "leg figure value" lines ----------
record() { echo "$1 $2 $3" >>"$work/results"; }
for r in $(seq 1 "$rounds"); do
  line="round $r:"
  for leg in "${legs[@]}"; do
    read -r x _ c < <(wrk_run "${base[$leg]}/1k" -t2 -c32 --latency); record "$leg" rps "$x"; record "$leg" p99_32 "$c"
    read -r _ a b < <(wrk_run "${base[$leg]}/1k" -t1 -c1 --latency); record "$leg" p50 "$a"; record "$leg" p99 "$b"
    g=$(curl_speed "${base[$leg]}/1g"); record "$leg" gib "$g"
    line+=" $leg $x req/s p50 $a ms $g MiB/s;"
  done
  echo "$line" >&2
done
record tunnel rss $(( $(rss_kib "$gw_pid") + $(rss_kib "$agent_pid") ))
for leg in "${legs[@]:2}"; do record "$leg" rss "$(peer_rss_kib "$leg")"; done
agent_run_rss=$(rss_kib "$agent_pid")
memory_split+="; gateway after the runs: $(rss_split "$gw_pid"); agent after the runs: $(rss_split "$agent_pid")"

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
    a=$(curl_speed "http://127.0.0.1:$(cat "$work/p_web")/256m"); record direct wan "$a"
    b=$(key=$wan_key curl_speed "http://$http/r/$wan_reg/256m"); record tunnel wan "$b"
    echo "round $r: 50 ms RTT bulk $a / $b MiB/s" >&2
  done
fi

# --- h. an app that writes head and body apart (Nagle on): no delayed-ACK stalls -------------
if [[ $skip != *,h,* ]]; then
  python3 scripts/demo_app.py "$work/two.port" 2>"$work/two-app.log" &
  pids+=($!)
  wait_for "[ -s $work/two.port ]"
  two_app="127.0.0.1:$(cat "$work/two.port")"
  start_agent two "$two_app"
  two_reg=$agent_reg two_key=$agent_key
  wait_for "curl -sf -o /dev/null -H 'G2C-Key: $two_key' http://$http/r/$two_reg/"
  for r in $(seq 1 "$rounds"); do
    read -r _ a _ < <(wrk_run "http://$two_app/" -t1 -c1 --latency); record direct two "$a"
    read -r _ b _ < <(key=$two_key wrk_run "http://$http/r/$two_reg/" -t1 -c1 --latency); record tunnel two "$b"
    echo "round $r: two-write app c=1 p50 $a / $b ms" >&2
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
  mysql_table=$(G2C_BENCH_BIN="$tunnel_bin" G2C_BENCH_PEERS="${legs[*]:2}" \
    scripts/bench-mysql.sh "$rounds" "$secs" 2>"$work/mysql.err") ||
    { tail -n 20 "$work/mysql.err" >&2; echo "MySQL benchmark failed: part d left out" >&2; mysql_table=""; }
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
python3 scripts/bench_table.py "$work/results" "$failures" "$per_agent" "$agent_idle_rss" "$agent_run_rss" "$mysql_table" "$memory_split"
[[ -z $cluster_table ]] || printf '\n%s\n' "$cluster_table"
