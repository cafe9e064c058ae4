#!/usr/bin/env bash
# Tern next to etcd on this machine, in one run: a 3-server Tern cluster and a
# 3-member etcd cluster on loopback, both fsyncing every write, the same put
# workload (1 and 64 clients, 256-byte values, 20 s) and leader failover
# (kill -9 the leader, time to the next successful write; 5 trials each).
# It prints numbers; it asserts nothing. Usage: bench/compare-etcd.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-20}
TRIALS=${TRIALS:-5}
WORK=$(mktemp -d /tmp/tern-vs-etcd.XXXXXX)
trap 'pkill -9 -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v etcd >/dev/null; then
  echo "installing etcd-server and etcd-client (Debian)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
cargo build --release -q -p tern
TERN=$PWD/target/release/tern

. bench/lib.sh

# ---------- Tern ----------
declare -a TH TS TPID
for i in 1 2 3; do TH[$i]=$(port); TS[$i]=$(port); G[$i]=$(port); W[$i]=$(port); done
start_tern() {
  local i=$1 joins=()
  for j in 1 2 3; do [ "$j" = "$i" ] || joins+=("-retry-join=127.0.0.1:${G[$j]}"); done
  # raft_multiplier 1: election timeout 1000-2000 ms, like etcd's default 1000 ms.
  "$TERN" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$WORK/tern$i" \
    -hcl='performance { raft_multiplier = 1 }' \
    -bind=127.0.0.1 -client=127.0.0.1 -http-port="${TH[$i]}" -server-port="${TS[$i]}" -serf-lan-port="${G[$i]}" -serf-wan-port="${W[$i]}" -retry-interval=1s \
    "${joins[@]}" >>"$WORK/tern$i.log" 2>&1 &
  TPID[$i]=$!
  disown "$!" # no "Killed" line from bash when the failover test kills it
}
tern_leader() { # prints the index of the leader, or nothing
  for i in 1 2 3; do
    l=$(curl -s -m 1 "http://127.0.0.1:${TH[$i]}/v1/status/leader" 2>/dev/null | tr -d '"') || continue
    for j in 1 2 3; do [ "$l" = "127.0.0.1:${TS[$j]}" ] && { echo "$j"; return; }; done
  done
}
for i in 1 2 3; do start_tern "$i"; done
until [ -n "$(tern_leader)" ]; do sleep 0.2; done

# ---------- etcd ----------
declare -a EC EP EPID
for i in 1 2 3; do EC[$i]=$(port); EP[$i]=$(port); done
CLUSTER="e1=http://127.0.0.1:${EP[1]},e2=http://127.0.0.1:${EP[2]},e3=http://127.0.0.1:${EP[3]}"
start_etcd() {
  local i=$1
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${EC[$i]}" --advertise-client-urls "http://127.0.0.1:${EC[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
    --initial-cluster "$CLUSTER" --initial-cluster-state "${2:-new}" >>"$WORK/etcd$i.log" 2>&1 &
  EPID[$i]=$!
  disown "$!"
}
for i in 1 2 3; do start_etcd "$i"; done
ENDPOINTS="127.0.0.1:${EC[1]},127.0.0.1:${EC[2]},127.0.0.1:${EC[3]}"
until ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; do sleep 0.2; done
etcd_leader() {
  for i in 1 2 3; do
    if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${EC[$i]}" endpoint status -w json 2>/dev/null |
       python3 -c 'import sys,json; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then
      echo "$i"; return; fi
  done
}

# ---------- throughput and latency ----------
run() { # target addr clients
  "$TERN" bench kv --target "$1" --http-addr "$2" --clients "$3" --duration "${DUR}s" --value-size 256
}
declare -A R
for c in 1 64; do
  tl=$(tern_leader); el=$(etcd_leader)
  R[tern,$c]=$(run tern "127.0.0.1:${TH[$tl]}" "$c")
  R[etcd,$c]=$(run etcd "127.0.0.1:${EC[$el]}" "$c")
done

field() { echo "$1" | tr ' ' '\n' | sed -n "s|^$2=||p"; }
ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}' if b else 'n/a')"; }

# ---------- failover ----------
failover_tern() {
  local l; l=$(tern_leader)
  local others=(); for j in 1 2 3; do [ "$j" = "$l" ] || others+=("$j"); done
  kill -9 "${TPID[$l]}"; local t0; t0=$(date +%s.%N)
  while python3 -c "import sys; sys.exit(0 if $(date +%s.%N)-$t0 < 30 else 1)"; do
    for j in "${others[@]}"; do
      if [ "$(curl -s -m 0.25 -X PUT --data x "http://127.0.0.1:${TH[$j]}/v1/kv/failover")" = "true" ]; then
        python3 -c "print(f'{$(date +%s.%N)-$t0:.3f}')" >>"$WORK/failover-tern"; start_tern "$l"; sleep 3; return; fi
    done
  done
  echo 30 >>"$WORK/failover-tern"; start_tern "$l"; sleep 3
}
failover_etcd() {
  local l; l=$(etcd_leader)
  local others=(); for j in 1 2 3; do [ "$j" = "$l" ] || others+=("$j"); done
  kill -9 "${EPID[$l]}"; local t0; t0=$(date +%s.%N)
  while python3 -c "import sys; sys.exit(0 if $(date +%s.%N)-$t0 < 30 else 1)"; do
    for j in "${others[@]}"; do
      if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${EC[$j]}" --command-timeout=250ms put failover x >/dev/null 2>&1; then
        python3 -c "print(f'{$(date +%s.%N)-$t0:.3f}')" >>"$WORK/failover-etcd"; start_etcd "$l" existing; sleep 3; return; fi
    done
  done
  echo 30 >>"$WORK/failover-etcd"; start_etcd "$l" existing; sleep 3
}
for t in $(seq "$TRIALS"); do failover_tern; failover_etcd; done
mapfile -t TF <"$WORK/failover-tern"; mapfile -t EF <"$WORK/failover-etcd"
stats() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'median={statistics.median(v):.3f}s max={max(v):.3f}s')" "$@"; }

echo
echo "Machine: $(nproc) vCPU, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); etcd $(etcd --version | head -1 | awk '{print $3}')"
printf '%-10s %-5s %12s %10s %10s %10s %10s\n' system clients writes/s p50_ms p90_ms p99_ms max_ms
for c in 1 64; do for s in tern etcd; do
  r=${R[$s,$c]}
  printf '%-10s %-5s %12s %10s %10s %10s %10s\n' "$s" "$c" "$(field "$r" writes/s)" "$(field "$r" p50_ms)" "$(field "$r" p90_ms)" "$(field "$r" p99_ms)" "$(field "$r" max_ms)"
done; done
for c in 1 64; do
  echo "ratio tern/etcd at $c clients: writes/s $(ratio "$(field "${R[tern,$c]}" writes/s)" "$(field "${R[etcd,$c]}" writes/s)"), p50 $(ratio "$(field "${R[tern,$c]}" p50_ms)" "$(field "${R[etcd,$c]}" p50_ms)"), p99 $(ratio "$(field "${R[tern,$c]}" p99_ms)" "$(field "${R[etcd,$c]}" p99_ms)")"
done
echo "failover (kill -9 leader -> next successful write), $TRIALS trials: tern $(stats "${TF[@]}") | etcd $(stats "${EF[@]}")"
