#!/usr/bin/env bash
# Resident memory of a one-server agent before and after one address opens
# N idle connections to its server port (each sends the Raft type byte and
# then nothing, as a stuck peer or an attacker would), with Consul's
# default rpc_max_conns_per_client (100) and with the limit off (0).
#
#   bash bench/conn-flood.sh [N]        # N defaults to 8000
#
# Builds the release binary; needs `ulimit -n` above N (the agent with no
# limit holds every connection).
set -euo pipefail
N=${1:-8000}
cd "$(dirname "$0")/.."
cargo build --release -q -p tern
BIN=target/release/tern
ulimit -n 20000 2>/dev/null || true

. bench/lib.sh
free_port() { port; }

run() {
  local limit=$1
  local dir; dir=$(mktemp -d)
  local http server lan wan
  http=$(free_port); server=$(free_port); lan=$(free_port); wan=$(free_port)
  "$BIN" agent -server -bootstrap-expect=1 -node=flood -data-dir="$dir" \
    -bind=127.0.0.1 -client=127.0.0.1 -http-port="$http" -server-port="$server" \
    -serf-lan-port="$lan" -serf-wan-port="$wan" \
    -hcl="performance { raft_multiplier = 1 }
limits { rpc_max_conns_per_client = $limit }" >"$dir/agent.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    curl -sf "127.0.0.1:$http/v1/status/leader" | grep -q "$server" && break
    sleep 0.1
  done
  python3 - "$pid" "$server" "$N" "$limit" <<'PY'
import resource, socket, sys, time
pid, port, n, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) / 1024
before = rss()
conns, refused = [], 0
t0 = time.time()
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"\x01")
        conns.append(s)
    except OSError:
        refused += 1
took = time.time() - t0
time.sleep(2)
# Which connections the agent closed: a read that sees EOF or a reset.
open_ = 0
for s in conns:
    s.setblocking(False)
    try:
        open_ += s.recv(1) != b""
    except BlockingIOError:
        open_ += 1
    except OSError:
        pass
after = rss()
print(f"rpc_max_conns_per_client={limit:>4}: {n} connection attempts in {took:.2f} s; "
      f"held open by the agent: {open_}; resident {before:.1f} MB -> {after:.1f} MB "
      f"(+{after - before:.1f} MB)")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

run 0
run 100
