#!/usr/bin/env bash
# The binaries we ship: the `dist` profile (release + fat LTO, one codegen unit) with the code
# each binary runs laid out together. Three steps:
#   1. build the dist binaries;
#   2. a training run: the real gateway and agent under callgrind (scripts/callgrind_pair.sh),
#      with start-up, the SSH handshake, keep-alive and parallel requests, a 64 MiB download,
#      a POST body, refused callers, a metrics scrape and the agent's status, then shutdown;
#   3. scripts/layout.py lists the functions each binary executed (hottest first) in
#      target/layout/<binary>.order, and the binaries are linked again with those functions
#      first in .text (layout/build.rs reads G2C_LAYOUT_DIR).
# Linux keeps 64 KiB of code resident around each page executed; packed, the code a tunnel
# runs takes a fraction of the pages it took spread over the whole binary (benches/README.md).
#
#   scripts/dist.sh        prints the directory holding g2c-gateway and g2c-agent (target/dist)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
layout="$target/layout"
mkdir -p "$layout"
# Always the same package set: a narrower one can unify features differently, which changes
# the symbols' hashes and so the names in the order files.
build() { cargo build --profile dist --workspace --bins >&2; }

# 1. A dist build, with the order files of the last run if any (names a change removed are
#    skipped by the linker; the training run below sees this build's names).
G2C_LAYOUT_DIR="$layout" build
bin="$target/dist"

# 2. The training run.
source "$root/scripts/callgrind_pair.sh"
train() { # url key ready_file
  local url=$1 key=$2 ready=$3 admin token
  admin=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['admin'])" "$ready")
  token=$(cat "$(dirname "$ready")/admin_token")
  local args=()
  for _ in $(seq 1 200); do args+=(-o /dev/null "$url/1k"); done
  curl -sf --no-progress-meter -Z --parallel-max 16 -H "G2C-Key: $key" "${args[@]}"
  curl -sf -o /dev/null -H "G2C-Key: $key" "$url/64m"
  head -c 100000 /dev/zero >"$work/body"
  curl -s -o /dev/null -H "G2C-Key: $key" --data-binary @"$work/body" "$url/1k" || true
  curl -s -o /dev/null -H "G2C-Key: wrong" "$url/1k" || true
  curl -s -o /dev/null -H "G2C-Key: $key" "${url%/r/*}/r/nosuchreg/1k" || true
  curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://$admin/metrics"
  "$bin/g2c-agent" -c "$(dirname "$ready")/agent.toml" status >/dev/null || true
}
echo "training run under callgrind (about a minute)" >&2
CG_OPTS=--demangle=no pair_run 500 "$work/train" train
for b in gateway agent; do
  python3 "$root/scripts/layout.py" "$work/train/$b.out" "$bin/g2c-$b" "$layout/g2c-$b.order" >&2
done

# 3. Link again with the order files.
G2C_LAYOUT_DIR="$layout" build
for b in gateway agent; do
  python3 "$root/scripts/layout.py" --check "$layout/g2c-$b.order" "$bin/g2c-$b" >&2
done
echo "$bin"
