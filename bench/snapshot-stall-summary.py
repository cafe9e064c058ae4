#!/usr/bin/env python3
"""The end of bench/snapshot-stall.sh: each round's throughput ratio (with
snapshots over without) and max / p99 with snapshots, raw and outside the
pauses the bench's probe saw, then the median of each over the rounds.
Usage: snapshot-stall-summary.py WORKDIR ROUNDS (reads WORKDIR/out-none-N and
WORKDIR/out-every-N, the bench lines of round N)."""
import statistics
import sys


def fields(path):
    """The key=value pairs of the bench's result and probe lines."""
    out = {}
    for line in open(path):
        if line.startswith("clients=") or line.startswith("probe="):
            for word in line.split():
                key, _, value = word.partition("=")
                out[key] = value
    return out


def main():
    work, rounds = sys.argv[1], int(sys.argv[2])
    rows = []
    for r in range(1, rounds + 1):
        none = fields(f"{work}/out-none-{r}")
        every = fields(f"{work}/out-every-{r}")
        p99 = float(every["p99_ms"])
        rows.append(
            {
                "ratio": float(every["writes/s"]) / float(none["writes/s"]),
                "max_over_p99": float(every["max_ms"]) / p99,
                "max_over_p99_outside_pauses": float(every["max_outside_pauses_ms"]) / p99,
            }
        )
        print(
            f"round={r} writes_s_without={none['writes/s']} writes_s_with={every['writes/s']}"
            f" ratio={rows[-1]['ratio']:.3f} p99_ms_with={every['p99_ms']}"
            f" max_ms_with={every['max_ms']} max_over_p99={rows[-1]['max_over_p99']:.2f}"
            f" max_over_p99_outside_pauses={rows[-1]['max_over_p99_outside_pauses']:.2f}"
        )
    print(
        f"rounds={rounds}"
        + "".join(
            f" median_{k}={statistics.median(row[k] for row in rows):.3f}"
            for k in ("ratio", "max_over_p99", "max_over_p99_outside_pauses")
        )
    )


if __name__ == "__main__":
    main()
