#!/usr/bin/env bash
# MySQL through the tunnel vs direct, in the same run: sysbench oltp_read_only (8 threads)
# against a MariaDB started here on loopback, in interleaved rounds, over these legs:
#   direct  sysbench → MariaDB
#   tunnel  sysbench → gateway TCP port → SSH/yamux → agent → MariaDB
#   relay2  sysbench → g2c-plain-relay → g2c-plain-relay → MariaDB: the ceiling. Two bare
#           relays (no crypto, no mux) cost what any two-process tunnel must at least cost on
#           this machine, so tunnel/relay2 is how close we are to that floor.
#   peers   (G2C_BENCH_PEERS="rathole rathole-noise ssh-R bore", any of them) the tunnels users
#           compare us with, from scripts/peers.sh; G2C_BENCH_SSH=1 is short for "ssh-R".
# Prints QPS medians and ratios to direct. Not a test: numbers on a shared machine are noisy.
#
#   scripts/bench-mysql.sh [ROUNDS=3] [SECONDS=10]
#
# SB_THREADS=N       sysbench threads (default 8; 1 shows the added latency rather than CPU).
# G2C_BENCH_PIN=1    MariaDB and sysbench on CPU 0, every relay process on CPU 1: the tunnel
#                    on other hardware than the database, as deployed (gateway in the cloud),
#                    instead of four processes fighting over the same two cores.
# G2C_BENCH_CPU=1    print each process's CPU time at the end.
set -euo pipefail
rounds=${1:-3}
secs=${2:-10}
threads=${SB_THREADS:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

peers=${G2C_BENCH_PEERS:-}
[[ -n "${G2C_BENCH_SSH:-}" ]] && peers+=" ssh-R"
need=()
pkgs=(mariadb-server mariadb-client sysbench)
for pkg in "${pkgs[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"
# The gateway and agent we ship (scripts/dist.sh), or those in G2C_BENCH_BIN=DIR.
tunnel_bin="${G2C_BENCH_BIN:-$(scripts/dist.sh)}"

db_cpu=(); relay_cpu=(); mode="shared CPUs"
if [[ -n "${G2C_BENCH_PIN:-}" ]]; then
  db_cpu=(taskset -c 0); relay_cpu=(taskset -c 1); mode="DB on CPU 0, relays on CPU 1"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }
mysql_up() { mariadb --no-defaults -h127.0.0.1 -P"$1" -ubench -pbench -e 'select 1' >/dev/null 2>&1; }

# --- MariaDB ---------------------------------------------------------------------------------
db_port=$(free_port)
mariadb-install-db --no-defaults --datadir="$work/data" --auth-root-authentication-method=normal --skip-test-db --user=root >/dev/null
"${db_cpu[@]}" mariadbd --no-defaults --datadir="$work/data" --socket="$work/sock" --port="$db_port" --bind-address=127.0.0.1 \
  --user=root --skip-name-resolve --max-connections=500 --innodb-buffer-pool-size=256M \
  --pid-file="$work/pid" --log-error="$work/db.err" &
pids+=($!)
wait_for "[ -S $work/sock ]"
mariadb --no-defaults -S "$work/sock" -uroot -e "CREATE USER 'bench'@'%' IDENTIFIED BY 'bench'; GRANT ALL ON *.* TO 'bench'@'%'; CREATE DATABASE sbtest;"

# --- gateway + agent ---------------------------------------------------------------------------
cat >"$work/gateway.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[ssh]
listen = "127.0.0.1:0"
[backchannel]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[tcp]
bind = "127.0.0.1"
TOML
G2C_LOG=warn "${relay_cpu[@]}" "$tunnel_bin/g2c-gateway" -c "$work/gateway.toml" run --ready-file "$work/ready" 2>"$work/gw.log" &
pids+=($!)
wait_for "[ -s $work/ready ]"
bc=$(python3 -c "import json; print(json.load(open('$work/ready'))['backchannel'])")
token=$("$tunnel_bin/g2c-gateway" -c "$work/gateway.toml" token create)
"$tunnel_bin/g2c-agent" -c "$work/agent.toml" register --backchannel "http://$bc" --token "$token" --tcp-service "db=127.0.0.1:$db_port" >/dev/null
reg=$(python3 -c "import tomllib; print(tomllib.load(open('$work/agent.toml','rb'))['registration_id'])")
tunnel_port=$("$tunnel_bin/g2c-gateway" -c "$work/gateway.toml" --json registration allow "$reg" db 127.0.0.1/32 | python3 -c "import json,sys; print(json.load(sys.stdin)['port'])")
G2C_LOG=warn "${relay_cpu[@]}" "$tunnel_bin/g2c-agent" -c "$work/agent.toml" run 2>"$work/agent.log" &
pids+=($!)
wait_for "mysql_up $tunnel_port"

