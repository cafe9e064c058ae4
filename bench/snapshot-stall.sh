#!/usr/bin/env bash
# What snapshots cost a loaded cluster, in one run on this machine: the same
# 64-client put workload (256-byte values) against 3 Tern servers twice, once
# with a snapshot about every second (raft_snapshot_threshold 1024,
# raft_snapshot_interval 1s) and once without (threshold out of reach).
# It prints numbers; it asserts nothing. Usage: bench/snapshot-stall.sh [seconds]
# (TERN_BIN=path/to/tern runs that binary instead of building this tree, and
# BENCH_BIN=path the load from another, so an A/B keeps one load generator;
# LOGS=dir keeps the servers' logs there, to match the slowest writes the
# bench names with what the servers did at that moment; ROUNDS=n runs n
# alternating pairs, default 3, and ends with each round's ratio and the
# medians: one pair's ratio moved by 0.87-0.98 between runs on one VM, as the
# machine's speed drifts by 10% over minutes, so one pair says little)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-20}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tern-snapstall.XXXXXX")
trap 'pkill -9 -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
echo "load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
# TERN_BIN=path runs another build (an A/B of two commits on one machine).
if [ -z "${TERN_BIN:-}" ]; then
  cargo build --release -q -p tern
fi
TERN=${TERN_BIN:-$PWD/target/release/tern}
. bench/lib.sh

run_cluster() { # name hcl -> prints the bench line
  local name=$1 hcl=$2
  local -a H S G W
  for i in 1 2 3; do H[$i]=$(port); S[$i]=$(port); G[$i]=$(port); W[$i]=$(port); done
  for i in 1 2 3; do
    local joins=()
    for j in 1 2 3; do [ "$j" = "$i" ] || joins+=("-retry-join=127.0.0.1:${G[$j]}"); done
    "$TERN" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$WORK/$name$i" \
      -hcl="$hcl" -bind=127.0.0.1 -client=127.0.0.1 -http-port="${H[$i]}" -server-port="${S[$i]}" -serf-lan-port="${G[$i]}" -serf-wan-port="${W[$i]}" -retry-interval=1s \
      "${joins[@]}" >>"$WORK/$name$i.log" 2>&1 &
    disown "$!"
  done
  local leader="" waited=0
  until [ -n "$leader" ]; do
    sleep 0.2
    waited=$((waited + 1))
    if [ "$waited" -gt 300 ] || [ "$(pgrep -fc "$WORK/$name")" -lt 3 ]; then
      echo "the $name cluster did not elect a leader; its logs:" >&2
      tail -n 5 "$WORK/$name"*.log >&2
      exit 1
    fi
    for i in 1 2 3; do
      l=$(curl -s -m 1 "http://127.0.0.1:${H[$i]}/v1/status/leader" 2>/dev/null | tr -d '"') || continue
      for j in 1 2 3; do [ "$l" = "127.0.0.1:${S[$j]}" ] && leader=$j; done
    done
  done
  "${BENCH_BIN:-$TERN}" bench kv --target tern --http-addr "127.0.0.1:${H[$leader]}" --clients 64 --duration "${DUR}s" --value-size 256
  local snaps; snaps=$(cat "$WORK/$name"*.log | grep -c "snapshot taken" || true)
  echo "snapshots_taken=$snaps"
  if [ -n "${LOGS:-}" ]; then mkdir -p "$LOGS" && cp "$WORK/$name"*.log "$LOGS/"; fi
  pkill -9 -f "$WORK/$name" || true
  sleep 1
}
BASE='performance { raft_multiplier = 1 }'
ROUNDS=${ROUNDS:-3}
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r: without snapshots"
  run_cluster "none$r-" "$BASE
raft_snapshot_threshold = 100000000" | tee "$WORK/out-none-$r"
  echo "== round $r: a snapshot about every second"
  run_cluster "every$r-" "$BASE
raft_snapshot_threshold = 1024
raft_snapshot_interval = \"1s\"" | tee "$WORK/out-every-$r"
done
python3 bench/snapshot-stall-summary.py "$WORK" "$ROUNDS"
echo "Machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
