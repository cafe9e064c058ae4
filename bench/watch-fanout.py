#!/usr/bin/env python3
"""The watcher side of bench/watch-fanout.sh (standard library only).

    watch-fanout.py tern|etcd HOST:PORT WATCHERS WRITES PROCS PIDS BENCH_CMD...

Parks WATCHERS watches of one key on HOST:PORT, spread over PROCS worker
processes (each an asyncio loop of raw sockets: one Python process cannot
parse 10,000 answers fast enough on its own), then:

1. CPU seconds (utime+stime from /proc/<pid>/stat) of every pid in PIDS
   (comma-separated "name=pid") over 10 s with all watches parked and
   nothing written;
2. BENCH_CMD (a `tern bench kv` run writing other keys) with the watches
   parked; no watch may wake;
3. WRITES writes to the watched key, one at a time: each after every
   watcher has its answer for the previous one and is parked again.
   Per write: write-to-first-answer and write-to-last-answer.

tern: `GET /v1/kv/watched?index=N&wait=10m` on kept-alive HTTP/1.1
connections; an answer is read whole and the watcher re-parks at once at
the answer's X-Consul-Index (what a Consul watch does).
etcd: `POST /v3/watch` on the grpc-gateway (HTTP/1.1, a chunked stream of
JSON messages): the stream stays open; an answer is a message with events.

Times are CLOCK_MONOTONIC, which every process on the machine shares.
Prints one line of `name=value` fields (parsed by the shell script).
"""

import asyncio
import base64
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

KEY = "watched"
SETTLE_S = 1.0  # after every watcher re-sent its request, before the next write


def b64(s):
    return base64.b64encode(s.encode()).decode()


# ---------------------------------------------------------------- workers


