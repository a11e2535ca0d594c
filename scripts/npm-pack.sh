#!/usr/bin/env bash
# Build the npm tarballs of the agent: the main package (JS shim `g2c-agent`) and the linux-x64
# platform package carrying the binary we ship (scripts/dist.sh), at the workspace's version.
#
#   scripts/npm-pack.sh [OUT_DIR=target/npm]      prints the two tarball paths
#   G2C_AGENT_BIN=path scripts/npm-pack.sh         use this binary instead of building
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/npm}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
bin=${G2C_AGENT_BIN:-}
if [[ -z "$bin" ]]; then
  bin="$("$root/scripts/dist.sh")/g2c-agent"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/g2c-npm.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp -R "$root/deploy/npm/ground2cloud-agent" "$root/deploy/npm/ground2cloud-agent-linux-x64" "$stage/"
mkdir -p "$stage/ground2cloud-agent-linux-x64/bin"
install -m 0755 "$bin" "$stage/ground2cloud-agent-linux-x64/bin/g2c-agent"

for pkg in ground2cloud-agent-linux-x64 ground2cloud-agent; do
  have=$(node -p "require('$stage/$pkg/package.json').version")
  if [[ "$have" != "$version" ]]; then
    echo "deploy/npm/$pkg/package.json has version $have, the workspace $version" >&2
    exit 1
  fi
  (cd "$stage/$pkg" && npm pack --silent --pack-destination "$out" >/dev/null)
  echo "$out/$pkg-$version.tgz"
done
