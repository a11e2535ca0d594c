#!/usr/bin/env bash
# The long soak, outside CI: the fault suite with a long flapping run, repeated, then every fuzz
# target for a long while. Everything stays on loopback.
#
#   scripts/soak.sh [FLAP_SECONDS=1800] [ROUNDS=3] [FUZZ_SECONDS_PER_TARGET=3600]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
flap=${1:-1800}
rounds=${2:-3}
fuzz=${3:-3600}
cargo build --release --workspace --bins
for round in $(seq 1 "$rounds"); do
  echo "==> soak round $round/$rounds: fault suite, agent flapping for ${flap}s"
  G2C_FLAP_SECS=$flap cargo test --release -p g2c-tests --test faults --test faults_fleet --test hostile_http -- --nocapture 2>&1 |
    grep -E '^test |test result|cycles|agents back|idle:|detected|exited|closed after|good agent'
done
echo "==> fuzzing each target for ${fuzz}s"
scripts/fuzz.sh "$fuzz"
