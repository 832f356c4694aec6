"""How fast could replay be on this stack?  Floors under the replay benchmark's workload.

``riversync bench replay`` compares the engine with a raw ``executemany`` upsert.  This
script runs the same fixed workload (``engine.replay_bench``) through pipelines that each
do *less* than the engine, with as little Python as possible, so the step from one to the
next is what that part costs, measured in the same run:

1. ``open``: verify and decode the signed batches, nothing else;
2. ``rows``: (1) plus writing each event's row (INSERT for a create, UPDATE of its columns
   for an update), one transaction: the least any replay of signed batches must do;
3. ``+journal``: (2) plus the journal row every held event needs and its id entry (the
   engine's ``_rs_journal`` and ``_rs_ids``);
4. ``+summary``: (3) plus reading and writing the per-row merge summary ``_rs_rows`` the
   engine's fast path judges from: the engine's SQL with no merge logic in Python;
5. ``+commits``: (4) committing every ten batches, as the engine does during catch-up;
6. ``engine``: ``Store.apply_remote`` itself (the benchmark's in-order figure).

Run: ``.venv/bin/python bench/bench_replay_floor.py [EVENTS] [--json]`` (default 200,000).
Figures are per event and as a ratio of raw upsert rows per second.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from array import array
from pathlib import Path

import msgspec

from riversync.engine import db, replay_bench
from riversync.engine.schema import create_table_sql
from riversync.engine.tables import MIGRATIONS
from riversync.protocol import codec
from riversync.protocol.messages import CREATE, Batch
from riversync.protocol.version import VERSION

STEPS = ("open", "rows", "+journal", "+summary", "+commits")
_enc = msgspec.msgpack.Encoder().encode


def _groups(n: int):
    """Signed batches of the in-order workload, ``GROUP`` batches at a time."""
    _, key = replay_bench.roster()
    now = replay_bench.BASE_MS + n // 16 + 1000
    prev, nb, size = codec.ZERO_HASH, 0, replay_bench.BATCH
    for start in range(0, n, size * replay_bench.GROUP):
        blobs = []
        for b in range(start, min(n, start + size * replay_bench.GROUP), size):
            events = [replay_bench.event(i, i + 1, 1) for i in range(b, min(n, b + size))]
            nb += 1
            body = Batch(v=VERSION, c="bench", o="origin", ts=now, e=1, n=nb,
                         first=events[0].seq, last=events[-1].seq, prev=prev, events=events)
            blobs.append(codec.sign(body, key))
            prev = codec.body_hash(codec.encode(body))
        yield blobs


def _floor(path: Path, n: int, step: str) -> float:
    """Seconds spent opening and writing ``n`` events as far as ``step`` goes."""
    level = STEPS.index(step)
    ros, _ = replay_bench.roster()
    conn = db.connect(str(path))
    db.migrate(conn, MIGRATIONS)
    conn.execute(create_table_sql(replay_bench.SCHEMA.tables["items"]))
    cols = list(replay_bench.COLUMNS)
    insert = f"INSERT INTO items VALUES ({','.join('?' * (len(cols) + 1))})"
    elapsed, jid, open_tx = 0.0, 0, False
    for blobs in _groups(n):
        t0 = time.perf_counter()
        events = []
        for blob in blobs:
            events.extend(codec.open_envelope(blob, ros)[1].events)
        if level == 0:
            elapsed += time.perf_counter() - t0
            continue
        if not open_tx:
            conn.execute("BEGIN IMMEDIATE")
            open_tx = True
        journal, inserts, updates, known = [], [], {}, {}
        if level >= 3:
            known = {pk: [mh, blob] for pk, mh, blob in conn.execute(
                "SELECT pk, mh, jids FROM _rs_rows WHERE tbl='items' AND pk IN"
                " (SELECT value FROM json_each(?))", (json.dumps([e.pk for e in events]),))}
        written = {}
        for ev in events:
            jid += 1
            values = ev.values
            if level >= 2:
                journal.append((jid, ev.node, ev.epoch, ev.seq, ev.hlc, ev.kind, ev.table, ev.pk,
                                None, _enc(ev), None))
            if ev.kind == CREATE:
                inserts.append((ev.pk, *[values.get(c) for c in cols]))
                summary = known[ev.pk] = [ev.hlc, array("q", (jid,)).tobytes()]
            else:
                shape = tuple(sorted(values))
                updates.setdefault(shape, []).append((*[values[c] for c in shape], ev.pk))
                summary = known.get(ev.pk)
                if summary is not None:
                    summary[0] = ev.hlc
                    summary[1] += array("q", (jid,)).tobytes()
            written[ev.pk] = summary
        if journal:
            conn.executemany("INSERT INTO _rs_journal VALUES (?,?,?,?,?,?,?,?,?,?,?)", journal)
            conn.execute("INSERT INTO _rs_ids SELECT node, epoch, seq, jid FROM _rs_journal"
                         " WHERE jid >= ?", (journal[0][0],))
        conn.executemany(insert, inserts)
        for shape, params in updates.items():
            sets = ", ".join(f"{c}=?" for c in shape)
            conn.executemany(f"UPDATE items SET {sets} WHERE id=?", params)
        if level >= 3:
            conn.executemany(
                "INSERT OR REPLACE INTO _rs_rows(tbl, pk, known, live, created, owner0,"
                " transfers, ppk, mh, mn, me, jids) VALUES"
                " ('items', ?, 1, 1, 1, 'office-a', NULL, NULL, ?, 'origin', 1, ?)",
                [(pk, s[0], s[1]) for pk, s in written.items()])
        if level >= 4:
            conn.execute("COMMIT")
            open_tx = False
        elapsed += time.perf_counter() - t0
    if open_tx:
        t0 = time.perf_counter()
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - t0
    conn.close()
    return elapsed


def run(n: int) -> dict:
    """Every floor, the engine and raw on ``n`` events; per-event µs and ratio to raw."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        raw = replay_bench._raw(d / "raw.db", n)
        seconds = {step: _floor(d / f"floor{i}.db", n, step) for i, step in enumerate(STEPS)}
        seconds["engine"], store = replay_bench._replay(d / "engine.db", lambda i: i, n, 1)
        store.close()
    out = {"events": n, "raw_us_per_event": round(raw / n * 1e6, 2)}
    for step, s in seconds.items():
        out[step] = {"us_per_event": round(s / n * 1e6, 2), "ratio": round(raw / s, 3)}
    return out


def main(argv: list[str]) -> None:
    n = next((int(a) for a in argv if a.isdigit()), 200_000)
    out = run(n)
    if "--json" in argv:
        print(json.dumps(out))
        return
    print(f"{n:,} events; raw upsert {out['raw_us_per_event']} us/row")
    for step in (*STEPS, "engine"):
        print(f"  {step:10s} {out[step]['us_per_event']:6.2f} us/event   "
              f"{out[step]['ratio']:.3f}x raw")


def test_replay_floors(benchmark):
    out = benchmark.pedantic(run, args=(20_000,), rounds=1, iterations=1)
    benchmark.extra_info.update(out)


if __name__ == "__main__":
    main(sys.argv[1:])
