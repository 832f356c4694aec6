"""Helpers for the engine's tests: a fixed roster, schemas, event builders, state snapshots."""

from __future__ import annotations

from pathlib import Path

from riversync.engine.schema import load_schema
from riversync.engine.store import Store
from riversync.protocol import hlc
from riversync.protocol.keys import NodeEntry, Roster, SigningKey, User
from riversync.protocol.messages import Create, Delete, Resolve, Transfer, Update

DATA = Path(__file__).parent / "data"
LEAGUES = Path(__file__).parent.parent / "examples" / "leagues" / "schema.toml"

# Node ids sort east < hub < north < south, as in the shared failure-case fixture.
NODES = {"north": "north", "south": "south", "east": "east", "hub": "hq", "west": "north"}
SEEDS = {name: bytes([i + 1]) * 32 for i, name in enumerate(sorted(NODES))}


def signing_key(node: str) -> SigningKey:
    return SigningKey(SEEDS[node])


def roster(cluster: str = "test-cluster") -> Roster:
    nodes = {n: NodeEntry(n, office, signing_key(n).public_key) for n, office in NODES.items()}
    users = {
        "nora": User("nora", "north", "clerk"),
        "sam": User("sam", "south", "clerk"),
        "eve": User("eve", "east", "operator"),
        "admin": User("admin", "hq", "admin"),
        "hybrid": User("hybrid", "south", "clerk"),  # a south clerk who also works at north
    }
    return Roster(cluster, nodes, users)


def at(time: str, counter: int = 0) -> int:
    """HLC for ``HH:MM:SS.mmm`` on 2024-03-15 UTC (the cases' notation)."""
    h, m, rest = (time + ":00").split(":")[:3] if time.count(":") == 1 else time.split(":")
    s, _, ms = rest.partition(".")
    base = 1710460800000  # 2024-03-15T00:00:00Z
    wall = base + ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms or 0)
    return hlc.make(wall, counter)


NOW = hlc.wall(at("12:00:00"))  # a wall clock after every case's events


class Origin:
    """Builds one origin's events with consecutive sequence numbers."""

    def __init__(self, node: str, epoch: int = 1):
        self.node = node
        self.epoch = epoch
        self.seq = 0

    def _common(self, h, table, pk, user, admin, schema=1):
        self.seq += 1
        return dict(node=self.node, epoch=self.epoch, seq=self.seq, hlc=h, schema=schema,
                    table=table, pk=pk, user=user, role="x", admin=admin)

    def create(self, h, table, pk, values, user, admin=False, schema=1):
        return Create(**self._common(h, table, pk, user, admin, schema), values=values)

    def update(self, h, table, pk, values, user, admin=False, schema=1):
        return Update(**self._common(h, table, pk, user, admin, schema), values=values)

    def delete(self, h, table, pk, user, admin=False):
        return Delete(**self._common(h, table, pk, user, admin))

    def transfer(self, h, table, pk, owner, user, admin=False):
        return Transfer(**self._common(h, table, pk, user, admin), owner=owner)

    def resolve(self, h, table, pk, conflict, decision, user, values=None, admin=False):
        return Resolve(**self._common(h, table, pk, user, admin), conflict=conflict,
                       decision=decision, values=values or {})


def open_store(path, schema, node="east", epoch=99) -> Store:
    return Store.open(path, schema, roster(), node, epoch=epoch)


def snapshot(store: Store) -> dict:
    """Everything the merge rules decide, in the reference model's shape."""
    tables = {}
    for name, t in store.schema.tables.items():
        rows = {}
        for r in store.list_rows(name, limit=1_000_000):
            r = dict(r)
            pk = r.pop(t.primary_key)
            rows[pk] = r
        if rows:
            tables[name] = rows
    conflicts = {}
    for c in store.conflicts(open_only=False):
        conflicts[tuple(c["event"])] = (c["cause"], c["resolved_by"], c["decision"])
    parked = {tuple(p["event"]): p["cause"].split(":")[0] for p in store.parked()}
    rejected = {tuple(p["event"]): p["cause"] for p in store.rejected()}
    accepted = {tuple(a["event"]) for a in store.audit(limit=1_000_000)}
    return {"tables": tables, "conflicts": conflicts, "parked": parked,
            "rejected": rejected, "accepted": accepted}


def model_snapshot(st) -> dict:
    return {"tables": {t: rows for t, rows in st.tables.items() if rows},
            "conflicts": st.conflicts, "parked": st.parked, "rejected": st.rejected,
            "accepted": st.accepted}


def load(name: str):
    return load_schema(DATA / name)
