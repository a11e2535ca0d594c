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
cargo build --release --workspace --bins >&2
bin="${G2C_BENCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release}"
out_dir="${CARGO_TARGET_DIR:-$root/target}/cost"
mkdir -p "$out_dir"
source "$root/scripts/callgrind_pair.sh"

run() { # n → sets gw_ir, agent_ir
  pair_run "$1" "$work/run-$1"
  last_run=$work/run-$1
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
