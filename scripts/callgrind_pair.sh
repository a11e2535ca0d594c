# Sourced by scripts/cost.sh and scripts/dist.sh: the real gateway and agent under valgrind's
# callgrind, nginx behind them serving 1 KiB and 64 MiB, on loopback. Needs `bin` (the directory
# holding g2c-gateway and g2c-agent); sets `work`, `pids` and the trap that stops everything.
#
#   pair_run N DIR [HOOK]   start both under callgrind (extra valgrind options: $CG_OPTS), send N
#                           keep-alive GETs of 1 KiB on one connection after a warm-up of 50, run
#                           HOOK URL KEY READY_FILE (more traffic) if given, stop both; callgrind files are
#                           DIR/gateway.out and DIR/agent.out; sets gw_ir and agent_ir (totals).
need=()
for pkg in nginx curl python3 valgrind; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-callgrind.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 1200); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }

# --- nginx serving 1 KiB and 64 MiB (not counted) --------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/nginx_backend.sh"
nginx_start 64M

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

pair_run() { # n dir [hook]
  local n=$1 d=$2 hook=${3:-}
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
  # shellcheck disable=SC2086 # CG_OPTS is a list of options
  G2C_LOG=warn valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$d/gateway.out" \
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
  # shellcheck disable=SC2086
  G2C_LOG=warn G2C_LOG_DIR="$d/logs" valgrind --tool=callgrind ${CG_OPTS:-} \
    --callgrind-out-file="$d/agent.out" "$bin/g2c-agent" -c "$d/agent.toml" run 2>"$d/agent.log" &
  local agent_pid=$!
  pids+=($agent_pid)
  local url="http://$http/r/$reg"
  wait_for "curl -sf -o /dev/null -H 'G2C-Key: $key' $url/1k"
  requests 50 "$url/1k" "$key"
  requests "$n" "$url/1k" "$key"
  [[ -z $hook ]] || "$hook" "$url" "$key" "$d/ready"
  kill -TERM "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  kill -TERM "$gw_pid"
  wait "$gw_pid" 2>/dev/null || true
  gw_ir=$(total "$d/gateway.out")
  agent_ir=$(total "$d/agent.out")
}
