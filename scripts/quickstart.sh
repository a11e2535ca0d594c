#!/usr/bin/env bash
# Ground2Cloud quickstart: build the release binaries, start a gateway on embedded defaults
# (SQLite, loopback), register an agent in front of a small local HTTP app, create an API key,
# and send a request through the tunnel.
#
#   scripts/quickstart.sh          run it and stay up until Ctrl-C (ports 8000/2222/3014/9091)
#   scripts/quickstart.sh --check  same on free ports, non-interactive; exits 0 only if the
#                                  request came back 200 through the tunnel (CI runs this)
set -euo pipefail

check=0
[[ "${1:-}" == "--check" ]] && check=1
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

source "$root/scripts/common.sh"

say "building release binaries"
cargo build --release --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"

make_work quickstart

wait_for_file() { # path seconds
  for _ in $(seq 1 $(($2 * 10))); do [[ -s "$1" ]] && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}

say "starting the private app (a small HTTP server on loopback)"
python3 "$root/scripts/demo_app.py" "$work/app.port" 2>"$work/app.log" &
pids+=($!)
wait_for_file "$work/app.port" 10
app_port=$(cat "$work/app.port")

if [[ $check == 1 ]]; then http=0; ssh=0; bc=0; admin=0; else http=8000; ssh=2222; bc=3014; admin=9091; fi
cat >"$work/gateway.toml" <<TOML
# Embedded defaults, on loopback.
[http]
listen = "127.0.0.1:$http"
[ssh]
listen = "127.0.0.1:$ssh"
[backchannel]
listen = "127.0.0.1:$bc"
[admin]
listen = "127.0.0.1:$admin"
TOML

say "starting the gateway (store: $work/g2c-gateway.db)"
"$bin/g2c-gateway" --config "$work/gateway.toml" run --ready-file "$work/gateway.ready" 2>"$work/gateway.log" &
pids+=($!)
wait_for_file "$work/gateway.ready" 20
addr() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/gateway.ready" "$1"; }
http_addr=$(addr http); bc_addr=$(addr backchannel); admin_addr=$(addr admin)

say "creating an enrollment token and registering the agent"
token=$("$bin/g2c-gateway" --config "$work/gateway.toml" token create --uses 1 --ttl 1h)
"$bin/g2c-agent" --config "$work/agent.toml" register --backchannel "http://$bc_addr" \
  --token "$token" --name quickstart --service "web=127.0.0.1:$app_port"
reg=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['registration_id'])" "$work/agent.toml")

say "starting the agent (registration $reg)"
"$bin/g2c-agent" --config "$work/agent.toml" run 2>"$work/agent.log" &
pids+=($!)

# The admin API's token: written beside the store at the gateway's first start.
python3 - "$admin_addr" "$reg" "$work/admin_token" <<'PY'
import json, sys, time, urllib.request
admin, reg, token_file = sys.argv[1], sys.argv[2], sys.argv[3]
token = open(token_file).read().strip()
req = urllib.request.Request(f"http://{admin}/v1/registrations",
                             headers={"Authorization": f"Bearer {token}"})
deadline = time.time() + 20
while time.time() < deadline:
    try:
        regs = json.load(urllib.request.urlopen(req, timeout=2))
        if any(r["id"] == reg and r["connected"] for r in regs):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("agent did not connect in time")
PY

say "creating an API key for $reg"
key=$("$bin/g2c-gateway" --config "$work/gateway.toml" key create --registration "$reg")

say "sending a request through the tunnel"
echo "curl -H 'G2C-Key: $key' http://$http_addr/r/$reg/hello"
status=$(python3 - "$http_addr" "$reg" "$key" <<'PY'
import sys, urllib.request, urllib.error
addr, reg, key = sys.argv[1:4]
req = urllib.request.Request(f"http://{addr}/r/{reg}/hello", headers={"G2C-Key": key})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        sys.stderr.write(r.read().decode())
        print(r.status)
except urllib.error.HTTPError as e:
    sys.stderr.write(e.read().decode() + "\n")
    print(e.code)
PY
)
echo "status: $status"
if [[ "$status" != "200" ]]; then
  echo "quickstart FAILED: expected 200 through the tunnel" >&2
  tail -n 20 "$work/gateway.log" "$work/agent.log" >&2 || true
  exit 1
fi

if [[ $check == 1 ]]; then
  say "quickstart check passed"
  exit 0
fi
cat <<TXT

Ground2Cloud is running:
  gateway front door  http://$http_addr     (admin: http://$admin_addr/metrics)
  registration        $reg
  API key             $key

Try:
  curl -H 'G2C-Key: $key' http://$http_addr/r/$reg/hello
  curl -H 'G2C-Key: $key' -H 'Host: $reg.localhost' http://$http_addr/anything

Logs: $work/{gateway,agent,app}.log — press Ctrl-C to stop everything.
TXT
wait
