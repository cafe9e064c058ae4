# Shared by the bench scripts: source it, then `port` prints a free port.
#
# Ports come from 15000-32767, below Linux's ephemeral range (32768-60999 by
# default), so the outgoing connections of an earlier run (a load generator's
# 64 clients, gossip) cannot be sitting on a port a server is about to bind;
# picking port 0 and closing it, as the scripts did, lost a run to "Address
# already in use". Each port is free for TCP and UDP (gossip binds both) and
# is never handed out twice in one script run.
BENCH_PORTS_FILE=${BENCH_PORTS_FILE:-$(mktemp /tmp/tern-bench-ports.XXXXXX)}
export BENCH_PORTS_FILE
port() {
  python3 - "$BENCH_PORTS_FILE" <<'PY'
import random, socket, sys
path = sys.argv[1]
used = set(open(path).read().split())
for _ in range(1000):
    p = random.randrange(15000, 32768)
    if str(p) in used:
        continue
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", p))
            s.close()
    except OSError:
        continue
    open(path, "a").write(f"{p}\n")
    print(p)
    break
else:
    sys.exit("no free port in 15000-32767")
PY
}
