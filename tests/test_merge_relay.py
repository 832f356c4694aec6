"""Convergence through the real write path: local commits at three nodes, partial syncs.

Where tests/test_merge_convergence.py feeds hand-made events, this drives
``Store.commit_local`` (real HLCs, sequence numbers, local refusals) at three nodes with
skewed clocks, relays events between them in random partial syncs, and checks that a
refused local change changes nothing, and that after a full exchange every node holds the
same state, equal to the reference model's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from engine_util import NOW, load, model_snapshot, open_store, roster, snapshot
from hypothesis import event, given
from hypothesis import strategies as st
from model_merge import model

from riversync.engine.errors import EngineError
from riversync.engine.store import LocalChange, _ev_dec

SCHEMA = load("engine_props_schema.toml")
NODES = ["north", "south", "east"]
USERS = {"north": ["nora", "admin", "hybrid"], "south": ["sam", "hybrid"], "east": ["eve"]}

change = st.one_of(
    st.tuples(st.just("create"), st.just("clubs"), st.sampled_from(["c1", "c2"]),
              st.fixed_dictionaries({"name": st.sampled_from(["a", "b"])},
                                    optional={"size": st.integers(0, 3)})),
    st.tuples(st.just("update"), st.just("clubs"), st.sampled_from(["c1", "c2"]),
              st.fixed_dictionaries({"phone": st.sampled_from(["1", "2", None])},
                                    optional={"size": st.integers(0, 3)})),
    st.tuples(st.just("delete"), st.just("clubs"), st.sampled_from(["c1", "c2"]), st.just({})),
    st.tuples(st.just("transfer"), st.just("clubs"), st.sampled_from(["c1", "c2"]),
              st.sampled_from(["north", "south", "east"])),
    st.tuples(st.just("create"), st.just("squads"), st.sampled_from(["s1", "s2"]),
              st.fixed_dictionaries({"club_id": st.sampled_from(["c1", "c2"]),
                                     "label": st.sampled_from(["x", "y"])})),
    st.tuples(st.just("update"), st.just("squads"), st.sampled_from(["s1", "s2"]),
              st.fixed_dictionaries({"label": st.sampled_from(["x", "y", None])})),
    st.tuples(st.just("resolve"), st.just(""), st.just(""), st.sampled_from(["accept", "keep"])),
)
local = st.tuples(st.just("local"), st.integers(0, 2), st.integers(0, 2), change,
                  st.integers(-3000, 3000), st.booleans())
step = st.one_of(local, local, st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)))


def _events(store):
    return [_ev_dec.decode(b) for (b,) in store.conn.execute(
        "SELECT body FROM _rs_journal ORDER BY jid")]


@given(st.lists(step, min_size=8, max_size=40))
def test_local_writes_relayed_in_any_pattern_converge(steps):
    """Proves [M-PURE-1] through the real write path."""
    with tempfile.TemporaryDirectory() as d:
        stores = [open_store(Path(d) / f"{n}.db", SCHEMA, node=n, epoch=i + 1)
                  for i, n in enumerate(NODES)]
        now = NOW - 60_000
        for s in steps:
            now += 10
            if s[0] == "sync":
                src, dst = stores[s[1]], stores[s[2]]
                dst.apply_remote(_events(src), now_ms=now)
                continue
            _, ni, ui, (kind, table, pk, arg), skew, admin = s
            store = stores[ni]
            users = USERS[NODES[ni]]
            user = users[ui % len(users)]
            if kind == "resolve":
                open_ = store.conflicts()
                if not open_:
                    continue
                ch = LocalChange("resolve", conflict=open_[0]["id"], decision=arg)
            elif kind == "transfer":
                ch = LocalChange("transfer", table, pk, owner=arg)
            else:
                ch = LocalChange(kind, table, pk, dict(arg) or None)
            before = store.digests()
            try:
                store.commit_local([ch], user=user, now_ms=now + skew,
                                   admin=admin and user == "admin")
                event(f"committed {kind}")
            except EngineError as e:
                event(f"refused {e.code}")
                assert store.digests() == before
        union = [ev for s in stores for ev in _events(s)]
        for s in stores:
            s.apply_remote(union, now_ms=now + 10_000)
        event(f"conflicts: {min(len(stores[0].conflicts(open_only=False)), 3)}")
        states = {s.digests()["state"] for s in stores}
        assert len(states) == 1
        expected = model_snapshot(model(union, SCHEMA, roster()))
        assert snapshot(stores[0]) == expected
        for s in stores:
            s.close()
