#!/usr/bin/env bash
# Watch fan-out through a client agent, side by side with etcd (issue 9,
# deliverable 7). In one run: a 3-server Tern cluster plus one client agent
# (`tern agent` without -server, -retry-join to the servers), and a 3-member
# etcd cluster, all on loopback with fsync on. For each system:
#
#   - writes/s to other keys with no watchers (`tern bench kv`, 16 clients,
#     10 s; through the client agent, or to etcd member 1's JSON gateway);
#   - WATCHERS watches of one key parked (Tern: blocking queries
#     `GET /v1/kv/watched?index=N&wait=10m` on the CLIENT agent's HTTP port;
#     etcd: grpc-gateway `POST /v3/watch` streams on member 1), held by
#     PROCS Python processes (asyncio raw sockets, standard library only);
#   - CPU seconds of every agent/member over 10 s with all watches parked and
#     nothing written;
#   - writes/s to other keys with the watches parked (none may wake);
#   - WRITES writes to the watched key, one at a time, each after every
#     watcher has its answer and has parked again: write-to-first-answer and
#     write-to-last-answer p50/p99.
#
# A benchmark: it prints numbers and asserts nothing beyond "every watcher
# got every answer, none woke for nothing".
#
#   bench/watch-fanout.sh [WATCHERS] [WRITES]      (defaults 10000, 20)
#   PROCS=4 (watcher processes), BENCH_S=10 (seconds per other-key run),
#   ONLY=tern|etcd (skip the other system), NO_BUILD=1 (use target/release/tern as is),
#   VIA=follower|leader (move leadership so the client agent's server is a
#   follower, whose forwarded watches wait on the leader, or the leader)
set -euo pipefail
cd "$(dirname "$0")/.."
WATCHERS=${1:-10000}
WRITES=${2:-20}
PROCS=${PROCS:-4}
BENCH_S=${BENCH_S:-10}
ONLY=${ONLY:-}
# Each agent/member holds WATCHERS sockets; raise the soft limit as far as
# the hard one allows (20,000 in this VM's container).
WANT=$((WATCHERS + 4096)); HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] || [ "$HARD" -ge "$WANT" ] || WANT=$HARD
ulimit -n "$WANT"
WORK=$(mktemp -d /tmp/tern-fanout.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v etcd >/dev/null; then
  echo "installing etcd-server and etcd-client (Debian)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p tern
TERN=$PWD/target/release/tern
. bench/lib.sh
wait_for() { # seconds command...
  local t=$1; shift
  for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for: $*" >&2; return 1
}

# ---------- Tern: 3 servers and a client agent ----------
declare -a TH TS G W
for i in 1 2 3; do TH[$i]=$(port); TS[$i]=$(port); G[$i]=$(port); W[$i]=$(port); done
TPIDS=""
for i in 1 2 3; do
  joins=()
  for j in 1 2 3; do [ "$j" = "$i" ] || joins+=("-retry-join=127.0.0.1:${G[$j]}"); done
  "$TERN" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$WORK/tern$i" \
    -hcl='performance { raft_multiplier = 1 }' \
    -bind=127.0.0.1 -client=127.0.0.1 -http-port="${TH[$i]}" -server-port="${TS[$i]}" \
    -serf-lan-port="${G[$i]}" -serf-wan-port="${W[$i]}" -retry-interval=1s \
    "${joins[@]}" >"$WORK/tern$i.log" 2>&1 &
  PIDS+=($!)
  TPIDS+="s$i=$!,"
done
CH=$(port)
# The watchers all connect from 127.0.0.1: lift the per-client HTTP
# connection limit (Consul's default 200) on the agent they use.
"$TERN" agent -node=client -data-dir="$WORK/client" -bind=127.0.0.1 -client=127.0.0.1 \
  -hcl='limits { http_max_conns_per_client = 0 }' -http-port="$CH" -serf-lan-port="$(port)" -retry-interval=1s \
  -retry-join="127.0.0.1:${G[1]}" -retry-join="127.0.0.1:${G[2]}" >"$WORK/client.log" 2>&1 &
CLIENT_PID=$!
PIDS+=($!)
TPIDS="client=$!,$TPIDS"
# The client answers a KV write once it knows the servers and they a leader.
wait_for 60 curl -sf -X PUT -d x "http://127.0.0.1:$CH/v1/kv/ready"
# Which server the client's calls go to (its one RPC connection), and
# whether that server leads (a follower forwards the watches to the leader).
client_server() {
  CLIENT_SERVER="?"; CLIENT_I=""
  LEADER=$(curl -sf "http://127.0.0.1:$CH/v1/status/leader" | tr -d '"')
  for i in 1 2 3; do
    if ss -tnpH state established "( dport = :${TS[$i]} )" | grep -q "pid=$CLIENT_PID,"; then
      CLIENT_I=$i
      CLIENT_SERVER="s$i ($([ "$LEADER" = "127.0.0.1:${TS[$i]}" ] && echo leader || echo follower))"
    fi
  done
}
client_server
# VIA=follower|leader: move leadership so the client's server is (or is not)
# the leader, to measure the forwarding path or the direct one.
if [ -n "${VIA:-}" ] && [ -n "$CLIENT_I" ]; then
  case "$VIA:$CLIENT_SERVER" in
    follower:*"(leader)") "$TERN" operator raft transfer-leader -http-addr="127.0.0.1:${TH[$CLIENT_I]}" >/dev/null ;;
    leader:*"(follower)")
      id=$(curl -sf "http://127.0.0.1:${TH[$CLIENT_I]}/v1/operator/raft/configuration" |
        python3 -c "import sys,json; print([s['ID'] for s in json.load(sys.stdin)['Servers'] if s['Node']=='s$CLIENT_I'][0])")
      "$TERN" operator raft transfer-leader -http-addr="127.0.0.1:${TH[$CLIENT_I]}" -id="$id" >/dev/null ;;
  esac
  sleep 1
  client_server
