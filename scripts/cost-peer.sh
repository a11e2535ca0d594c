#!/usr/bin/env bash
# Instructions per HTTP request in a peer tunnel's processes (scripts/peers.sh: rathole,
# rathole-noise, bore), counted the way scripts/cost.sh counts ours: the peer's processes under
# valgrind's callgrind in front of nginx serving 1 KiB, once with N1 and once with N2 keep-alive
# GETs on one curl connection; the difference of their totals divided by N2 - N1.
#
#   scripts/cost-peer.sh [PEER=rathole] [N1=500] [N2=2500]
set -euo pipefail
name=${1:-rathole}
n1=${2:-500}
n2=${3:-2500}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-cost-peer.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 600); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }

source "$root/scripts/nginx_backend.sh"
nginx_start

source "$root/scripts/peers.sh"
peers_install
declare -A total=()
for n in "$n1" "$n2"; do
  out="$work/run-$n"
  mkdir -p "$out"
  peer_pids[$name]=""
  peer_up "$name" "127.0.0.1:$ng_port" valgrind -q --tool=callgrind --callgrind-out-file="$out/%p.out"
  wait_for "curl -sf -o /dev/null http://127.0.0.1:$peer_port/1k"
  urls=()
  for _ in $(seq 1 "$n"); do urls+=(-o /dev/null "http://127.0.0.1:$peer_port/1k"); done
  curl -sf "${urls[@]}"
  # callgrind writes its counts when the process ends, by a signal too.
  for p in ${peer_pids[$name]}; do kill -TERM "$p"; done
  for p in ${peer_pids[$name]}; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
  total[$n]=$(cat "$out"/*.out | awk '/^(summary|totals):/ {s += $2} END {print s}')
done
python3 - "$name" "$n1" "$n2" "${total[$n1]}" "${total[$n2]}" <<'PY'
import sys
name = sys.argv[1]
n1, n2, t1, t2 = map(int, sys.argv[2:])
print(f"{name}: {(t2 - t1) / (n2 - n1):,.0f} instructions per request, its processes together")
PY
