#!/usr/bin/env bash
# Tern holding a big state, on this machine: 3 servers (Consul's snapshot
# defaults), 1M keys of 256 B written once each by 64 clients
# (bench/kv-load.py), then: resident memory per server (and per key), how
# long each snapshot file took to write (the agent logs each one, and any disk
# job over 100 ms), how long a follower takes to come back from kill -9
# (recovery from its data dir), and how long a follower that missed more than
# the trailing logs takes to catch up (the leader's snapshot, streamed in
# pieces). Then, with the Tern servers stopped, the same
# for etcd holding the same keys (bench/big-state-etcd.sh), and both side by
# side. It prints numbers; it asserts nothing.
# Usage: bench/big-state.sh [keys_per_client] (default 15625: 1M keys)
# ETCD=0 measures Tern only; TERN_BIN=path/to/tern runs that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
KPC=${1:-15625}
WORK=$(mktemp -d /tmp/tern-bigstate.XXXXXX)
declare -a H S P
stop_tern() { for p in "${P[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap 'stop_tern; rm -rf "$WORK"' EXIT
# TERN_BIN=path runs another build (an A/B of two commits on one machine).
if [ -z "${TERN_BIN:-}" ]; then
  cargo build --release -q -p tern
fi
TERN=${TERN_BIN:-$PWD/target/release/tern}
RESULTS=$WORK/results
. bench/lib.sh
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now)-$1:.2f}')"; }
res() { echo "tern.$1=$2" >>"$RESULTS"; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s|^$2=||p"; }
for i in 1 2 3; do H[$i]=$(port); S[$i]=$(port); G[$i]=$(port); W[$i]=$(port); done
start() {
  local i=$1 joins=()
  for j in 1 2 3; do [ "$j" = "$i" ] || joins+=("-retry-join=127.0.0.1:${G[$j]}"); done
  "$TERN" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$WORK/d$i" \
    -hcl='performance { raft_multiplier = 1 }' -bind=127.0.0.1 -client=127.0.0.1 \
    -http-port="${H[$i]}" -server-port="${S[$i]}" -serf-lan-port="${G[$i]}" -serf-wan-port="${W[$i]}" -retry-interval=1s "${joins[@]}" >>"$WORK/s$i.log" 2>&1 &
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
echo "== writing $KEYS keys of 256 B (64 clients, each key once: bench/kv-load.py)"
t=$(now)
LOAD=$(python3 bench/kv-load.py tern "127.0.0.1:${H[$L]}" 64 "$KPC" 256)
echo "$LOAD"
echo "took $(since "$t") s"
for f in writes/s writes errors p50_ms p99_ms max_ms duration_s loader_cpu_s; do res "load.$f" "$(field "$LOAD" "$f")"; done
declare -a SN
for i in 1 2 3; do
  until [ "$(has_last "$i")" = 200 ]; do sleep 0.5; done
  SN[$i]=$(grep -c "written beside the log" "$WORK/s$i.log" || true)
done
# Memory is read once every server has snapshotted after the load and
# compacted its log: the snapshot check runs every raft_snapshot_interval
# (30 s) staggered up to twice that, so a fixed wait could read a server
# that still held the whole load in its log. The freed entries go back a
# bounded number per input (RaftLog::reclaim), a few seconds when idle.
t=$(now)
for i in 1 2 3; do
  for _ in $(seq 240); do
    [ "$(grep -c "written beside the log" "$WORK/s$i.log" || true)" -gt "${SN[$i]}" ] && break
    sleep 0.5
  done
done
sleep 10
echo "every server snapshotted after the load within $(since "$t") s"
for i in 1 2 3; do
  read -r rss anon file < <(awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} END{print r, a, f}' "/proc/${P[$i]}/status")
  per=$(python3 -c "print(f'{$rss*1024/$KEYS:.0f}')")
  dir=$(du -sm "$WORK/d$i" | cut -f1)
  echo "s$i: resident $((rss / 1024)) MiB ($((anon / 1024)) anonymous, $((file / 1024)) file-backed), $per B per key; data dir $dir MiB"
  res "s$i.rss_mib" $((rss / 1024)); res "s$i.anon_mib" $((anon / 1024)); res "s$i.file_mib" $((file / 1024))
  res "s$i.bytes_per_key" "$per"; res "s$i.datadir_mib" "$dir"
done
echo "snapshot files written beside the log, and durable writes over 100 ms (agent logs):"
grep -h "written beside the log\|durable writes took" "$WORK"/s*.log | sed 's/^.*\(snapshot file\|durable\)/  \1/' | tail -12 || true
python3 - "$WORK" "$RESULTS" <<'EOF'
import re, sys
ms, size, stall = [], 0, []
for i in (1, 2, 3):
    for line in open(f"{sys.argv[1]}/s{i}.log", errors="replace"):
        m = re.search(r"snapshot file of (\d+) bytes written beside the log in (\d+) ms", line)
        if m:
            size = max(size, int(m[1])); ms.append(int(m[2]))
        m = re.search(r"durable writes took (\d+) ms", line)
        if m:
            stall.append(int(m[1]))
with open(sys.argv[2], "a") as f:
    f.write(f"tern.own_snapshots={len(ms)}\n")
    f.write(f"tern.own_snapshot_ms={min(ms, default=0)}-{max(ms, default=0)}\n")
    f.write(f"tern.snapshot_mib={size / 1048576:.0f}\n")
    f.write(f"tern.slow_disk_jobs={len(stall)}\ntern.slow_disk_max_ms={max(stall, default=0)}\n")
EOF
L=$(leader) # leadership may have moved during the load
F=$(( L % 3 + 1 ))
echo "== restart: kill -9 s$F, start it, until it serves the last key"
kill -9 "${P[$F]}"; sleep 1; t=$(now); start "$F"
until [ "$(has_last "$F")" = 200 ]; do sleep 0.05; done
took=$(since "$t")
echo "restart to serving: $took s"
res restart_s "$took"
echo "== install: s$F misses more than the trailing logs (10240) and the leader has snapshotted since, then it catches up"
L=$(leader)
snaps=$(grep -c "written beside the log" "$WORK/s$L.log" || true)
installs=$(grep -c "snapshot installed" "$WORK/s$F.log" || true)
kill -9 "${P[$F]}"
"$TERN" bench kv --target tern --http-addr "127.0.0.1:${H[$L]}" --clients 64 \
  --keys-per-client 1 --duration 10s --value-size 256 >/dev/null
curl -s -X PUT --data done "http://127.0.0.1:${H[$L]}/v1/kv/marker" >/dev/null
# Until the leader's next snapshot (checked every raft_snapshot_interval, 30 s
# staggered to 60 s) compacts its log, s$F would catch up from the log alone.
for _ in $(seq 240); do
  [ "$(grep -c "written beside the log" "$WORK/s$L.log" || true)" -gt "$snaps" ] && break
  sleep 0.5
done
t=$(now); start "$F"
until [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:${H[$F]}/v1/kv/marker?stale")" = 200 ]; do sleep 0.05; done
took=$(since "$t")
installed=$(( $(grep -c "snapshot installed" "$WORK/s$F.log" || true) - installs ))
echo "catch-up through the leader's snapshot: $took s ($installed installed)"
[ "$installed" -gt 0 ] || took="$took (from the log: no snapshot installed)"
res install_s "$took"
echo "Machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
stop_tern
rm -rf "$WORK"/d[123] # etcd gets the disk space too
[ "${ETCD:-1}" = 0 ] && exit 0

echo
RESULTS=$RESULTS bash bench/big-state-etcd.sh "$KPC"
echo
echo "== side by side: $KEYS keys of 256 B, 3 servers, 64 clients, $(date -u +%F), $(nproc) vCPU shared"
python3 - "$RESULTS" <<'EOF'
import sys
r = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
def g(k): return r.get(k, "?")
def span(sys_, f, names):
    v = sorted(float(r[f"{sys_}.{n}.{f}"]) for n in names if f"{sys_}.{n}.{f}" in r)
    return "?" if not v else (f"{v[0]:.0f}" if v[0] == v[-1] else f"{v[0]:.0f}-{v[-1]:.0f}")
T, E = ("s1", "s2", "s3"), ("e1", "e2", "e3")
rows = [
    ("load: writes/s", g("tern.load.writes/s"), g("etcd.load.writes/s")),
    ("load: puts (errors)", f"{g('tern.load.writes')} ({g('tern.load.errors')})", f"{g('etcd.load.writes')} ({g('etcd.load.errors')})"),
    ("load: p99 / max ms", f"{g('tern.load.p99_ms')} / {g('tern.load.max_ms')}", f"{g('etcd.load.p99_ms')} / {g('etcd.load.max_ms')}"),
    ("load: s (the loader's own CPU s)", f"{g('tern.load.duration_s')} ({g('tern.load.loader_cpu_s')})", f"{g('etcd.load.duration_s')} ({g('etcd.load.loader_cpu_s')})"),
    ("resident MiB per server", span("tern", "rss_mib", T), span("etcd", "rss_mib", E)),
    ("  of it anonymous / file-backed", f"{span('tern', 'anon_mib', T)} / {span('tern', 'file_mib', T)}", f"{span('etcd', 'anon_mib', E)} / {span('etcd', 'file_mib', E)}"),
    ("resident B per key", span("tern", "bytes_per_key", T), span("etcd", "bytes_per_key", E)),
    ("data dir MiB", span("tern", "datadir_mib", T), span("etcd", "datadir_mib", E)),
    ("state image MiB (snapshot file / bbolt)", g("tern.snapshot_mib"), span("etcd", "db_mib", E)),
    ("own snapshots: count, ms each", f"{g('tern.own_snapshots')}, {g('tern.own_snapshot_ms')}", f"{g('etcd.own_snapshots')}, {g('etcd.own_snapshot_ms')}"),
    ("full state copy (etcdctl snapshot save) s", "-", f"{g('etcd.snapshot_save_s')} ({g('etcd.snapshot_save_mib')} MiB)"),
    ("kill -9 follower -> serving s", g("tern.restart_s"), f"{g('etcd.restart_s')} (log: serving at {g('etcd.restart_serving_s')})"),
    ("catch-up by the leader's snapshot s", g("tern.install_s"), g("etcd.install_s")),
    ("  who", "a follower that missed >10240 entries", "a member added after the load"),
    ("  etcd log: file received / applied / serving", "-", f"{g('etcd.install_received_s')} / {g('etcd.install_applied_s')} / {g('etcd.install_serving_s')} s"),
]
print(f"| {'what':42} | {'tern':38} | {'etcd':38} |")
print(f"|{'-' * 44}|{'-' * 40}|{'-' * 40}|")
for w, a, b in rows:
    print(f"| {w:42} | {a:38} | {b:38} |")
EOF