fi

# ---------- etcd: 3 members ----------
declare -a EC EP
for i in 1 2 3; do EC[$i]=$(port); EP[$i]=$(port); done
CLUSTER="e1=http://127.0.0.1:${EP[1]},e2=http://127.0.0.1:${EP[2]},e3=http://127.0.0.1:${EP[3]}"
EPIDS=""
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${EC[$i]}" --advertise-client-urls "http://127.0.0.1:${EC[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!)
  EPIDS+="e$i=$!,"
done
wait_for 60 env ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${EC[1]},127.0.0.1:${EC[2]},127.0.0.1:${EC[3]}" endpoint health
E1_ROLE=$(ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${EC[1]}" endpoint status -w json |
  python3 -c 'import sys,json; s=json.load(sys.stdin)[0]["Status"]; print("leader" if s["leader"]==s["header"]["member_id"] else "follower")')

bench() { # target addr
  "$TERN" bench kv --target "$1" --http-addr "$2" --clients 16 --duration "${BENCH_S}s" --value-size 64 2>/dev/null
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s|^$2=||p"; }

declare -A R FREE
run_one() { # system addr pids
  local s=$1 addr=$2 pids=$3
  FREE[$s]=$(bench "$s" "$addr")
  echo "== $s, no watchers: $(field "${FREE[$s]}" writes/s) writes/s to other keys" >&2
  R[$s]=$(python3 bench/watch-fanout.py "$s" "$addr" "$WATCHERS" "$WRITES" "$PROCS" "$pids" \
    "$TERN" bench kv --target "$s" --http-addr "$addr" --clients 16 --duration "${BENCH_S}s" --value-size 64)
  echo "== $s, $WATCHERS watchers: ${R[$s]}" >&2
}
[ "$ONLY" = etcd ] || run_one tern "127.0.0.1:$CH" "$TPIDS"
[ "$ONLY" = tern ] || run_one etcd "127.0.0.1:${EC[1]}" "$EPIDS"

ratio() { python3 -c "a,b='$1','$2'; print(f'{float(a)/float(b):.2f}' if a and b and float(b) else 'n/a')"; }
cpu_sum() { # result names...
  local r=$1; shift
  python3 -c "import sys; print(f'{sum(float(x) for x in sys.argv[1:] if x):.2f}')" \
    $(for n in "$@"; do field "$r" "cpu_idle_${n}_s"; done)
}
echo
echo "Machine: $(nproc) vCPU, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average now: $(cut -d' ' -f1-3 /proc/loadavg); etcd $(etcd --version | head -1 | awk '{print $3}'); watchers $WATCHERS in $PROCS Python processes; the Tern client's server was $CLIENT_SERVER; etcd member 1 (watched, written) was the $E1_ROLE"
printf '%-5s %9s %12s %12s %12s %12s %16s %16s %12s %12s %8s\n' system watchers last_p50_ms last_p99_ms first_p50_ms last_max_ms cpu_parked_s cpu_parked_srv_s w/s_without w/s_parked busy%
for s in tern etcd; do
  r=${R[$s]:-}
  [ -n "$r" ] || continue
  if [ "$s" = tern ]; then front=$(field "$r" cpu_idle_client_s); srv=$(cpu_sum "$r" s1 s2 s3)
  else front="-"; srv=$(cpu_sum "$r" e1 e2 e3); fi
  printf '%-5s %9s %12s %12s %12s %12s %16s %16s %12s %12s %8s\n' "$s" "$WATCHERS" \
    "$(field "$r" last_p50_ms)" "$(field "$r" last_p99_ms)" "$(field "$r" first_p50_ms)" "$(field "$r" last_max_ms)" \
    "$front" "$srv" "$(field "${FREE[$s]}" writes/s)" "$(field "$r" parked_writes_per_s)" "$(field "$r" machine_busy_pct)"
  echo "$s raw: ${R[$s]}"
done
if [ -n "${R[tern]:-}" ] && [ -n "${R[etcd]:-}" ]; then
  echo "ratio tern/etcd: write-to-last p50 $(ratio "$(field "${R[tern]}" last_p50_ms)" "$(field "${R[etcd]}" last_p50_ms)"), p99 $(ratio "$(field "${R[tern]}" last_p99_ms)" "$(field "${R[etcd]}" last_p99_ms)"), first p50 $(ratio "$(field "${R[tern]}" first_p50_ms)" "$(field "${R[etcd]}" first_p50_ms)")"
fi
for s in tern etcd; do
  [ -n "${R[$s]:-}" ] || continue
  echo "$s other-key writes/s parked/without: $(ratio "$(field "${R[$s]}" parked_writes_per_s)" "$(field "${FREE[$s]}" writes/s)")"
done
