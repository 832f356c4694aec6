"""The replay benchmark: how fast the engine folds signed batches, against raw SQLite.

The workload is fixed so figures compare across versions (docs/explanation/merge.md):
one table of 6 columns (text, integer and real mixed), primary keys that look like random
128-bit UUID hex strings, 70% creates and 30% updates that touch 2 to 4 columns of an
existing row.

* **raw**: the same number of rows upserted with apsw ``executemany`` in one transaction,
  WAL: the physical limit of this stack.
* **in order**: the events signed into batches of 1,000 (``protocol.sign``), then timed:
  ``protocol.open_envelope`` (signature check and decode) and ``Store.apply_remote``,
  ten batches per transaction as during catch-up.
* **shuffled**: the same changes in a random order (re-sequenced for one origin, since a
  batch holds consecutive sequence numbers), so updates often arrive before their row's
  create and rows are parked and recomputed.
* **peak memory**: the process's peak resident set size.

Events are generated from their index on the fly, a group of batches at a time, so
memory stays flat whatever N is; only opening and applying is timed.
"""

from __future__ import annotations

import os
import random
import resource
import tempfile
import time
from pathlib import Path

from riversync.protocol import codec, hlc
from riversync.protocol.keys import NodeEntry, Roster, SigningKey, User
from riversync.protocol.messages import Batch, Create, Update
from riversync.protocol.version import VERSION

from . import db
from .schema import parse_schema
from .store import Store

BATCH = 1_000  # events per signed batch (the fixed workload)
GROUP = 10  # batches per apply transaction during catch-up
BASE_MS = 1_700_000_000_000
COLUMNS = {"name": "text", "qty": "integer", "price": "real", "note": "text",
           "count": "integer", "score": "real"}
SCHEMA = parse_schema({"version": 1, "tables": {"items": {
    "primary_key": "id", "columns": {"id": "text", **COLUMNS}}}})
_MUL = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: i -> i*MUL mod 2^128 is a bijection
_MASK = (1 << 128) - 1
_NAMES = list(COLUMNS)


def pk(i: int) -> str:
    """Key of the row event ``i`` creates: random-looking 128-bit hex, unique per i."""
    return format((i * _MUL + 0x1234567) & _MASK, "032x")


def _mix(i: int) -> int:
    return ((i + 1) * _MUL >> 64) & 0xFFFFFFFF


def is_create(i: int) -> bool:
    return i == 0 or _mix(i) % 100 < 70


def target(i: int) -> int:
    """The index of the (earlier) create an update at ``i`` changes."""
    j = (_mix(i) >> 8) % i
    while not is_create(j):
        j -= 1
    return j


def full_values(i: int) -> dict:
    return {"name": f"item {i}", "qty": i % 1000, "price": (i % 997) * 0.25,
            "note": f"note {i % 31}", "count": i, "score": (i % 89) / 7.0}


def update_values(i: int) -> dict:
    m = _mix(i)
    k = 2 + m % 3
    start = (m >> 4) % 6
    vals = full_values(i)
    return {_NAMES[(start + c) % 6]: vals[_NAMES[(start + c) % 6]] for c in range(k)}


def event(i: int, seq: int, epoch: int):
    common = dict(node="origin", epoch=epoch, seq=seq, hlc=hlc.make(BASE_MS + i // 16, i % 16),
                  schema=1, table="items", user="clerk", role="clerk", admin=False)
    if is_create(i):
        return Create(**common, pk=pk(i), values=full_values(i))
    return Update(**common, pk=pk(target(i)), values=update_values(i))


def roster() -> tuple[Roster, SigningKey]:
    key = SigningKey(b"\x07" * 32)
    nodes = {"origin": NodeEntry("origin", "office-a", key.public_key),
             "replica": NodeEntry("replica", "office-b", SigningKey(b"\x08" * 32).public_key)}
    return Roster("bench", nodes, {"clerk": User("clerk", "office-a", "clerk")}), key


def _raw(path: Path, n: int) -> float:
    conn = db.connect(str(path))
    conn.execute("CREATE TABLE items (id TEXT PRIMARY KEY NOT NULL, name TEXT, qty INTEGER,"
                 " price REAL, note TEXT, count INTEGER, score REAL) STRICT")
    sets = ", ".join(f"{c}=excluded.{c}" for c in COLUMNS)
    sql = f"INSERT INTO items VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET {sets}"
    elapsed = 0.0
    conn.execute("BEGIN")
    for start in range(0, n, BATCH * GROUP):
        rows = []
        for i in range(start, min(n, start + BATCH * GROUP)):
            v = full_values(i)
            rows.append((pk(i) if is_create(i) else pk(target(i)), *v.values()))
        t0 = time.perf_counter()
        conn.executemany(sql, rows)
        elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute("COMMIT")
    elapsed += time.perf_counter() - t0
    conn.close()
    return elapsed


def _replay(path: Path, order, n: int, epoch: int) -> tuple[float, Store]:
    ros, key = roster()
    store = Store.open(path, SCHEMA, ros, "replica", epoch=1)
    now = BASE_MS + n // 16 + 1000
    prev = codec.ZERO_HASH
    elapsed = 0.0
    seq = 0
    nb = 0
    for start in range(0, n, BATCH * GROUP):
        blobs = []
        for bstart in range(start, min(n, start + BATCH * GROUP), BATCH):
            events = []
            for idx in range(bstart, min(n, bstart + BATCH)):
                seq += 1
                events.append(event(order(idx), seq, epoch))
            nb += 1
            body = Batch(v=VERSION, c="bench", o="origin", ts=now, e=epoch, n=nb,
                         first=events[0].seq, last=events[-1].seq, prev=prev, events=events)
            blob = codec.sign(body, key)
            prev = codec.body_hash(codec.encode(body))
            blobs.append(blob)
        t0 = time.perf_counter()
        events = []
        for blob in blobs:
            _, body = codec.open_envelope(blob, ros)
            events.extend(body.events)
        store.apply_remote(events, now_ms=now, cursor=("hub", 1, nb))
        elapsed += time.perf_counter() - t0
    return elapsed, store


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run(n: int, *, seed: int = 1, workdir: str | None = None, check: bool = True) -> dict:
    """Run the three measurements on ``n`` events; returns the figures as a dict."""
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        raw_s = _raw(d / "raw.db", n)
        inorder_s, a = _replay(d / "inorder.db", lambda i: i, n, epoch=1)
        perm = list(range(n))
        random.Random(seed).shuffle(perm)
        shuffled_s, b = _replay(d / "shuffled.db", perm.__getitem__, n, epoch=2)
        del perm
        same = a.digests()["tables"] == b.digests()["tables"]
        stats = (a.stats(), b.stats())
        a.close()
        b.close()
        for f in d.iterdir():
            os.remove(f)
    raw = n / raw_s
    inorder = n / inorder_s
    shuffled = n / shuffled_s
    out = {
        "events": n,
        "raw_rows_per_s": round(raw),
        "inorder_events_per_s": round(inorder),
        "shuffled_events_per_s": round(shuffled),
        "inorder_ratio": round(inorder / raw, 3),
        "shuffled_ratio": round(shuffled / raw, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "same_state": same,
        "parked_left": stats[0]["parked"] + stats[1]["parked"],
    }
    if check and not (same and out["parked_left"] == 0):
        raise AssertionError(f"replays disagree: {out}")
    return out
