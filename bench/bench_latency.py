"""Write-to-visibility latency between two offices with ``realtime = true``.

A hub and two office nodes run as separate processes on 127.0.0.1 (the same machinery as
``riversync demo``).  Each round creates a row at office A through its API and then asks
office B for that row until it is there; the time from just before A's write to B's first
answer with the row is one sample.  The sync interval is the default 60 s, so every
sample travels by push-on-write and long-poll pull, not by the periodic sync.

    .venv/bin/python bench/bench_latency.py [--writes 200] [--json]

B is polled every ``POLL_S``; samples therefore include up to that much polling delay
plus one local HTTP round trip.  Under ``make bench`` a shorter run reports through
pytest-benchmark.  Speed is never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from riversync.node.client import NodeRefused
from riversync.node.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
POLL_S = 0.002  # how often B is asked; bounds the measurement's own delay
TIMEOUT_S = 30.0  # one write not visible after this long is reported as a failure


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def measure(writes: int, directory: Path) -> dict:
    c = LocalCluster(directory, ["north", "south"], schema=SCHEMA, sync_interval_s=60,
                     realtime=True).create()
    samples: list[float] = []
    try:
        c.start_all()
        a = c.client("north", "north-clerk")
        b = c.client("south", "south-clerk")
        a.post("/v1/tables/players/rows", {"pk": "warm-up", "values": {"full_name": "w"}})
        c.wait_for("warm-up", lambda: b.get("/v1/tables/players/rows/warm-up"), TIMEOUT_S)
        for i in range(writes):
            pk = f"L-{i:05d}"
            t0 = time.perf_counter()
            a.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": f"w{i}"}})
            deadline = t0 + TIMEOUT_S
            while True:
                try:
                    b.get(f"/v1/tables/players/rows/{pk}")
                    break
                except NodeRefused as e:
                    if e.code != "ROW_NOT_FOUND" or time.perf_counter() > deadline:
                        raise
                time.sleep(POLL_S)
            samples.append(time.perf_counter() - t0)
    finally:
        c.stop_all()
    ms = [s * 1000 for s in samples]
    return {
        "writes": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "poll_interval_ms": POLL_S * 1000,
        "sync_interval_s": 60,
        "realtime": True,
    }


def test_write_to_visibility_latency(benchmark, tmp_path):
    """``make bench``: 50 writes; figures in the benchmark's extra_info."""
    result = benchmark.pedantic(measure, args=(50, tmp_path / "c"), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="riversync-latency-") as d:
        r = measure(args.writes, Path(d) / "c")
    if args.json:
        print(json.dumps(r))
    else:
        print(f"write at north -> visible at south, realtime, {r['writes']} writes: "
              f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, "
              f"mean {r['mean_ms']} ms (B polled every {r['poll_interval_ms']} ms)")


if __name__ == "__main__":
    main()
