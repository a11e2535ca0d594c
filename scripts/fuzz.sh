#!/usr/bin/env bash
# Run the cargo-fuzz targets in fuzz/ for a while each (default 60 s), starting from the
# committed seeds and past crashes. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ once fixed, so the ordinary
# test suite (tests/tests/fuzz_regressions.rs) replays it forever.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags) without a
# sanitizer: our crates forbid unsafe code, so the fuzzers look for panics, hangs and 500s.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(proto_frames registration_api front_door admin_api)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
cd "$root/fuzz"
cargo fuzz build --sanitizer none -O
for t in "${targets[@]}"; do
  corpus=$(mktemp -d)
  echo "==> fuzzing $t for ${secs}s"
  seeds=(seeds/$t)
  [[ -d regressions/$t ]] && seeds+=(regressions/$t)
  cargo fuzz run --sanitizer none -O "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+ +DONE|Done |stat::number_of_executed_units|==[0-9]+==|thread .* panicked|SUMMARY)' || true
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t found a failing input:"; ls -l "artifacts/$t"
    exit 1
  fi
  rm -rf "$corpus"
done