class Worker:
    def __init__(self, kind, host, port, n, index, pipe):
        self.kind, self.host, self.port, self.n = kind, host, port, n
        self.index = index  # tern: the index to park at first
        self.pipe = pipe
        self.parked = 0  # requests sent (tern) / streams created (etcd)
        self.answers = []  # times of answers since the last reset
        self.bad = 0
        self.errors = []
        self.all_answered = None  # an Event, set when len(answers) == n

    def answered(self, ok):
        self.answers.append(time.monotonic())
        if not ok:
            self.bad += 1
        if len(self.answers) >= self.n and self.all_answered is not None:
            self.all_answered.set()

    async def tern_watch(self):
        r, w = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        index = self.index
        first = True
        while True:
            w.write(
                f"GET /v1/kv/{KEY}?index={index}&wait=10m HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            await w.drain()
            if first:
                self.parked += 1
                first = False
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            ok = lines[0].startswith(b"HTTP/1.1 200")
            length, new_index = 0, index
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"x-consul-index":
                    new_index = int(v)
            if length:
                await r.readexactly(length)
            if new_index == index:
                # Timed out or woke for nothing: not an answer; park again.
                continue
            index = new_index
            self.answered(ok)

    async def etcd_watch(self):
        r, w = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        body = json.dumps({"create_request": {"key": b64(KEY)}}).encode()
        w.write(
            b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"watch refused: {head[:200]!r}")
        chunked = b"transfer-encoding: chunked" in head.lower()
        buf = b""
        created = False
        while True:
            if chunked:
                size = int((await r.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    raise RuntimeError("watch stream ended")
                buf += await r.readexactly(size)
                await r.readexactly(2)
            else:
                data = await r.read(65536)
                if not data:
                    raise RuntimeError("watch stream ended")
                buf += data
            while b"\n" in buf:
                msg, _, buf = buf.partition(b"\n")
                if not msg.strip():
                    continue
                if not created:
                    if b'"created":true' not in msg:
                        raise RuntimeError(f"unexpected first message {msg[:200]!r}")
                    created = True
                    self.parked += 1
                elif b'"events"' in msg:
                    self.answered(b'"error"' not in msg)

    async def guard(self, coro):
        try:
            await coro
        except Exception as e:  # reported to the coordinator, not raised
            self.errors.append(repr(e))

    async def main(self):
        loop = asyncio.get_running_loop()
        watch = self.tern_watch if self.kind == "tern" else self.etcd_watch
        # Connect in batches so the listen backlog is not overrun.
        tasks = []
        for i in range(self.n):
            tasks.append(asyncio.create_task(self.guard(watch())))
            if i % 200 == 199:
                await asyncio.sleep(0.01)
        commands = asyncio.Queue()
        loop.add_reader(self.pipe.fileno(), lambda: commands.put_nowait(self.pipe.recv()))
        while True:
            cmd = await commands.get()
            if cmd == "status":
                self.pipe.send((self.parked, len(self.answers), self.bad, self.errors[:3]))
            elif cmd == "arm":
                # The coordinator is about to write: collect n answers.
                self.answers, self.bad = [], 0
                self.all_answered = asyncio.Event()
                self.pipe.send("armed")
            elif cmd == "collect":
                try:
                    await asyncio.wait_for(self.all_answered.wait(), 120)
                except asyncio.TimeoutError:
                    pass
                self.all_answered = None
                a = self.answers
                self.pipe.send((len(a), self.bad, min(a) if a else None, max(a) if a else None,
                                self.errors[:3]))
                self.answers = []
            elif cmd == "exit":
                self.pipe.send("bye")
                return


def worker(kind, host, port, n, index, pipe):
    asyncio.run(Worker(kind, host, port, n, index, pipe).main())


# ---------------------------------------------------------------- coordinator


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy, total (idle and iowait excluded)


def write(kind, host, port, value):
    if kind == "tern":
        req = urllib.request.Request(f"http://{host}:{port}/v1/kv/{KEY}", data=value.encode(),
                                     method="PUT")
    else:
        body = json.dumps({"key": b64(KEY), "value": b64(value)}).encode()
        req = urllib.request.Request(f"http://{host}:{port}/v3/kv/put", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{kind}: write of {KEY} answered {e.code}: {e.read()[:300]!r}")


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main():
    kind, addr, n, writes, procs, pids = sys.argv[1:7]
    bench_cmd = sys.argv[7:]
    host, port = addr.rsplit(":", 1)
    port, n, writes, procs = int(port), int(n), int(writes), int(procs)
    pids = dict(p.split("=") for p in pids.split(",") if p)
    out = {}

    index = 0
    if kind == "tern":
        write(kind, host, port, "start")
        with urllib.request.urlopen(f"http://{host}:{port}/v1/kv/{KEY}") as r:
            index = int(r.headers["X-Consul-Index"])
    else:
        write(kind, host, port, "start")

    ctx = mp.get_context("fork")
    pipes, children = [], []
    for p in range(procs):
        share = n // procs + (1 if p < n % procs else 0)
        a, b = ctx.Pipe()
        c = ctx.Process(target=worker, args=(kind, host, port, share, index, b), daemon=True)
        c.start()
        pipes.append(a)
        children.append(c)

    def ask(cmd):
        for p in pipes:
            p.send(cmd)
        return [p.recv() for p in pipes]

    # Park everyone.
    t_start = time.monotonic()
    while True:
        st = ask("status")
        parked = sum(s[0] for s in st)
        errs = [e for s in st for e in s[3]]
        if errs:
            sys.exit(f"{kind}: watcher errors while parking: {errs}")
        if parked >= n:
            break
        if time.monotonic() - t_start > 300:
            sys.exit(f"{kind}: only {parked}/{n} watchers parked after 300 s")
        time.sleep(0.2)
    out["park_s"] = f"{time.monotonic() - t_start:.1f}"
    time.sleep(2.0)  # the last requests reach the server and park there
    st = ask("status")
    early = sum(s[1] for s in st)
    if early:
        sys.exit(f"{kind}: {early} watchers answered before any write")

    # 1. CPU while parked, nothing written.
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    b0 = machine_busy()
    time.sleep(10.0)
    b1 = machine_busy()
    after = {name: cpu_ticks(pid) for name, pid in pids.items()}
    hz = os.sysconf("SC_CLK_TCK")
    for name in pids:
        out[f"cpu_idle_{name}_s"] = f"{(after[name] - before[name]) / hz:.2f}"
    out["machine_busy_pct"] = f"{100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1]):.0f}"

    # 2. Writes to other keys with the watchers parked.
    if bench_cmd:
        res = subprocess.run(bench_cmd, capture_output=True, text=True)
        for field in res.stdout.split():
            k, _, v = field.partition("=")
            if k in ("writes/s", "p99_ms", "errors"):
                out[f"parked_{k.replace('/', '_per_')}"] = v
        if res.returncode != 0:
            out["parked_bench_failed"] = res.stderr.strip().splitlines()[-1:] or ["?"]
        st = ask("status")
        woke = sum(s[1] for s in st)
        out["woke_on_other_keys"] = str(woke)

    # 3. Writes to the watched key (and the CPU everyone spent on them: is
    # the watcher side the bottleneck?).
    workers = {f"py{i}": c.pid for i, c in enumerate(children)}
    before = {name: cpu_ticks(pid) for name, pid in {**pids, **workers}.items()}
    t_writes = time.monotonic()
    firsts, lasts, short = [], [], 0
    for i in range(writes):
        ask("status")  # anything pending is drained
        for p in pipes:
            p.send("arm")
        for p in pipes:
            p.recv()
        t0 = time.monotonic()
        write(kind, host, port, f"v{i}")
        res = ask("collect")
        got = sum(r[0] for r in res)
        bad = sum(r[1] for r in res)
        errs = [e for r in res for e in r[4]]
        if got < n or bad or errs:
            short += 1
            print(f"{kind}: write {i}: {got}/{n} answered, {bad} not 200, errors {errs}",
                  file=sys.stderr)
        if got:
            firsts.append(min(r[2] for r in res if r[2] is not None) - t0)
            lasts.append(max(r[3] for r in res if r[3] is not None) - t0)
        time.sleep(SETTLE_S)
    after = {name: cpu_ticks(pid) for name, pid in {**pids, **workers}.items()}
    spent = {name: (after[name] - before[name]) / hz for name in before}
    out["writes_wall_s"] = f"{time.monotonic() - t_writes:.1f}"
    out["writes_cpu_agents_s"] = f"{sum(spent[n] for n in pids):.1f}"
    out["writes_cpu_watchers_s"] = f"{sum(spent[n] for n in workers):.1f}"
    for name in pids:
        out[f"writes_cpu_{name}_s"] = f"{spent[name]:.1f}"
    ms = lambda s: f"{s * 1000:.0f}"  # noqa: E731
    out["writes"] = str(writes)
    out["writes_short"] = str(short)
    if lasts:
        out["last_p50_ms"] = ms(statistics.median(lasts))
        out["last_p99_ms"] = ms(pct(lasts, 0.99))
        out["last_max_ms"] = ms(max(lasts))
        out["first_p50_ms"] = ms(statistics.median(firsts))
        out["first_p99_ms"] = ms(pct(firsts, 0.99))
    ask("exit")
    for c in children:
        c.join(5)
    print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
