#!/usr/bin/env python3
"""Load an etcd member with exactly CLIENTS x KEYS_PER_CLIENT distinct keys.

Usage: etcd-load.py HOST:PORT CLIENTS KEYS_PER_CLIENT VALUE_SIZE

Client c puts bench/c/0 .. bench/c/(K-1) once each, in order, one request in
flight per client, through etcd v3's JSON gateway (POST /v3/kv/put) on one
kept-alive HTTP/1.1 connection per client: the key names, value size and
client count of `tern bench kv --keys-per-client`, but exactly one pass, so
etcd ends with one revision per key and no history to compact. All clients
are coroutines on one thread (Python's standard library only, nothing to
install). A failed put is retried on a new connection, so every key is
written; the failures are counted. Prints one line like `tern bench kv`'s,
plus the CPU the loader itself used (it shares the machine with etcd).
"""

import asyncio
import base64
import math
import resource
import sys
import time


async def client(host, port, c, keys, value_b64, lat, errors):
    reader = writer = None
    i = 0
    while i < keys:
        key = base64.b64encode(f"bench/{c}/{i}".encode()).decode()
        body = f'{{"key":"{key}","value":"{value_b64}"}}'.encode()
        req = (
            f"POST /v3/kv/put HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        t = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = head.split(b" ", 2)[1]
            headers = head.lower()
            if b"transfer-encoding: chunked" in headers:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                n = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(n)
            if status != b"200":
                raise RuntimeError(f"status {status!r}")
        except Exception:  # noqa: BLE001 - any failure: count, redial, retry the key
            errors[0] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        lat.append(time.perf_counter() - t)
        i += 1
    if writer is not None:
        writer.close()


async def main():
    addr, clients, keys, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    value_b64 = base64.b64encode(b"x" * size).decode()
    lat, errors = [], [0]
    start = time.perf_counter()
    await asyncio.gather(
        *(client(host, int(port), c, keys, value_b64, lat, errors) for c in range(clients))
    )
    secs = time.perf_counter() - start
    lat.sort()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime

    def pct(p):
        return lat[max(1, min(len(lat), math.ceil(len(lat) * p))) - 1] * 1e3 if lat else 0.0

    print(
        f"clients={clients} value_size={size} duration_s={secs:.1f} "
        f"writes/s={len(lat) / secs:.0f} writes={len(lat)} errors={errors[0]} "
        f"p50_ms={pct(0.5):.2f} p90_ms={pct(0.9):.2f} p99_ms={pct(0.99):.2f} "
        f"max_ms={(lat[-1] * 1e3 if lat else 0):.2f} loader_cpu_s={cpu:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
