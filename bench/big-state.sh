#!/usr/bin/env bash
# Tern holding a big state, on this machine: 3 servers (Consul's snapshot
# defaults), 1M keys of 256 B written by 64 clients, then: resident memory per
# server (and per key), how long each snapshot's durable write took (the
# agent logs any disk job over 100 ms), how long a follower takes to come
# back from kill -9 (recovery from its data dir), and how long a follower
# that missed more than the trailing logs takes to catch up (the leader's
# snapshot, streamed in pieces). It prints numbers; it asserts nothing.
# Usage: bench/big-state.sh [keys_per_client] (default 15625: 1M keys)
set -euo pipefail
cd "$(dirname "$0")/.."
KPC=${1:-15625}
WORK=$(mktemp -d /tmp/tern-bigstate.XXXXXX)
trap 'pkill -9 -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build --release -q -p tern
TERN=$PWD/target/release/tern
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now)-$1:.2f}')"; }
declare -a H S P
for i in 1 2 3; do H[$i]=$(port); S[$i]=$(port); done
start() {
  local i=$1 joins=()
  for j in 1 2 3; do [ "$j" = "$i" ] || joins+=("-retry-join=127.0.0.1:${S[$j]}"); done
  "$TERN" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$WORK/d$i" \
    -hcl='performance { raft_multiplier = 1 }' -bind=127.0.0.1 -client=127.0.0.1 \
    -http-port="${H[$i]}" -server-port="${S[$i]}" "${joins[@]}" >>"$WORK/s$i.log" 2>&1 &
  P[$i]=$!
  disown "$!"
}
leader() {
  for i in 1 2 3; do
    l=$(curl -s -m 1 "http://127.0.0.1:${H[$i]}/v1/status/leader" 2>/dev/null | tr -d '"') || continue
    for j in 1 2 3; do [ "$l" = "127.0.0.1:${S[$j]}" ] && { echo "$j"; return; }; done
  done
}
has_last() { curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:${H[$1]}/v1/kv/bench/63/$((KPC - 1))?stale" 2>/dev/null; }
for i in 1 2 3; do start "$i"; done
until [ -n "$(leader)" ]; do sleep 0.2; done
L=$(leader)
KEYS=$((64 * KPC))
echo "== writing $KEYS keys of 256 B (64 clients)"
t=$(now)
"$TERN" bench kv --target tern --http-addr "127.0.0.1:${H[$L]}" --clients 64 \
  --keys-per-client "$KPC" --duration "$((KPC / 150 + 30))s" --value-size 256
echo "took $(since "$t") s"
for i in 1 2 3; do until [ "$(has_last "$i")" = 200 ]; do sleep 0.5; done; done
sleep 35 # past raft_snapshot_interval (30 s): every server has snapshotted
for i in 1 2 3; do
  rss=$(ps -o rss= -p "${P[$i]}")
  echo "s$i: resident $((rss / 1024)) MiB, $(python3 -c "print(f'{$rss*1024/$KEYS:.0f}')") B per key; data dir $(du -sm "$WORK/d$i" | cut -f1) MiB"
done
echo "snapshot durable writes over 100 ms (agent logs):"
grep -h "durable writes took" "$WORK"/s*.log | sed 's/^.*durable/  durable/' | tail -6 || true
F=$(( L % 3 + 1 ))
echo "== restart: kill -9 s$F, start it, until it serves the last key"
kill -9 "${P[$F]}"; sleep 1; t=$(now); start "$F"
until [ "$(has_last "$F")" = 200 ]; do sleep 0.05; done
echo "restart to serving: $(since "$t") s"
echo "== install: s$F misses more than the trailing logs (10240), then catches up"
kill -9 "${P[$F]}"
"$TERN" bench kv --target tern --http-addr "127.0.0.1:${H[$L]}" --clients 64 \
  --keys-per-client 1 --duration 10s --value-size 256 >/dev/null
curl -s -X PUT --data done "http://127.0.0.1:${H[$L]}/v1/kv/marker" >/dev/null
t=$(now); start "$F"
until [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:${H[$F]}/v1/kv/marker?stale")" = 200 ]; do sleep 0.05; done
echo "catch-up through the leader's snapshot: $(since "$t") s ($(grep -c 'snapshot installed' "$WORK/s$F.log") installed)"
echo "Machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
