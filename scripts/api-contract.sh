#!/usr/bin/env bash
# The admin and backchannel APIs against their OpenAPI documents (gateway/openapi/): starts the
# real gateway on free loopback ports in a temp dir, creates a live registration to aim at, and
# runs schemathesis (pinned, in a venv cached under target/) over every operation with bounded
# examples and every check: no 5xx, no status, header or body outside the schema, auth enforced,
# undocumented methods refused with 405. Needs the release binaries (cargo build --release).
#
#   scripts/api-contract.sh [MAX_EXAMPLES]     (default 25 per operation)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
examples=${1:-25}
version=4.32.5
target=${CARGO_TARGET_DIR:-$root/target}
bin="$target/release"
venv="$target/tools/schemathesis-$version"

if [[ ! -x $venv/bin/st ]]; then
  echo "installing schemathesis $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-contract.XXXXXX")
gw=""
cleanup() { [[ -n $gw ]] && kill "$gw" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/gateway.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[ssh]
listen = "127.0.0.1:0"
[backchannel]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
TOML
"$bin/g2c-gateway" --config "$work/gateway.toml" run --ready-file "$work/ready" 2>"$work/gateway.log" &
gw=$!
for _ in $(seq 1 200); do [[ -s $work/ready ]] && break; sleep 0.1; done
[[ -s $work/ready ]] || { cat "$work/gateway.log"; echo "gateway did not start" >&2; exit 1; }
addr() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/ready" "$1"; }
admin=$(addr admin); bc=$(addr backchannel)
token=$(tr -d '\n' <"$work/admin_token")

# A live registration, so the generated calls also meet real objects.
enroll=$("$bin/g2c-gateway" --config "$work/gateway.toml" token create --uses 1 --ttl 1h)
"$bin/g2c-agent" --config "$work/agent.toml" register --backchannel "http://$bc" \
  --token "$enroll" --name contract --service "web=127.0.0.1:9" >/dev/null
reg=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['registration_id'])" "$work/agent.toml")
# Operations on one registration meet the live one (tokens and keys come from the stateful
# phase, through the documents' links).
cat >"$work/admin.toml" <<TOML
[[operations]]
include-path-regex = "^/v1/registrations/[{]id[}]"
parameters = { "path.id" = "$reg" }
# A key registered by hand must be a real OpenSSH key (else 400), which JSON Schema cannot say.
[[operations]]
include-operation-id = "createRegistration"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400"]
TOML
# What JSON Schema cannot say of a registration: the key's base64 must decode to a real key
# (else 400) and the token must be live (else 401); schema-valid bodies meet both answers.
cat >"$work/backchannel.toml" <<TOML
[[operations]]
include-path = "/v1/registrations"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401"]
TOML

st() { # config url [st options]
  local config=$1; shift
  "$venv/bin/st" --config-file "$config" run "$@" --checks all --max-examples "$examples" --seed 1 \
    --phases examples,coverage,fuzzing,stateful --request-timeout 10 --no-color \
    --generation-database none --report-dir "$work/reports"
}
echo "==> admin API ($admin)"
# The pinned registration id above is not the one a create returns (and the run revokes it),
# so "a resource just created is then found" cannot hold for it; every other check runs.
st "$work/admin.toml" "http://$admin/openapi.json" -H "Authorization: Bearer $token" \
  --exclude-checks ensure_resource_availability
echo "==> backchannel ($bc)"
st "$work/backchannel.toml" "http://$bc/openapi.json"
if grep -q "panicked" "$work/gateway.log"; then
  grep -B2 -A5 panicked "$work/gateway.log" >&2; exit 1
fi
echo "API contract: both documents hold against the real gateway"
