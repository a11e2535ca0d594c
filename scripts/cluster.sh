#!/usr/bin/env bash
# Ground2Cloud as a cluster on one machine: PostgreSQL, three gateway nodes on their own
# loopback addresses (127.0.0.11-13, as if on three hosts) sharing the database, one SSH host
# key and a peer-link CA made here with openssl, HAProxy in front (health checks on /readyz),
# an agent keeping tunnels on two nodes in front of a small app, and a request through each
# node (the node without a tunnel forwards over the peer link).
#
#   scripts/cluster.sh          run it and stay up until Ctrl-C (HAProxy on 127.0.0.1:8000/2222)
#   scripts/cluster.sh --check  same on free ports, non-interactive; exits 0 only if every node
#                               answered 200 (CI runs this)
#   scripts/cluster.sh --bench [ROUNDS=3] [SECONDS=8]
#                               --check, then wrk through a node that holds the tunnel and through
#                               the node that forwards over the peer link, interleaved rounds; prints
#                               a table of medians and their ratio (scripts/bench.sh runs this with
#                               CLUSTER_APP=host:port CLUSTER_PATH=/1k pointing at its nginx)
#
# Needs the postgresql, haproxy and openssl packages (scripts/test.sh installs them).
set -euo pipefail

check=0 bench=0
case "${1:-}" in
  --check) check=1 ;;
  --bench) check=1 bench=1 rounds=${2:-3} secs=${3:-8}; export G2C_LOG=${G2C_LOG:-warn} ;;
esac
# With --bench only the table goes to stdout (fd 3); progress goes to stderr.
if [[ $bench == 1 ]]; then exec 3>&1 1>&2; fi
app_path=${CLUSTER_PATH:-/hello}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

