"""Hub throughput: 10 concurrent nodes push 1,000-event batches, then pull them all back.

Not a test: run it by hand and read the figures.

    .venv/bin/python bench/bench_hub.py [--nodes 10] [--batches 10] [--events 1000]
                                        [--verify-workers 0]

It starts the real hub (``riversync hub serve``) on a free loopback port, pushes pre-signed
batches from N concurrent clients (aiohttp), then lets every node pull everything the
others pushed.  In the same run, on the same disk, it inserts the same envelope bytes with
raw apsw into a table with the same durability (WAL, synchronous=FULL): once with one
commit per batch (what a hub that commits each push alone would pay) and once in a single
transaction (the disk's ceiling).  The ratio "ingest / raw" is the figure to watch;
target at least 0.3x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import apsw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubproc import HubProcess, TestCluster  # noqa: E402

from riversync.protocol import codec  # noqa: E402
from riversync.protocol.messages import ErrorReply, PullReply, PushReply  # noqa: E402


def build(cluster: TestCluster, nodes: list[str], batches: int, events: int):
    origins = {n: cluster.origin(n) for n in nodes}
    bodies = {n: [o.batch(events) for _ in range(batches)] for n, o in origins.items()}
    return origins, bodies


async def push_all(url: str, bodies: dict[str, list[bytes]]) -> None:
    async with aiohttp.ClientSession() as s:
        async def one(node: str) -> None:
            for body in bodies[node]:
                async with s.post(url + "/v1/push", data=body) as r:
                    data = await r.read()
                    if r.status != 200:
                        raise RuntimeError(codec.decode(data, ErrorReply))
                    codec.decode(data, PushReply)

        await asyncio.gather(*(one(n) for n in bodies))


async def pull_all(url: str, origins, hub_epoch: int, events_per_batch: int) -> int:
    served = 0
    async with aiohttp.ClientSession() as s:
        async def one(node: str) -> int:
            cursor, got = 0, 0
            while True:
                req = origins[node].request("pull", hub_epoch=hub_epoch, cursor=cursor,
                                            limit=1000)
                async with s.post(url + "/v1/pull", data=req) as r:
                    data = await r.read()
                    if r.status != 200:
                        raise RuntimeError(codec.decode(data, ErrorReply))
                rep = codec.decode(data, PullReply)
                got += len(rep.batches) * events_per_batch
                cursor = rep.cursor
                if not rep.more:
                    return got

        for n in await asyncio.gather(*(one(n) for n in origins)):
            served += n
    return served


def raw_insert(path: Path, envelopes: list[bytes], per_batch_commit: bool) -> float:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE b(seq INTEGER PRIMARY KEY AUTOINCREMENT, envelope BLOB NOT NULL)")
    t0 = time.perf_counter()
    if per_batch_commit:
        for env in envelopes:
            with conn:
                conn.execute("INSERT INTO b(envelope) VALUES (?)", (env,))
    else:
        with conn:
            for env in envelopes:
                conn.execute("INSERT INTO b(envelope) VALUES (?)", (env,))
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--batches", type=int, default=10, help="batches per node")
    ap.add_argument("--events", type=int, default=1000, help="events per batch")
    ap.add_argument("--verify-workers", type=int, default=0,
                    help="hub.toml limits.verify_workers (0: checks on the event loop)")
    args = ap.parse_args()
    nodes = [f"n{i}" for i in range(args.nodes)]
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        cluster = TestCluster.create(Path(tmp) / "c", nodes, verify_workers=args.verify_workers)
        origins, bodies = build(cluster, nodes, args.batches, args.events)
        all_envs = [b for n in nodes for b in bodies[n]]
        total_events = len(all_envs) * args.events
        mb = sum(map(len, all_envs)) / 1e6
        with HubProcess(cluster.hub_config) as hub:
            cpu0, t0 = cpu_seconds(hub.proc.pid), time.perf_counter()
            me0 = cpu_seconds(os.getpid())
            asyncio.run(push_all(hub.url, bodies))
            t_push = time.perf_counter() - t0
            cpu_push = cpu_seconds(hub.proc.pid) - cpu0
            client_push = cpu_seconds(os.getpid()) - me0
            status = hub.status()
            metrics = hub.get("/metrics")[2].decode()
            commits = float(re.search(r"^riversync_hub_push_commits_total (\S+)", metrics,
                                      re.M).group(1))
            assert status["events_held"] == total_events, status
            cpu0, t0 = cpu_seconds(hub.proc.pid), time.perf_counter()
            served = asyncio.run(pull_all(hub.url, origins, status["hub_epoch"], args.events))
            t_pull = time.perf_counter() - t0
            cpu_pull = cpu_seconds(hub.proc.pid) - cpu0
            assert served == total_events * (args.nodes - 1), served
        # The disk's fsync time varies from run to run: take the median of three.
        t_raw1 = statistics.median(raw_insert(Path(tmp) / f"raw1-{i}.db", all_envs, True)
                                   for i in range(3))
        t_rawn = statistics.median(raw_insert(Path(tmp) / f"rawn-{i}.db", all_envs, False)
                                   for i in range(3))

    ingest = total_events / t_push
    raw1 = total_events / t_raw1
    rawn = total_events / t_rawn
    print(f"{args.nodes} nodes x {args.batches} batches x {args.events} events "
          f"= {total_events:,} events, {mb:.1f} MB of signed batches; "
          f"verify_workers={args.verify_workers}, {os.cpu_count()} CPUs")
    print(f"ingest (HTTP push, verify, store, fsync): {ingest:12,.0f} events/s "
          f"({len(all_envs) / t_push:,.1f} batches/s; hub CPU {cpu_push / t_push:.0%} of a core, "
          f"{cpu_push / total_events * 1e6:.1f} us/event; "
          f"{len(all_envs) / commits:.1f} batches per commit; the pushing clients used "
          f"{client_push / t_push:.0%} of a core)")
    print(f"served (HTTP pull, {args.nodes} nodes):        {served / t_pull:12,.0f} events/s "
          f"(hub CPU {cpu_pull / t_pull:.0%} of a core)")
    print(f"raw apsw, commit per batch:               {raw1:12,.0f} events/s")
    print(f"raw apsw, one transaction:                {rawn:12,.0f} events/s")
    print(f"ingest / raw (commit per batch): {ingest / raw1:.2f}x   "
          f"ingest / raw (one transaction): {ingest / rawn:.2f}x   target >= 0.3x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
