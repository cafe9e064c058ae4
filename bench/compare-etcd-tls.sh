#!/usr/bin/env bash
# Tern next to etcd with TLS on both sides (issue 11, deliverable 10), in one
# run, from a clean clone: certificates from `tern tls ca/cert create` (one CA
# for both systems; etcd takes Tern's server certificates, which carry
# 127.0.0.1 and both serverAuth and clientAuth), then for each of RUNS rounds
# and each of plain and tls:
#   - a 3-server Tern cluster (tls: verify_incoming, verify_outgoing,
#     verify_server_hostname between servers; clients on the HTTPS API with a
#     client certificate) and a 3-member etcd cluster (tls: --peer-cert-file
#     ... --peer-client-cert-auth; clients on https with --client-cert-auth),
#     both fsyncing every write;
#   - `tern bench kv` (256 B puts, 1 and 64 clients, DUR seconds) against each
#     leader, over https with the client certificate in the tls mode;
# then the cost of one handshake, full and resumed, one connection at a time
# (`tern bench tls`): Tern's HTTPS API, Tern's server port (native TLS, ALPN
# tern/rpc), etcd's client port (same client, a GET it answers 404).
# Prints medians over the rounds, the runs themselves and ratios; asserts
# nothing. Usage: bench/compare-etcd-tls.sh [seconds]   (RUNS=3, COUNT=500)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
RUNS=${RUNS:-3}
COUNT=${COUNT:-500}
WORK=$(mktemp -d /tmp/tern-vs-etcd-tls.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v etcd >/dev/null; then
  echo "installing etcd-server and etcd-client (Debian)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
cargo build --release -q -p tern
TERN=$PWD/target/release/tern

. bench/lib.sh

# ---------- certificates ----------
(cd "$WORK" && "$TERN" tls ca create >/dev/null &&
  for n in s1 s2 s3; do "$TERN" tls cert create -server -node "$n" >/dev/null; done &&
  "$TERN" tls cert create -cli >/dev/null)
CA=$WORK/consul-agent-ca.pem
CERT() { echo "$WORK/dc1-server-consul-$(($1 - 1)).pem"; }
KEY() { echo "$WORK/dc1-server-consul-$(($1 - 1))-key.pem"; }
CLI_CERT=$WORK/dc1-cli-consul-0.pem
CLI_KEY=$WORK/dc1-cli-consul-0-key.pem
CLIENT_TLS=(-ca-file "$CA" -client-cert "$CLI_CERT" -client-key "$CLI_KEY")

tern_hcl() { # index mode https-port
  echo 'performance { raft_multiplier = 1 }'
  [ "$2" = tls ] || return 0
  cat <<EOF
tls {
  defaults {
    ca_file   = "$CA"
    cert_file = "$(CERT "$1")"
    key_file  = "$(KEY "$1")"
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}
ports {
  https = $3
}
EOF
}

# ---------- clusters ----------
declare -a TH TS TG THS EC EP
start_tern() { # mode
  local mode=$1 i j
  for i in 1 2 3; do TH[$i]=$(port); TS[$i]=$(port); TG[$i]=$(port); THS[$i]=$(port); done
  for i in 1 2 3; do
    local joins=()
    for j in 1 2 3; do [ "$j" = "$i" ] || joins+=("-retry-join=127.0.0.1:${TG[$j]}"); done
    TERN_LOG=warn "$TERN" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$WORK/tern-$mode-$i-$RANDOM" \
      -hcl="$(tern_hcl "$i" "$mode" "${THS[$i]}")" \
      -bind=127.0.0.1 -client=127.0.0.1 -http-port="${TH[$i]}" -server-port="${TS[$i]}" \
      -serf-lan-port="${TG[$i]}" -serf-wan-port=-1 -retry-interval=1s \
      "${joins[@]}" >>"$WORK/tern-$mode-$i.log" 2>&1 &
    PIDS+=($!)
  done
  until [ -n "$(tern_leader)" ]; do sleep 0.2; done
}
tern_leader() {
  local i j l
  for i in 1 2 3; do
    l=$(curl -s -m 1 "http://127.0.0.1:${TH[$i]}/v1/status/leader" 2>/dev/null | tr -d '"') || continue
    for j in 1 2 3; do [ "$l" = "127.0.0.1:${TS[$j]}" ] && { echo "$j"; return; }; done
  done
}
start_etcd() { # mode
  local mode=$1 i s=http
  [ "$mode" = tls ] && s=https
  for i in 1 2 3; do EC[$i]=$(port); EP[$i]=$(port); done
  local cluster="e1=$s://127.0.0.1:${EP[1]},e2=$s://127.0.0.1:${EP[2]},e3=$s://127.0.0.1:${EP[3]}"
  for i in 1 2 3; do
    local tls=()
    if [ "$mode" = tls ]; then
      tls=(--cert-file "$(CERT "$i")" --key-file "$(KEY "$i")" --trusted-ca-file "$CA" --client-cert-auth
        --peer-cert-file "$(CERT "$i")" --peer-key-file "$(KEY "$i")" --peer-trusted-ca-file "$CA" --peer-client-cert-auth)
    fi
    etcd --name "e$i" --data-dir "$WORK/etcd-$mode-$i-$RANDOM" \
      --listen-client-urls "$s://127.0.0.1:${EC[$i]}" --advertise-client-urls "$s://127.0.0.1:${EC[$i]}" \
      --listen-peer-urls "$s://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "$s://127.0.0.1:${EP[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new "${tls[@]}" >>"$WORK/etcd-$mode-$i.log" 2>&1 &
    PIDS+=($!)
  done
  until [ -n "$(etcd_leader "$mode")" ]; do sleep 0.2; done
}
etcdctl_() { # mode endpoint args...
  local mode=$1 ep=$2; shift 2
  if [ "$mode" = tls ]; then
    ETCDCTL_API=3 etcdctl --endpoints "https://$ep" --cacert "$CA" --cert "$CLI_CERT" --key "$CLI_KEY" "$@"
  else
    ETCDCTL_API=3 etcdctl --endpoints "$ep" "$@"
  fi
}
etcd_leader() { # mode
  local i
  for i in 1 2 3; do
    if etcdctl_ "$1" "127.0.0.1:${EC[$i]}" endpoint status -w json 2>/dev/null |
      python3 -c 'import sys,json; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then
      echo "$i"; return
    fi
  done
}
stop_all() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# ---------- rounds ----------
RES=$WORK/results
: >"$RES"
kv() { # system mode clients addr
  local tls=() scheme=http
  if [ "$2" = tls ]; then tls=("${CLIENT_TLS[@]}"); scheme=https; fi
  local r
  r=$("$TERN" bench kv -target "$1" -http-addr "$scheme://$4" -clients "$3" -duration "${DUR}s" -value-size 256 "${tls[@]}" 2>/dev/null | sed -n 1p)
  echo "kv $1 $2 $3 $r" >>"$RES"
}
for round in $(seq "$RUNS"); do
  for mode in plain tls; do
    echo "round $round/$RUNS: $mode" >&2
    start_tern "$mode"
    start_etcd "$mode"
    for c in 1 64; do
      tl=$(tern_leader)
      if [ "$mode" = tls ]; then kv tern "$mode" "$c" "127.0.0.1:${THS[$tl]}"; else kv tern "$mode" "$c" "127.0.0.1:${TH[$tl]}"; fi
      el=$(etcd_leader "$mode")
      kv etcd "$mode" "$c" "127.0.0.1:${EC[$el]}"
    done
    if [ "$mode" = tls ] && [ "$round" -le 3 ]; then
      # Handshakes, one at a time, against the leaders (the rest idle).
      tl=$(tern_leader); el=$(etcd_leader tls)
      for resume in false true; do
        r=$("$TERN" bench tls -mode https -addr "127.0.0.1:${THS[$tl]}" -resume "$resume" -count "$COUNT" "${CLIENT_TLS[@]}")
        echo "hs tern-https $resume $r" >>"$RES"
        r=$("$TERN" bench tls -mode rpc -addr "127.0.0.1:${TS[$tl]}" -tls-server-name "s$tl.server.dc1.consul" \
          -resume "$resume" -count "$COUNT" -ca-file "$CA" -client-cert "$(CERT 1)" -client-key "$(KEY 1)")
        echo "hs tern-rpc $resume $r" >>"$RES"
        r=$("$TERN" bench tls -mode https -addr "127.0.0.1:${EC[$el]}" -resume "$resume" -count "$COUNT" "${CLIENT_TLS[@]}")
        echo "hs etcd-https $resume $r" >>"$RES"
      done
    fi
    stop_all
  done
done

# ---------- report ----------
echo
echo "Machine: $(nproc) vCPU, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); etcd $(etcd --version | head -1 | awk '{print $3}'); $RUNS rounds of ${DUR}s, medians (all runs below)"
python3 - "$RES" <<'PY'
import statistics, sys
kv, hs = {}, {}
for line in open(sys.argv[1]):
    w = line.split()
    fields = dict(x.split("=", 1) for x in w if "=" in x)
    if w[0] == "kv":
        kv.setdefault((w[1], w[2], w[3]), []).append(fields)
    else:
        hs.setdefault((w[1], w[2]), []).append(fields)
med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
print(f"{'system':8} {'mode':6} {'clients':>7} {'writes/s':>9} {'p50_ms':>8} {'p99_ms':>8}   runs (writes/s)")
for c in ("1", "64"):
    for mode in ("plain", "tls"):
        for s in ("tern", "etcd"):
            rs = kv.get((s, mode, c), [])
            if not rs:
                continue
            runs = " ".join(r["writes/s"] for r in rs)
            print(f"{s:8} {mode:6} {c:>7} {med(rs,'writes/s'):9.0f} {med(rs,'p50_ms'):8.2f} {med(rs,'p99_ms'):8.2f}   {runs}")
def ratio(a, b):
    return f"{a/b:.2f}" if b else "n/a"
for c in ("1", "64"):
    for s in ("tern", "etcd"):
        p, t = kv.get((s, "plain", c)), kv.get((s, "tls", c))
        if p and t:
            print(f"{s} at {c} clients, tls/plain: writes/s {ratio(med(t,'writes/s'), med(p,'writes/s'))}, p50 {ratio(med(t,'p50_ms'), med(p,'p50_ms'))}, p99 {ratio(med(t,'p99_ms'), med(p,'p99_ms'))}")
    for mode in ("plain", "tls"):
        a, b = kv.get(("tern", mode, c)), kv.get(("etcd", mode, c))
        if a and b:
            print(f"tern/etcd {mode} at {c} clients: writes/s {ratio(med(a,'writes/s'), med(b,'writes/s'))}, p50 {ratio(med(a,'p50_ms'), med(b,'p50_ms'))}, p99 {ratio(med(a,'p99_ms'), med(b,'p99_ms'))}")
print()
print("handshakes, one connection at a time (handshake = TCP connect + TLS as the client sees it; reconnect = + first answer), medians of the runs' medians:")
print(f"{'target':13} {'resume':6} {'resumed':>8} {'per_s':>7} {'hs_p50_us':>10} {'hs_p99_us':>10} {'rc_p50_us':>10} {'rc_p99_us':>10}   runs (per_s)")
for (t, resume), rs in sorted(hs.items()):
    print(f"{t:13} {resume:6} {med(rs,'resumed'):8.0f} {med(rs,'per_s'):7.0f} {med(rs,'handshake_p50_us'):10.0f} {med(rs,'handshake_p99_us'):10.0f} {med(rs,'reconnect_p50_us'):10.0f} {med(rs,'reconnect_p99_us'):10.0f}   {' '.join(r['per_s'] for r in rs)}")
for t in sorted({t for t, _ in hs}):
    f, r = hs.get((t, "false")), hs.get((t, "true"))
    if f and r:
        print(f"{t}: resumed/full handshake time {ratio(med(r,'handshake_p50_us'), med(f,'handshake_p50_us'))}, reconnect {ratio(med(r,'reconnect_p50_us'), med(f,'reconnect_p50_us'))}")
PY
