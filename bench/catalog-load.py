#!/usr/bin/env python3
"""Catalog registrations per second against a running Tern (or Consul) agent.

Usage: catalog-load.py HOST:PORT CLIENTS REGISTRATIONS_PER_CLIENT [PREFIX]

Client c registers nodes PREFIX-c-0 .. PREFIX-c-(N-1) (PREFIX: bench), each with one service
(`svc-<i mod 16>`, two tags, a port) and one passing service check, through
`PUT /v1/catalog/register`: one request in flight per client, one kept-alive
HTTP/1.1 connection per client, all clients coroutines on one thread
(Python's standard library only). Every registration is a new node, so each
is a write of three rows. Prints registrations/s, latency percentiles and
the CPU the loader itself used; a non-200 answer is counted and not retried.
"""

import asyncio
import json
import resource
import sys
import time


PREFIX = sys.argv[4] if len(sys.argv) > 4 else "bench"


def body(c, i):
    node = f"{PREFIX}-{c}-{i}"
    return json.dumps({
        "Node": node,
        "Address": f"10.{c % 250}.{(i >> 8) % 250}.{i % 250}",
        "Service": {"Service": f"svc-{i % 16}", "ID": f"svc-{i % 16}",
                    "Tags": ["bench", f"c{c}"], "Port": 8000 + i % 1000},
        "Check": {"Name": "alive", "ServiceID": f"svc-{i % 16}", "Status": "passing"},
    }).encode()


async def client(host, port, c, n, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    for i in range(n):
        b = body(c, i)
        req = (f"PUT /v1/catalog/register HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Length: {len(b)}\r\n\r\n").encode() + b
        t = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t)
        if status != b"200":
            errors.append(status)
    writer.close()


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    clients, n = int(sys.argv[2]), int(sys.argv[3])
    lat, errors = [], []
    start = time.perf_counter()
    await asyncio.gather(*(client(host, int(port), c, n, lat, errors) for c in range(clients)))
    elapsed = time.perf_counter() - start
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"registrations={len(lat)} clients={clients} seconds={elapsed:.2f} "
          f"rate={len(lat) / elapsed:.0f}/s p50={pct(0.5):.2f}ms p99={pct(0.99):.2f}ms "
          f"max={lat[-1] * 1000:.1f}ms errors={len(errors)} "
          f"loader_cpu={cpu.ru_utime + cpu.ru_stime:.1f}s")


asyncio.run(main())
