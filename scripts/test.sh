#!/usr/bin/env bash
# Ground2Cloud test suite: installs what the tests need on a fresh machine, then runs formatting
# and lint checks, every unit and end-to-end test (release build: the tunnel moves gigabytes),
# and the quickstart check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# --- what the tests need -------------------------------------------------------------------
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}
command -v python3 >/dev/null || apt_install python3
# schemathesis (scripts/api-contract.sh) goes into a venv under target/.
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
# A real MariaDB (server + CLI client) for the TCP-service tests; the harness starts its own
# mariadbd on a free loopback port, never the system service.
apt_install mariadb-server mariadb-client
# PostgreSQL server binaries for the store contract and the cluster tests; the harness runs
# its own initdb + postgres on a free loopback port, never the system service.
apt_install postgresql
# HAProxy is the load balancer in front of the cluster tests' three nodes; scripts/cluster.sh
# makes its peer-link CA with openssl and asks the nodes with curl.
apt_install haproxy
command -v openssl >/dev/null || apt_install openssl
command -v curl >/dev/null || apt_install curl
# ssh and ssh-keygen: agentless sites hold their tunnel with the stock OpenSSH client.
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || apt_install openssh-client
# promtool (Debian's `prometheus` package) checks the /metrics exposition and the alert rules.
apt_install prometheus
# systemd-analyze verifies the generated agent unit; npm packs and installs the npm tarballs.
command -v systemd-analyze >/dev/null || apt_install systemd
command -v npm >/dev/null || apt_install npm
# A real headless browser for the agent GUI tests (WebDriver through Debian's chromedriver).
apt_install chromium chromium-driver
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

# --- checks --------------------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings

say "building release binaries (end-to-end tests run the real ones)"
cargo build --release --workspace --bins

say "advisory check: Cargo.lock and fuzz/Cargo.lock against the RustSec snapshot (offline)"
if [[ -d ${G2C_ADVISORY_DB:-$root/../shared/advisory-db}/crates ]]; then
  cargo test --release -p g2c-tests --test advisories -- --nocapture
else
  echo "no advisory database at ../shared/advisory-db (set G2C_ADVISORY_DB): skipped"
fi

say "cargo test"
cargo test --release --workspace --no-fail-fast

say "API contract: schemathesis against the real gateway's OpenAPI documents (scripts/api-contract.sh)"
scripts/api-contract.sh

# 20 s per target keeps a fresh-machine run under 45 minutes; longer soaks: scripts/fuzz.sh 600
say "fuzzing: each cargo-fuzz target for 20 s (scripts/fuzz.sh)"
scripts/fuzz.sh 20

say "criterion benches, quick mode (each bench once; numbers come from cargo bench / scripts/bench.sh)"
cargo bench -p g2c-benches -- --test

say "quickstart --check"
scripts/quickstart.sh --check

say "cluster --check: PostgreSQL, HAProxy, three nodes and an agent on two (scripts/cluster.sh)"
scripts/cluster.sh --check
