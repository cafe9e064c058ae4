#!/usr/bin/env bash
# What TLS costs on the server port (README, TLS): handshakes per second on
# the native-TLS path (mutual TLS, ECDSA P-256), new and resumed, measured
# with `openssl s_time`; then a three-server cluster's KV writes with and
# without TLS between the servers (`tern bench kv` through the leader's
# HTTP API, so only server-to-server traffic is encrypted).
#
#   cargo build --release -p tern && bench/tls.sh [seconds]
#
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
secs=${1:-10}
tern=${TERN:-$(dirname "$0")/../target/release/tern}
tern=$(realpath "$tern")
work=$(mktemp -d /tmp/tern-tls-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
"$tern" tls ca create >/dev/null
for n in s1 s2 s3; do "$tern" tls cert create -server -node "$n" >/dev/null; done
"$tern" tls cert create -cli >/dev/null

tls_hcl() { # $1: certificate number
  cat <<EOF
tls {
  defaults {
    ca_file   = "$work/consul-agent-ca.pem"
    cert_file = "$work/dc1-server-consul-$1.pem"
    key_file  = "$work/dc1-server-consul-$1-key.pem"
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}
EOF
}

# start NAME HTTP SERVER SERFLAN EXPECT HCL JOIN...
start() {
  local name=$1 http=$2 server=$3 lan=$4 expect=$5 hcl=$6
  shift 6
  local joins=()
  for j in "$@"; do joins+=("-retry-join=127.0.0.1:$j"); done
  TERN_LOG=warn "$tern" agent -server -bootstrap-expect="$expect" -node="$name" \
    -data-dir="$work/data-$name-$RANDOM" -bind=127.0.0.1 -client=127.0.0.1 \
    -http-port="$http" -server-port="$server" -serf-lan-port="$lan" -serf-wan-port=-1 \
    -retry-interval=1s -hcl="performance { raft_multiplier = 1 }" -hcl="$hcl" \
    "${joins[@]}" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

wait_leader() { # $1: http port
  for _ in $(seq 1 100); do
    if curl -sf "127.0.0.1:$1/v1/status/leader" | grep -q ':'; then return 0; fi
    sleep 0.2
  done
  echo "no leader" >&2
  return 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

echo "== handshakes on the native-TLS path (mutual TLS, ECDSA P-256), ${secs}s each"
start solo 18500 18300 18301 1 "$(tls_hcl 0)"
wait_leader 18500
for mode in -new -reuse; do
  echo "-- openssl s_time $mode"
  openssl s_time -connect 127.0.0.1:18300 "$mode" -time "$secs" \
    -cert dc1-cli-consul-0.pem -key dc1-cli-consul-0-key.pem -CAfile consul-agent-ca.pem \
    2>/dev/null | grep -E 'connections in|connections/user sec' || true
done
stop_all

for kind in plain tls; do
  echo "== three servers, $kind between them: tern bench kv through the leader, ${secs}s"
  for i in 1 2 3; do
    hcl=""
    if [ "$kind" = tls ]; then hcl=$(tls_hcl $((i - 1))); fi
    start "s$i" $((18510 + i)) $((18310 + i)) $((18320 + i)) 3 "$hcl" 18321 18322 18323
  done
  wait_leader 18511
  leader=$(curl -s 127.0.0.1:18511/v1/status/leader | tr -d '"')
  lport=${leader##*:}
  http=$((lport + 200))
  for clients in 1 64; do
    echo "-- $clients clients"
    "$tern" bench kv -http-addr "127.0.0.1:$http" -clients "$clients" -duration "${secs}s" 2>/dev/null
  done
  stop_all
done
