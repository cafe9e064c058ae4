#!/usr/bin/env python3
"""What this machine's disk does to fsync latency, with no Tern at all.

Three writers (one per server of a local 3-server cluster) each append a
batch of bytes to their own file and fdatasync it, in a loop, as a log does;
a file that passes 16 MiB is deleted and started again, as log segments
roll. It prints each writer's fsync p50/p99/max and every moment two or more
writers waited over 20 ms together: a stall of the disk itself, which every
server of a cluster on one disk sees at once, so no commit can avoid it.
The worst write latency `bench/snapshot-stall.sh` can show is bounded below
by these. It measures; it asserts nothing.

Usage: bench/disk-stalls.py [seconds] [writers]   (files go under $TMPDIR)
"""
import os
import sys
import tempfile
import threading
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
WRITERS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BATCH = 60_000  # about one group commit of 64 clients' 256-byte puts
SEGMENT = 16 << 20  # tern_storage::SEGMENT_BYTES_MAX
SLOW = 0.020


def writer(i, root, stop, out):
    path = os.path.join(root, f"w{i}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"x" * BATCH
    lat, slow, size = [], [], 0
    while time.monotonic() < stop:
        t = time.monotonic()
        os.write(fd, buf)
        os.fdatasync(fd)
        took = time.monotonic() - t
        lat.append(took)
        if took > SLOW:
            slow.append((t, took))
        size += BATCH
        if size > SEGMENT:
            os.close(fd)
            os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            size = 0
    os.close(fd)
    os.unlink(path)
    out[i] = (sorted(lat), slow)


def main():
    root = tempfile.mkdtemp(prefix="tern-disk-stalls.")
    start = time.monotonic()
    stop = start + SECONDS
    out = {}
    threads = [
        threading.Thread(target=writer, args=(i, root, stop, out))
        for i in range(WRITERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.rmdir(root)
    print(f"{WRITERS} writers, {SECONDS:.0f} s, {BATCH} bytes + fdatasync each, under {root}")
    events = []
    for i, (lat, slow) in sorted(out.items()):
        q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1e3
        print(
            f"writer {i}: fsyncs={len(lat)} p50_ms={q(0.5):.2f} p99_ms={q(0.99):.2f} "
            f"p999_ms={q(0.999):.2f} max_ms={lat[-1] * 1e3:.1f} over_20ms={len(slow)}"
        )
        events += [(t, took, i) for t, took in slow]
    # Slow fsyncs of different writers that overlap in time: one stall.
    events.sort()
    stalls, cur = [], None
    for t, took, i in events:
        if cur and t <= cur[1]:
            cur[1] = max(cur[1], t + took)
            cur[2].add(i)
        else:
            cur = [t, t + took, {i}]
            stalls.append(cur)
    shared = [s for s in stalls if len(s[2]) > 1]
    print(f"stalls two or more writers saw together: {len(shared)}")
    for s in shared:
        print(f"  at {s[0] - start:.3f}s: {(s[1] - s[0]) * 1e3:.1f} ms, writers {sorted(s[2])}")
    print(f"Machine: {os.cpu_count()} CPUs; disk under {os.path.dirname(root)}")


if __name__ == "__main__":
    main()
