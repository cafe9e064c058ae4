#!/usr/bin/env bash
# What parked blocking queries cost (issue 9, deliverable 7): on one
# `tern agent -dev`, the rate of writes to other keys with 0 and with
# WATCHERS parked blocking queries on one key, then the time from one write
# to that key until every watcher has its answer. A benchmark: it prints
# numbers and asserts nothing.
#
#   bench/parked-watchers.sh [WATCHERS] [SECONDS]     (defaults 5000, 10)
#
# Needs: a release build (built here), python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
WATCHERS=${1:-5000}
SECONDS_PER_RUN=${2:-10}
cargo build --release -q -p tern
TERN=target/release/tern
PORT=$((20000 + RANDOM % 10000))
ulimit -n $((WATCHERS * 2 + 1024))
DIR=$(mktemp -d)
# Every watcher is a connection from 127.0.0.1: lift Consul's default of
# 200 per client address, as a Consul operator running this would.
"$TERN" agent -dev -http-port "$PORT" -server-port $((PORT + 1)) \
  -serf-lan-port $((PORT + 2)) -serf-wan-port -1 \
  -hcl 'limits { http_max_conns_per_client = 0 }' >"$DIR/agent.log" 2>&1 &
AGENT=$!
trap 'kill $AGENT 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/v1/status/leader" | grep -q ':' && break
  sleep 0.1
done
curl -sf -X PUT -d start "http://127.0.0.1:$PORT/v1/kv/watched" >/dev/null

rate() {
  "$TERN" bench kv --http-addr "127.0.0.1:$PORT" --clients 16 \
    --duration "${SECONDS_PER_RUN}s" --value-size 64 | tee -a "$DIR/bench.txt"
}

echo "== writes to other keys, no watchers"
rate
echo "== writes to other keys, $WATCHERS watchers parked on 'watched'"
python3 - "$PORT" "$WATCHERS" "$TERN" "$SECONDS_PER_RUN" <<'PY'
import asyncio, subprocess, sys, time, urllib.request

port, n, tern, secs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
base = f"http://127.0.0.1:{port}"
index = urllib.request.urlopen(f"{base}/v1/kv/watched").headers["X-Consul-Index"]

async def watch(i, parked, done):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET /v1/kv/watched?index={index}&wait=10m HTTP/1.1\r\n"
            f"Host: x\r\n\r\n".encode())
    await w.drain()
    parked.append(i)
    line = await r.readline()
    done.append(time.monotonic())
    w.close()
    return line.startswith(b"HTTP/1.1 200")

async def main():
    parked, done = [], []
    tasks = [asyncio.create_task(watch(i, parked, done)) for i in range(n)]
    while len(parked) < n:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # let the last ones reach the server and park
    assert not done, f"{len(done)} watchers returned before the write"
    proc = await asyncio.create_subprocess_exec(
        tern, "bench", "kv", "--http-addr", f"127.0.0.1:{port}", "--clients", "16",
        "--duration", f"{secs}s", "--value-size", "64")
    await proc.wait()
    assert not done, f"{len(done)} watchers woke on writes to other keys"
    t0 = time.monotonic()
    req = urllib.request.Request(f"{base}/v1/kv/watched", data=b"changed", method="PUT")
    await asyncio.get_running_loop().run_in_executor(None, urllib.request.urlopen, req)
    ok = await asyncio.gather(*tasks)
    last = max(done) - t0
    done.sort()
    half = done[len(done) // 2] - t0
    print(f"one write to the watched key answered {sum(ok)}/{n} watchers: "
          f"median {half * 1000:.0f} ms, last {last * 1000:.0f} ms after the write")

asyncio.run(main())
PY
