# Sourced by scripts/quickstart.sh and scripts/cluster.sh: progress lines, and a work directory
# whose background processes (append their pids to `pids`) are stopped on exit; the directory is
# removed after a --check run ($check == 1) and kept otherwise, for its logs.

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $check == 1 ]]; then rm -rf "$work"; else echo "files kept in $work"; fi
}

make_work() { # name: sets work and pids, and the traps that clean up
  work=$(mktemp -d "${TMPDIR:-/tmp}/g2c-$1.XXXXXX")
  pids=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