# --- two bare relays: the floor --------------------------------------------------------------
"${relay_cpu[@]}" "$bin/g2c-plain-relay" --to "127.0.0.1:$db_port" --port-file "$work/relay_b" &
pids+=($!)
wait_for "[ -s $work/relay_b ]"
"${relay_cpu[@]}" "$bin/g2c-plain-relay" --to "127.0.0.1:$(cat "$work/relay_b")" --port-file "$work/relay_a" &
pids+=($!)
wait_for "[ -s $work/relay_a ]"
relay_port=$(cat "$work/relay_a")
wait_for "mysql_up $relay_port"

legs=(direct tunnel relay2)
declare -A port=([direct]=$db_port [tunnel]=$tunnel_port [relay2]=$relay_port)

# --- peers -------------------------------------------------------------------------------------
if [[ -n $peers ]]; then
  source "$root/scripts/peers.sh"
  peers_install
  for p in $peers; do
    if peer_up "$p" "127.0.0.1:$db_port" "${relay_cpu[@]}"; then
      wait_for "mysql_up $peer_port"
      legs+=("$p"); port[$p]=$peer_port
    fi
  done
fi

# --- rounds ------------------------------------------------------------------------------------
sb() { # port, sysbench args...
  "${db_cpu[@]}" sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user=bench \
    --mysql-password=bench --mysql-db=sbtest --tables=4 --table-size=10000 --threads="$threads" "${@:2}"
}
sb "$db_port" prepare >/dev/null
qps() { sb "$1" --time="$secs" run | awk '/queries:/ {gsub(/[(]/,"",$3); print $3}'; }

results="$work/results"
for r in $(seq 1 "$rounds"); do
  line="round $r:"
  for leg in "${legs[@]}"; do
    q=$(qps "${port[$leg]}")
    printf '%s\t%s\n' "$leg" "$q" >>"$results"
    line+=" $leg $q qps,"
  done
  echo "${line%,}" >&2
done
if [[ -n "${G2C_BENCH_CPU:-}" ]]; then
  # sshd serves each connection from child processes.
  cpu_pids=(); for p in "${pids[@]}"; do cpu_pids+=($(pgrep -P "$p") "$p"); done
  tck=$(getconf CLK_TCK)
  for p in "${cpu_pids[@]}"; do
    [[ -r /proc/$p/stat ]] && awk -v t="$tck" '{sub(/^[0-9]+ /, ""); printf "%-18s user %6.2f s  sys %6.2f s\n", $1, $13/t, $14/t}' "/proc/$p/stat" >&2
  done
fi
python3 - "$results" "$threads" "$mode" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    leg, q = line.rstrip("\n").split("\t")
    runs[leg].append(float(q))
med = {leg: statistics.median(v) for leg, v in runs.items()}
d = med["direct"]
print(f"sysbench oltp_read_only, {sys.argv[2]} threads, {sys.argv[3]}, medians of {len(runs['direct'])} rounds:")
print("| leg | QPS | ratio to direct |")
print("|---|---:|---:|")
for leg, q in med.items():
    print(f"| {leg} | {q:.0f} | {q / d:.2f} |")
print(f"tunnel / relay2 (share of the two-hop ceiling reached): {med['tunnel'] / med['relay2']:.2f}")
for leg in med.keys() - {"direct", "tunnel", "relay2"}:
    print(f"tunnel / {leg}: {med['tunnel'] / med[leg]:.2f}")
PY
