#!/usr/bin/env bash
# etcd holding the big state of bench/big-state.sh, measured the same way on
# this machine: 3 members on loopback (Debian's etcd 3.4, its defaults:
# --snapshot-count 100000, fsync on every commit), 64 clients write
# 64 x keys_per_client distinct keys of 256 B once each (bench/kv-load.py,
# the same loader as Tern's side), then: resident memory per member (and per
# key, with its anonymous and file-backed parts: etcd's bbolt file is mmapped),
# etcd's own snapshots (from its log), `etcdctl snapshot save` (a full copy of
# the bbolt file: the nearest thing to Tern's snapshot file), how long a
# follower takes to come back from kill -9, and how long a new member added
# after the load takes to catch up (the leader sends it the whole bbolt file).
# It prints numbers; it asserts nothing. big-state.sh runs it after Tern's
# side; with RESULTS=file it also appends its numbers there as key=value.
# Usage: bench/big-state-etcd.sh [keys_per_client] (default 15625: 1M keys)
# SNAPSHOT_COUNT=n sets --snapshot-count (only to try the script on few keys:
# a new member gets the bbolt file only once the leader's log is compacted).
set -euo pipefail
cd "$(dirname "$0")/.."
KPC=${1:-15625}
KEYS=$((64 * KPC))
RESULTS=${RESULTS:-/dev/null}
WORK=$(mktemp -d /tmp/etcd-bigstate.XXXXXX)
declare -a C P PID
cleanup() {
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  echo "installing etcd-server and etcd-client (Debian)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
export ETCDCTL_API=3
. bench/lib.sh
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now)-$1:.2f}')"; }
res() { echo "etcd.$1=$2" >>"$RESULTS"; }
for i in 1 2 3 4; do C[$i]=$(port); P[$i]=$(port); done
CLUSTER="e1=http://127.0.0.1:${P[1]},e2=http://127.0.0.1:${P[2]},e3=http://127.0.0.1:${P[3]}"
start() { # member, initial cluster state, initial cluster
  local i=$1 extra=()
  [ -n "${SNAPSHOT_COUNT:-}" ] && extra+=(--snapshot-count "$SNAPSHOT_COUNT")
  etcd --name "e$i" --data-dir "$WORK/e$i" --logger zap \
    --listen-client-urls "http://127.0.0.1:${C[$i]}" --advertise-client-urls "http://127.0.0.1:${C[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${P[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${P[$i]}" \
    --initial-cluster "${3:-$CLUSTER}" --initial-cluster-state "${2:-new}" "${extra[@]}" \
    >>"$WORK/e$i.log" 2>&1 &
  PID[$i]=$!
  disown "$!"
}
ectl() { local i=$1; shift; etcdctl --endpoints "127.0.0.1:${C[$i]}" --command-timeout=2s "$@"; }
# status FIELD of member i (revision, leader, member_id, dbSize, dbSizeInUse), or nothing
status() {
  ectl "$1" endpoint status -w json 2>/dev/null | python3 -c '
import sys, json
s = json.load(sys.stdin)[0]["Status"]
f = sys.argv[1]
print(s["header"][f] if f in s["header"] else s.get(f, 0))' "$2" 2>/dev/null || true
}
leader() {
  for i in 1 2 3; do
    local l m
    l=$(status "$i" leader); m=$(status "$i" member_id)
    [ -n "$l" ] && [ "$l" = "$m" ] && { echo "$i"; return; }
  done
}
mib() { python3 -c "print(f'{$1/1048576:.0f}')"; }
# events NAME T MEMBER...: the members' log lines since T (epoch seconds) about
# sending, receiving and applying the bbolt file, publishing the member and
# serving clients, as seconds after T; the first of each kind also goes to
# RESULTS as NAME.<what>_s.
events() {
  local name=$1 t0=$2; shift 2
  python3 - "$name" "$t0" "$RESULTS" "${@/#/$WORK/}" <<'EOF'
import json, sys, datetime
name, t0, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
keep = {
    "received and saved database snapshot": "received",
    "applied snapshot": "applied",
    "published local member to cluster through raft": "published",
    "serving client traffic": "serving",
}
marks = {}
for member in sys.argv[4:]:
    for line in open(member + ".log", errors="replace"):
        try:
            e = json.loads(line)
            at = datetime.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() - t0
        except (ValueError, KeyError, AttributeError, TypeError):
            continue
        m = e.get("msg", "")
        if at < 0 or not ("database snapshot" in m or "publish" in m or m.startswith("serving client")
                          or m in ("applied incoming Raft snapshot", "applied snapshot")):
            continue
        size = f" ({e['size']})" if "size" in e else ""
        err = f" ({e['error']})" if "error" in e else ""
        print(f"    {at:6.2f} {member.rsplit('/', 1)[1]}: {m}{size}{err}")
        for prefix, what in keep.items():
            if m.startswith(prefix):
                marks.setdefault(what, at)
with open(out, "a") as f:
    for what, at in marks.items():
        f.write(f"etcd.{name}_{what}_s={at:.2f}\n")
EOF
}
for i in 1 2 3; do start "$i"; done
until [ -n "$(leader)" ]; do sleep 0.2; done
L=$(leader)

