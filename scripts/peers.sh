# The tunnels users compare us with, for the benchmarks (sourced by scripts/bench.sh and
# scripts/bench-mysql.sh): rathole over plain TCP, rathole over Noise, OpenSSH `ssh -R` and bore,
# each started on loopback in front of one target. Needs `work`, `pids`, `free_port` and
# `wait_for` from the caller.
#
#   peers_install                   installs openssh-server/client and builds rathole and bore
#                                   once into target/bench-tools (cached between runs)
#   peer_up NAME TARGET [CPU...]    starts peer NAME (rathole, rathole-noise, ssh-R, bore) in
#                                   front of TARGET (host:port); sets peer_port (its public port)
#                                   and appends the peer's process ids to peer_pids[NAME]
#   peer_rss_kib NAME               the resident memory of NAME's processes and their children
#                                   together, in KiB
#
# rathole and bore are built from crates.io (rathole with only server, client and noise: its TLS
# needs OpenSSL headers); `--locked` fails for rathole 0.5.0 on today's compilers (an old `time`).
peer_names=(rathole rathole-noise ssh-R bore)
declare -A peer_pids=()
peer_tools="${CARGO_TARGET_DIR:-$root/target}/bench-tools"

peers_install() {
  local need=()
  for pkg in openssh-server openssh-client; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
  if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  [[ -x $peer_tools/bin/rathole ]] || cargo install -q --root "$peer_tools" rathole@0.5.0 \
    --no-default-features --features server,client,noise >&2
  [[ -x $peer_tools/bin/bore ]] || cargo install -q --locked --root "$peer_tools" bore-cli@0.6.0 >&2
}

peer_up() { # name target [cpu prefix...]
  local name=$1 target=$2; shift 2
  local dir="$work/peer-$name"
  mkdir -p "$dir"
  peer_port=$(free_port)
  case $name in
    rathole | rathole-noise) peer_rathole "$name" "$target" "$dir" "$@" ;;
    ssh-R) peer_ssh "$target" "$dir" "$@" ;;
    bore) peer_bore "$target" "$dir" "$@" ;;
    *) echo "unknown peer $name" >&2; return 1 ;;
  esac
  wait_for "(echo >/dev/tcp/127.0.0.1/$peer_port) 2>/dev/null"
}

peer_rathole() { # name target dir [cpu...]
  local name=$1 target=$2 dir=$3; shift 3
  local ctl server_tr="" client_tr=""
  ctl=$(free_port)
  if [[ $name == rathole-noise ]]; then
    # Noise_NK_25519_ChaChaPoly_BLAKE2s, rathole's default pattern.
    "$peer_tools/bin/rathole" --genkey >"$dir/keys"
    local private public
    private=$(sed -n '/Private Key:/{n;p}' "$dir/keys")
    public=$(sed -n '/Public Key:/{n;p}' "$dir/keys")
    server_tr=$'[server.transport]\ntype = "noise"\n[server.transport.noise]\nlocal_private_key = "'$private$'"'
    client_tr=$'[client.transport]\ntype = "noise"\n[client.transport.noise]\nremote_public_key = "'$public$'"'
  fi
  cat >"$dir/server.toml" <<TOML
[server]
bind_addr = "127.0.0.1:$ctl"
default_token = "bench"
$server_tr
[server.services.web]
bind_addr = "127.0.0.1:$peer_port"
TOML
  cat >"$dir/client.toml" <<TOML
[client]
remote_addr = "127.0.0.1:$ctl"
default_token = "bench"
$client_tr
[client.services.web]
local_addr = "$target"
TOML
  RUST_LOG=error "$@" "$peer_tools/bin/rathole" -s "$dir/server.toml" >"$dir/server.log" 2>&1 &
  pids+=($!); peer_pids[$name]+=" $!"
  wait_for "(echo >/dev/tcp/127.0.0.1/$ctl) 2>/dev/null"
  RUST_LOG=error "$@" "$peer_tools/bin/rathole" -c "$dir/client.toml" >"$dir/client.log" 2>&1 &
  pids+=($!); peer_pids[$name]+=" $!"
}

# A private sshd on a free loopback port (the gateway side) and `ssh -R` (the agent side),
# OpenSSH defaults otherwise. sshd serves the session from child processes.
peer_ssh() { # target dir [cpu...]
  local target=$1 dir=$2; shift 2
  local sshd_port
  sshd_port=$(free_port)
  ssh-keygen -q -t ed25519 -N '' -f "$dir/host" && ssh-keygen -q -t ed25519 -N '' -f "$dir/user"
  cp "$dir/user.pub" "$dir/authorized_keys"
  mkdir -p /run/sshd
  "$@" /usr/sbin/sshd -D -e -f /dev/null -o Port="$sshd_port" -o ListenAddress=127.0.0.1 -o HostKey="$dir/host" \
    -o AuthorizedKeysFile="$dir/authorized_keys" -o StrictModes=no -o UsePAM=no -o PidFile=none \
    -o PermitRootLogin=prohibit-password -o AllowTcpForwarding=yes 2>"$dir/sshd.log" &
  pids+=($!); peer_pids[ssh-R]+=" $!"
  wait_for "(echo >/dev/tcp/127.0.0.1/$sshd_port) 2>/dev/null"
  "$@" ssh -N -i "$dir/user" -p "$sshd_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ExitOnForwardFailure=yes -o LogLevel=error -R "127.0.0.1:$peer_port:$target" "$(id -un)@127.0.0.1" &
  pids+=($!); peer_pids[ssh-R]+=" $!"
}

# bore's control port is fixed (7835); the leg is left out when something else holds it.
peer_bore() { # target dir [cpu...]
  local target=$1 dir=$2; shift 2
  if (echo >/dev/tcp/127.0.0.1/7835) 2>/dev/null; then
    echo "bore: port 7835 is taken, leg left out" >&2; return 1
  fi
  "$@" "$peer_tools/bin/bore" server --bind-addr 127.0.0.1 --min-port "$peer_port" --max-port "$peer_port" \
    >"$dir/server.log" 2>&1 &
  pids+=($!); peer_pids[bore]+=" $!"
  wait_for "(echo >/dev/tcp/127.0.0.1/7835) 2>/dev/null"
  "$@" "$peer_tools/bin/bore" local --local-host "${target%:*}" --to 127.0.0.1 --port "$peer_port" "${target##*:}" \
    >"$dir/client.log" 2>&1 &
  pids+=($!); peer_pids[bore]+=" $!"
}

peer_rss_kib() { # name
  local p
  for p in ${peer_pids[$1]}; do tree_pids "$p"; done |
    while read -r p; do awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'
}

tree_pids() { # pid: it and its descendants, one per line
  local c
  echo "$1"
  for c in $(pgrep -P "$1"); do tree_pids "$c"; done
}
