"""What the schema check adds to a hello: a 1.0 hello (no digest, not checked) against a
1.1 hello whose digest matches the registered one, against the real hub process.

Not a test: run it by hand and read the figures.

    .venv/bin/python bench/bench_hello.py [--hellos 2000] [--rounds 3]

Hellos are signed beforehand (fresh nonces, timestamps inside the window) and sent one at a
time over one keep-alive connection, alternating blocks of each kind so that a warming
disk cache or CPU clock favours neither.  It prints the median and p99 round trip of each
kind, the encoded sizes, and the time of the one hello that registers a version (a
durable write).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubproc import HubProcess, TestCluster, now_ms  # noqa: E402

from riversync.protocol import codec  # noqa: E402
from riversync.protocol.messages import Hello  # noqa: E402

DIGEST = hashlib.sha256(b"bench schema").hexdigest()


def hellos(cluster: TestCluster, count: int, *, schema: bool) -> list[bytes]:
    extra = {"schema": 1, "schema_digest": DIGEST} if schema else {}
    v = (1, 1) if schema else (1, 0)
    return [codec.sign(Hello(v=v, c=cluster.roster.cluster_id, o="north", ts=now_ms(), e=1,
                             nonce=os.urandom(16), **extra), cluster.keys["north"])
            for _ in range(count)]


async def send(url: str, bodies: list[bytes]) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as s:
        for body in bodies:
            t = time.perf_counter()
            async with s.post(url + "/v1/hello", data=body) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"hello refused: HTTP {r.status}")
            times.append(time.perf_counter() - t)
    return times


def p(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hellos", type=int, default=2000, help="hellos of each kind per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cluster = TestCluster.create(Path(d) / "c", ["north", "south"])
        with HubProcess(cluster.hub_config) as hub:
            first = hellos(cluster, 1, schema=True)
            reg = asyncio.run(send(hub.url, first))[0]
            old: list[float] = []
            new: list[float] = []
            for _ in range(args.rounds):
                old += asyncio.run(send(hub.url, hellos(cluster, args.hellos, schema=False)))
                new += asyncio.run(send(hub.url, hellos(cluster, args.hellos, schema=True)))
    size_old = len(hellos(cluster, 1, schema=False)[0])
    size_new = len(first[0])
    print(f"hello without digest (1.0): median {statistics.median(old) * 1000:.3f} ms, "
          f"p99 {p(old, 0.99):.3f} ms, {size_old} bytes signed")
    print(f"hello with digest (1.1):    median {statistics.median(new) * 1000:.3f} ms, "
          f"p99 {p(new, 0.99):.3f} ms, {size_new} bytes signed")
    print(f"first hello of a version (registers it, one durable write): {reg * 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