echo "== etcd: writing $KEYS keys of 256 B (64 clients, each key once)"
t=$(now)
LOAD=$(python3 bench/kv-load.py etcd "127.0.0.1:${C[$L]}" 64 "$KPC" 256)
echo "$LOAD"
echo "took $(since "$t") s"
for f in writes/s writes errors p50_ms p99_ms max_ms duration_s loader_cpu_s; do
  res "load.$f" "$(echo "$LOAD" | tr ' ' '\n' | sed -n "s|^$f=||p")"
done
REV=$(status "$L" revision)
for i in 1 2 3; do until [ "$(status "$i" revision)" = "$REV" ]; do sleep 0.5; done; done
# Counting 1M keys can take seconds on a busy machine: a long timeout, and no
# count is not fatal.
COUNT=$(ectl "$L" --command-timeout=120s get bench/ --prefix --limit 1 -w json 2>/dev/null |
  python3 -c 'import sys,json; print(json.load(sys.stdin).get("count", 0))' 2>/dev/null || echo "?")
echo "keys under bench/: $COUNT, revision $REV on every member"
sleep 5 # let the last batch commit settle
for i in 1 2 3; do
  read -r rss anon file < <(awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} END{print r, a, f}' "/proc/${PID[$i]}/status")
  db=$(status "$i" dbSize); inuse=$(status "$i" dbSizeInUse)
  per=$(python3 -c "print(f'{$rss*1024/$KEYS:.0f}')")
  echo "e$i: resident $((rss / 1024)) MiB ($((anon / 1024)) anonymous, $((file / 1024)) file-backed: the mmapped bbolt file), $per B per key; bbolt $(mib "$db") MiB ($(mib "$inuse") in use); data dir $(du -sm "$WORK/e$i" | cut -f1) MiB"
  res "e$i.rss_mib" $((rss / 1024)); res "e$i.anon_mib" $((anon / 1024)); res "e$i.file_mib" $((file / 1024))
  res "e$i.bytes_per_key" "$per"; res "e$i.datadir_mib" "$(du -sm "$WORK/e$i" | cut -f1)"; res "e$i.db_mib" "$(mib "$db")"
done

echo "etcd's own snapshots (every --snapshot-count entries: the v2 store and raft state, after a bbolt commit; the keys live in bbolt):"
python3 - "$WORK" <<'EOF'
import json, sys, datetime
def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
allt = []
for i in (1, 2, 3):
    start, took = None, []
    for line in open(f"{sys.argv[1]}/e{i}.log", errors="replace"):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("msg") == "triggering snapshot":
            start = ts(e["ts"])
        elif e.get("msg") == "saved snapshot" and start is not None:
            took.append((ts(e["ts"]) - start) * 1e3)
            start = None
    allt += took
    print(f"  e{i}: {len(took)} snapshots" + (f", {min(took):.0f}-{max(took):.0f} ms each" if took else ""))
with open(f"{sys.argv[1]}/own-snapshots", "w") as f:
    f.write(f"{len(allt)} {min(allt) if allt else 0:.0f} {max(allt) if allt else 0:.0f}\n")
EOF
read -r n lo hi <"$WORK/own-snapshots"
res own_snapshots "$n"; res own_snapshot_ms "$lo-$hi"

L=$(leader) # leadership may have moved during the load
echo "== etcdctl snapshot save from the leader e$L (a consistent copy of its bbolt file, fsynced)"
t=$(now)
ectl "$L" --command-timeout=120s snapshot save "$WORK/snap.db" >/dev/null 2>&1
took=$(since "$t"); size=$(stat -c %s "$WORK/snap.db"); rm -f "$WORK/snap.db"
echo "snapshot save: $took s, $(mib "$size") MiB"
res snapshot_save_s "$took"; res snapshot_save_mib "$(mib "$size")"

F=$((L % 3 + 1))
echo "== restart: kill -9 e$F, start it, until a linearizable read of the last key answers there and its revision is the leader's"
kill -9 "${PID[$F]}"; sleep 1; t=$(now); start "$F" existing
until [ "$(status "$F" revision)" = "$REV" ] &&
  [ -n "$(ectl "$F" get "bench/63/$((KPC - 1))" --print-value-only 2>/dev/null)" ]; do sleep 0.05; done
took=$(since "$t")
echo "restart to serving: $took s; in its logs (s after it started):"
events restart "$t" "e$F"
res restart_s "$took"

echo "== install: add a new member e4 after the load, until its revision is the leader's (it gets the leader's bbolt file)"
# etcd refuses a member add until the restarted member has been connected a
# few seconds ("unhealthy cluster"): retry.
L=$(leader)
until ectl "$L" member add e4 --peer-urls "http://127.0.0.1:${P[4]}" >/dev/null 2>&1; do sleep 1; done
t=$(now); start 4 existing "$CLUSTER,e4=http://127.0.0.1:${P[4]}"
until [ "$(status 4 revision)" = "$REV" ] &&
  [ -n "$(ectl 4 get "bench/63/$((KPC - 1))" --print-value-only 2>/dev/null)" ]; do sleep 0.05; done
took=$(since "$t")
echo "new member to caught up and serving: $took s; in the logs (s after e4 started):"
events install "$t" "e$L" e4
res install_s "$took"
echo "Machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); etcd $(etcd --version | head -1 | awk '{print $3}')"
