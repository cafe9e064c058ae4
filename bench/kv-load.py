#!/usr/bin/env python3
"""Write exactly CLIENTS x KEYS_PER_CLIENT distinct keys to Tern or etcd.

Usage: kv-load.py tern|etcd HOST:PORT CLIENTS KEYS_PER_CLIENT VALUE_SIZE

Client c puts bench/c/0 .. bench/c/(K-1) once each, in order, one request in
flight per client, on one kept-alive HTTP/1.1 connection per client: Consul's
PUT /v1/kv/<key> to Tern, etcd v3's JSON gateway (POST /v3/kv/put) to etcd.
These are the key names, value size and client count of `tern bench kv
--keys-per-client`, but exactly one pass that ends when every key is written
(`tern bench kv` cycles through the keys for a fixed time, which leaves keys
unwritten when the machine is slow, and overwrites that etcd would keep as
history). The same client for both systems, so both pay the same per-request
cost on the client side. All clients are coroutines on one thread (Python's
standard library only, nothing to install). A failed put is retried on a new connection, so every key is
written; the failures are counted. Prints one line like `tern bench kv`'s,
plus the CPU the loader itself used (it shares the machine with etcd).
"""

import asyncio
import base64
import math
import resource
import sys
import time


def request(target, host, port, key, value):
    """One put of `value` at `key`, as bytes on the wire."""
    if target == "tern":
        return (
            f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {len(value)}\r\n\r\n"
        ).encode() + value
    k = base64.b64encode(key.encode()).decode()
    v = base64.b64encode(value).decode()
    body = f'{{"key":"{k}","value":"{v}"}}'.encode()
    return (
        f"POST /v3/kv/put HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def client(target, host, port, c, keys, value, lat, errors):
    reader = writer = None
    i = 0
    while i < keys:
        req = request(target, host, port, f"bench/{c}/{i}", value)
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
    target, addr = sys.argv[1], sys.argv[2]
    clients, keys, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if target not in ("tern", "etcd"):
        sys.exit("usage: kv-load.py tern|etcd HOST:PORT CLIENTS KEYS_PER_CLIENT VALUE_SIZE")
    host, port = addr.rsplit(":", 1)
    value = b"x" * size
    lat, errors = [], [0]
    start = time.perf_counter()
    await asyncio.gather(
        *(client(target, host, int(port), c, keys, value, lat, errors) for c in range(clients))
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
