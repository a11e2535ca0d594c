#!/usr/bin/env bash
# MySQL through the tunnel vs direct, in the same run: sysbench oltp_read_only (8 threads)
# against a MariaDB started here on loopback, direct and through gateway + agent, in interleaved
# rounds. Prints QPS medians and the ratio. Not a test: numbers on a shared machine are noisy.
#
#   scripts/bench-mysql.sh [ROUNDS=3] [SECONDS=10]
set -euo pipefail
rounds=${1:-3}
secs=${2:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need=()
for pkg in mariadb-server mariadb-client sysbench; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"

work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }

db_port=$(free_port)
mariadb-install-db --no-defaults --datadir="$work/data" --auth-root-authentication-method=normal --skip-test-db --user=root >/dev/null
mariadbd --no-defaults --datadir="$work/data" --socket="$work/sock" --port="$db_port" --bind-address=127.0.0.1 \
  --user=root --skip-name-resolve --max-connections=500 --innodb-buffer-pool-size=256M \
  --pid-file="$work/pid" --log-error="$work/db.err" &
pids+=($!)
wait_for "[ -S $work/sock ]"
mariadb --no-defaults -S "$work/sock" -uroot -e "CREATE USER 'bench'@'%' IDENTIFIED BY 'bench'; GRANT ALL ON *.* TO 'bench'@'%'; CREATE DATABASE sbtest;"

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
G2C_LOG=warn "$bin/g2c-gateway" -c "$work/gateway.toml" run --ready-file "$work/ready" 2>"$work/gw.log" &
pids+=($!)
wait_for "[ -s $work/ready ]"
bc=$(python3 -c "import json; print(json.load(open('$work/ready'))['backchannel'])")
token=$("$bin/g2c-gateway" -c "$work/gateway.toml" token create)
"$bin/g2c-agent" -c "$work/agent.toml" register --backchannel "http://$bc" --token "$token" --tcp-service "db=127.0.0.1:$db_port" >/dev/null
reg=$(python3 -c "import tomllib; print(tomllib.load(open('$work/agent.toml','rb'))['registration_id'])")
tunnel_port=$("$bin/g2c-gateway" -c "$work/gateway.toml" --json registration allow "$reg" db 127.0.0.1/32 | python3 -c "import json,sys; print(json.load(sys.stdin)['port'])")
G2C_LOG=warn "$bin/g2c-agent" -c "$work/agent.toml" run 2>"$work/agent.log" &
pids+=($!)
wait_for "mariadb --no-defaults -h127.0.0.1 -P$tunnel_port -ubench -pbench -e 'select 1' >/dev/null 2>&1"

sb() { # port
  sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user=bench \
    --mysql-password=bench --mysql-db=sbtest --tables=4 --table-size=10000 --threads="${SB_THREADS:-8}" "${@:2}"
}
sb "$db_port" prepare >/dev/null
qps() { sb "$1" --time="$secs" run | awk '/queries:/ {gsub(/[(]/,"",$3); print $3}'; }

direct=(); tunnel=()
for r in $(seq 1 "$rounds"); do
  direct+=("$(qps "$db_port")")
  tunnel+=("$(qps "$tunnel_port")")
  echo "round $r: direct ${direct[-1]} qps, tunnel ${tunnel[-1]} qps" >&2
done
[[ -n "${G2C_BENCH_CPU:-}" ]] && ps -o comm,cputime -p "$(IFS=,; echo "${pids[*]}")" >&2
python3 - "${direct[*]}" "${tunnel[*]}" <<'PY'
import statistics, sys
d = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
md, mt = statistics.median(d), statistics.median(t)
print(f"| sysbench oltp_read_only, 8 threads | direct {md:.0f} QPS | tunnel {mt:.0f} QPS | ratio {mt/md:.2f} |")
PY
