# Sourced by `scripts/cluster.sh --bench` once its cluster answers: the cost of entering through
# a node that does not hold the agent's tunnel (it checks the key, then crosses the peer link to
# a holder) against entering through a holder, in interleaved rounds of the same run. Prints a
# markdown table of medians on fd 3 (cluster.sh's stdout); scripts/bench.sh folds its rows into its own table.
# Uses from cluster.sh: $work $reg $key $rounds $secs $app_path, ready, holds, say, fail.

holder="" other=""
for n in 1 2 3; do
  if holds "$n"; then holder=${holder:-$n}; else other=$n; fi
done
[[ -n $holder && -n $other ]] || fail "need a node with the tunnel and one without"
via_holder="http://$(ready "$work/node$holder/ready" http)/r/$reg$app_path"
via_other="http://$(ready "$work/node$other/ready" http)/r/$reg$app_path"
say "benchmark: node $holder holds the tunnel, node $other forwards over the peer link"

measure() { # url wrk-args... -> rps p50 p99 (in a subshell: failures are counted in a file)
  local url=$1 rps p50 p99 bad; shift
  read -r rps p50 p99 bad < <(wrk "$@" -d "${secs}s" -H "G2C-Key: $key" "$url" | "$root/scripts/wrk_summary.py")
  echo "$bad" >>"$work/failed"
  echo "$rps $p50 $p99"
}
declare -a h_rps o_rps h_p50 o_p50 h_p99 o_p99
for r in $(seq 1 "$rounds"); do
  read -r x _ _ < <(measure "$via_holder" -t2 -c32); h_rps+=("$x")
  read -r x _ _ < <(measure "$via_other" -t2 -c32); o_rps+=("$x")
  read -r _ a b < <(measure "$via_holder" -t1 -c1 --latency); h_p50+=("$a"); h_p99+=("$b")
  read -r _ a b < <(measure "$via_other" -t1 -c1 --latency); o_p50+=("$a"); o_p99+=("$b")
  echo "cluster round $r: req/s ${h_rps[-1]} / ${o_rps[-1]}; p50 ${h_p50[-1]} / ${o_p50[-1]} ms" >&2
done
failures=$(awk '{s += $1} END {print s + 0}' "$work/failed")
python3 - "$failures" "${h_rps[*]}" "${o_rps[*]}" "${h_p50[*]}" "${o_p50[*]}" "${h_p99[*]}" "${o_p99[*]}" <<'PY' >&3
import statistics as st, sys
failures = int(sys.argv[1])
h_rps, o_rps, h_p50, o_p50, h_p99, o_p99 = ([float(x) for x in a.split()] for a in sys.argv[2:])
m = st.median
print("| cluster figure | through the holder | through another node | ratio / added |")
print("|---|---|---|---|")
print(f"| cluster HTTP req/s, 1 KiB, 32 conns | {m(h_rps):,.0f} | {m(o_rps):,.0f} | {m(o_rps)/m(h_rps):.2f} |")
print(f"| cluster latency c=1 p50 (ms) | {m(h_p50):.3f} | {m(o_p50):.3f} | {m(o_p50)-m(h_p50):+.3f} ms |")
print(f"| cluster latency c=1 p99 (ms) | {m(h_p99):.3f} | {m(o_p99):.3f} | {m(o_p99)-m(h_p99):+.3f} ms |")
print(f"\nfailed cluster requests: {failures}")
sys.exit(1 if failures else 0)
PY
