"""Convergence: any order, batching or duplication of the same events gives the same state.

Histories come from 3 to 5 origins (two of them at the same office, one admin identity,
one hybrid user) on a small key space with clashing clocks, so ties, same-key creations,
non-owner edits, deletes and re-creates, transfers, admin overrides, conflicts and
resolutions all happen.  Each history is applied to fresh replicas in different
permutations and batch splits, with duplicates; all must agree on every digest, and the
state must equal the reference model's (tests/model_merge.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from engine_util import NOW, Origin, load, model_snapshot, open_store, roster, snapshot
from hypothesis import given
from hypothesis import strategies as st
from model_merge import model

from riversync.protocol import hlc

SCHEMA = load("engine_props_schema.toml")
NODE_POOL = ["north", "south", "east", "hub", "west"]
USERS = ["nora", "sam", "eve", "admin", "hybrid", "nobody"]
OFFICES = ["north", "south", "east", "hq"]
CLUBS = ["c1", "c2", "c3"]
SQUADS = ["s1", "s2"]
BASE = NOW - 10_000


@st.composite
def histories(draw):
    nodes = draw(st.lists(st.sampled_from(NODE_POOL), min_size=3, max_size=5, unique=True))
    origins = {n: Origin(n, epoch=draw(st.integers(1, 3))) for n in nodes}
    events = []
    for _ in range(draw(st.integers(1, 28))):
        o = origins[draw(st.sampled_from(nodes))]
        h = hlc.make(BASE + draw(st.integers(0, 6)), draw(st.integers(0, 2)))
        user = draw(st.sampled_from(USERS))
        admin = draw(st.booleans()) if user == "admin" else draw(st.integers(0, 9)) == 0
        squad = draw(st.integers(0, 3)) == 0
        table = "squads" if squad else "clubs"
        pk = draw(st.sampled_from(SQUADS if squad else CLUBS))
        kind = draw(st.sampled_from(
            ["create", "create", "update", "update", "update", "delete", "transfer", "resolve"]))
        schema_v = 2 if draw(st.integers(0, 30)) == 0 else 1
        if kind in ("create", "update"):
            if squad:
                vals = {"label": draw(st.sampled_from(["a", "b", None]))}
                if kind == "create" or draw(st.integers(0, 4)) == 0:
                    vals["club_id"] = draw(st.sampled_from(CLUBS + ["zz"]))
            else:
                pool = {"name": st.sampled_from(["n1", "n2"]),
                        "phone": st.sampled_from(["p1", "p2", None]),
                        "size": st.sampled_from([1, 2, None, "bad"])}
                cols = draw(st.lists(st.sampled_from(sorted(pool)), min_size=1, max_size=3,
                                     unique=True))
                if kind == "create" and draw(st.integers(0, 5)) > 0 and "name" not in cols:
                    cols.append("name")
                vals = {c: draw(pool[c]) for c in cols}
            fn = o.create if kind == "create" else o.update
            events.append(fn(h, table, pk, vals, user, admin, schema=schema_v))
        elif kind == "delete":
            events.append(o.delete(h, table, pk, user, admin))
        elif kind == "transfer":
            events.append(o.transfer(h, table, pk, draw(st.sampled_from(OFFICES)), user, admin))
        else:
            if not events:
                continue
            target = draw(st.sampled_from(events))
            cid = f"{target.node}:{target.epoch}:{target.seq}"
            decision = draw(st.sampled_from(["accept", "keep", "merge"]))
            vals = {}
            if decision != "keep" and target.table == table:
                vals = dict(getattr(target, "values", {}) or {})
            events.append(o.resolve(h, target.table, target.pk, cid, decision, user, vals,
                                    admin))
    return events


def _apply_in_batches(store, events, cuts):
    start = 0
    for cut in sorted(cuts) + [len(events)]:
        if cut > start:
            store.apply_remote(events[start:cut], now_ms=NOW)
            start = cut


@given(histories(), st.randoms(use_true_random=False), st.data())
def test_replicas_converge_and_match_the_model(events, rnd, data):
    """Proves [M-PURE-1]: order, batching and duplication do not change any digest."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        a = open_store(d / "a.db", SCHEMA)
        a.apply_remote(events, now_ms=NOW)

        shuffled = list(events)
        rnd.shuffle(shuffled)
        b = open_store(d / "b.db", SCHEMA)
        cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=6))
        _apply_in_batches(b, shuffled, cuts)

        dup = list(events) + [rnd.choice(events) for _ in range(len(events) // 2)]
        rnd.shuffle(dup)
        c = open_store(d / "c.db", SCHEMA)
        for ev in dup:  # one event per transaction, duplicates included
            c.apply_remote([ev], now_ms=NOW)
        c.apply_remote(events, now_ms=NOW)  # a whole re-delivery changes nothing

        da, db_, dc = a.digests(), b.digests(), c.digests()
        assert da == db_ == dc
        expected = model_snapshot(model(events, SCHEMA, roster()))
        assert snapshot(a) == expected
        assert a.verify_audit() and b.verify_audit() and c.verify_audit()
        for s in (a, b, c):
            s.close()