source "$root/scripts/common.sh"
fail() { echo "cluster FAILED: $*" >&2; tail -n 15 "$work"/*.log >&2 || true; exit 1; }

say "building release binaries"
cargo build --release --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x "$pgbin/initdb" ]] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "haproxy not found (apt-get install haproxy)" >&2; exit 1; }

make_work cluster
chmod 755 "$work"

wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "timed out waiting for $what"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# --- PostgreSQL: our own server in $work, never the system service --------------------------
say "starting PostgreSQL"
as_pg=(); [[ $(id -u) == 0 ]] && as_pg=(runuser -u postgres --)
mkdir -p "$work/pg"; [[ $(id -u) == 0 ]] && chown postgres:postgres "$work/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U g2c --auth=trust -E UTF8 --no-sync >"$work/initdb.log"
pg_port=$(free_port)
"${as_pg[@]}" "$pgbin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" \
  -c listen_addresses=127.0.0.1 -c fsync=off 2>"$work/postgres.log" &
pids+=($!)
wait_for "PostgreSQL" 30 "$pgbin/pg_isready" -h 127.0.0.1 -p "$pg_port"
"$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U g2c ground2cloud
url="postgres://g2c@127.0.0.1:$pg_port/ground2cloud"

# --- the peer link's CA and the one node certificate (name g2c-node) -------------------------
say "making the cluster CA and node certificate"
ossl() { openssl "$@" 2>>"$work/openssl.log"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -keyout "$work/ca.key" -out "$work/ca.pem" -subj /CN=g2c-cluster-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/node.key" -out "$work/node.csr" -subj /CN=g2c-node
printf 'subjectAltName=DNS:g2c-node\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' >"$work/node.ext"
ossl x509 -req -in "$work/node.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 825 -extfile "$work/node.ext" -out "$work/node.pem"

# --- three nodes -----------------------------------------------------------------------------
if [[ $check == 1 ]]; then
  lb_http=$(free_port); lb_ssh=$(free_port)
  port() { echo 0; }      # each node's listeners on free ports
else
  lb_http=8000; lb_ssh=2222
  port() { echo "$1"; }   # the same ports on every node's address
fi
start_node() { # n
  local n=$1 ip="127.0.0.1$1" dir="$work/node$1"
  mkdir -p "$dir"
  if [[ $n != 1 ]]; then cp "$work/node1/host_key" "$dir/host_key"; fi  # agents pin one host key
  cat >"$dir/gateway.toml" <<TOML
base_domain = "g2c.localhost"
[store]
url = "$url"
path = "$dir/gateway.db"
[http]
listen = "$ip:$(port 8000)"
[ssh]
listen = "$ip:$(port 2222)"
host_key = "$dir/host_key"
public_host = "127.0.0.1"
public_port = $lb_ssh
[backchannel]
listen = "$ip:$(port 3014)"
[admin]
listen = "$ip:$(port 9091)"
token_file = "$work/admin_token"
[tcp]
bind = "$ip"
[cluster]
peer_listen = "$ip:$(port 7000)"
ca = "$work/ca.pem"
cert = "$work/node.pem"
key = "$work/node.key"
drain_announce_ms = 1500
TOML
  "$bin/g2c-gateway" --config "$dir/gateway.toml" run --ready-file "$dir/ready" 2>"$work/node$n.log" &
  pids+=($!)
  wait_for "node $n" 20 test -s "$dir/ready"
}
say "starting three gateway nodes on 127.0.0.11-13"
for n in 1 2 3; do start_node "$n"; done

# --- HAProxy -------------------------------------------------------------------------------
say "starting HAProxy on 127.0.0.1:$lb_http (HTTP) and 127.0.0.1:$lb_ssh (SSH)"
{
  printf 'global\n  maxconn 4096\ndefaults\n  timeout connect 2s\n  timeout client 120s\n'
  printf '  timeout server 120s\n  timeout check 500ms\n  retries 3\n  option redispatch 1\n'
  printf 'frontend http\n  mode http\n  bind 127.0.0.1:%s\n  default_backend nodes_http\n' "$lb_http"
  printf 'backend nodes_http\n  mode http\n  balance roundrobin\n  option httpchk GET /readyz\n'
  printf '  retry-on conn-failure empty-response response-timeout\n'
  for n in 1 2 3; do
    printf '  server n%s %s check port %s inter 200ms fall 1 rise 2\n' "$n" \
      "$(ready "$work/node$n/ready" http)" "$(ready "$work/node$n/ready" admin | cut -d: -f2)"
  done
  printf 'frontend ssh\n  mode tcp\n  bind 127.0.0.1:%s\n  default_backend nodes_ssh\n' "$lb_ssh"
  printf 'backend nodes_ssh\n  mode tcp\n  balance leastconn\n  option httpchk GET /readyz\n'
  for n in 1 2 3; do
    printf '  server n%s %s check port %s inter 200ms fall 1 rise 2\n' "$n" \
      "$(ready "$work/node$n/ready" ssh)" "$(ready "$work/node$n/ready" admin | cut -d: -f2)"
  done
} >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
wait_for "HAProxy" 10 python3 -c "import socket; socket.create_connection(('127.0.0.1', $lb_http), 1)"

# --- the app and an agent on two nodes -------------------------------------------------------
say "starting the private app and registering an agent"
if [[ -n "${CLUSTER_APP:-}" ]]; then
  app=$CLUSTER_APP
else
  python3 "$root/scripts/demo_app.py" "$work/app.port" 2>"$work/app.log" &
  pids+=($!)
  wait_for "the app" 10 test -s "$work/app.port"
  app="127.0.0.1:$(cat "$work/app.port")"
fi
g2c() { "$bin/g2c-gateway" --config "$work/node1/gateway.toml" "$@"; }
token=$(g2c token create --uses 1 --ttl 1h)
"$bin/g2c-agent" --config "$work/agent.toml" register --name cluster-demo \
  --backchannel "http://$(ready "$work/node1/ready" backchannel)" --token "$token" \
  --service "web=$app"
# The agent's own GUI on a free port (a quickstart agent may hold the default one).
printf '\n[local_api]\nlisten = "127.0.0.1:0"\n' >>"$work/agent.toml"
reg=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['registration_id'])" "$work/agent.toml")
"$bin/g2c-agent" --config "$work/agent.toml" run 2>"$work/agent.log" &
pids+=($!)
holds() { # n: does node n hold the agent's tunnel?
  curl -sf -H "Authorization: Bearer $(cat "$work/admin_token")" \
    "http://$(ready "$work/node$1/ready" admin)/v1/registrations" |
    python3 -c "import json,sys; sys.exit(0 if any(r['id']==sys.argv[1] and r['connected'] for r in json.load(sys.stdin)) else 1)" "$reg"
}
held() { # how many nodes hold the agent's tunnel
  local count=0
  for n in 1 2 3; do holds "$n" && count=$((count + 1)); done
  echo "$count"
}
wait_for "the agent's two tunnels" 20 test "$(held)" = 2
key=$(g2c key create --registration "$reg")

# --- a request through each node, and through HAProxy ----------------------------------------
say "sending a request through each node"
ok=1
for n in 1 2 3; do
  addr=$(ready "$work/node$n/ready" http)
  for _ in $(seq 1 30); do  # until the node's presence cache has the tunnel (polled)
    status=$(curl -s -o "$work/reply" -w '%{http_code}' -H "G2C-Key: $key" "http://$addr/r/$reg$app_path" || true)
    [[ $status == 200 ]] && break
    sleep 0.1
  done
  echo "node $n ($addr): $status"
  [[ $status == 200 ]] || ok=0
done
status=$(curl -s -o /dev/null -w '%{http_code}' -H "G2C-Key: $key" "http://127.0.0.1:$lb_http/r/$reg$app_path" || true)
echo "HAProxy (127.0.0.1:$lb_http): $status"
[[ $status == 200 ]] || ok=0
[[ $ok == 1 ]] || fail "expected 200 through every node"

if [[ $bench == 1 ]]; then
  source "$root/scripts/cluster-bench.sh"
  exit 0
fi
if [[ $check == 1 ]]; then
  say "cluster check passed"
  exit 0
fi
cat <<TXT

A three-node Ground2Cloud cluster is running:
  load balancer   http://127.0.0.1:$lb_http   (SSH for agents: 127.0.0.1:$lb_ssh)
  nodes           127.0.0.11, 127.0.0.12, 127.0.0.13 (admin :9091, /metrics)
  registration    $reg   (tunnels on two nodes)
  API key         $key

Try:
  curl -H 'G2C-Key: $key' http://127.0.0.1:$lb_http/r/$reg/hello
  kill -TERM <a node's pid>   # a rolling restart: requests keep succeeding

Logs: $work/*.log — press Ctrl-C to stop everything.
TXT
wait
