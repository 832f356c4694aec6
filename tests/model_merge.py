"""Reference model of DESIGN.md's merge rules: the oracle the engine is compared with.

Deliberately naive: it takes the whole *set* of held events at once and recomputes
everything from nothing, with no journal, no fast path, no SQLite and no incremental
state.  It shares no code with ``engine/merge.py``; it reads the schema and roster only.
If the engine and this model disagree, one of them has a bug; the model is short enough
to check by eye against the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelState:
    tables: dict = field(default_factory=dict)  # table -> {pk: {col: value}} (pk excluded)
    conflicts: dict = field(default_factory=dict)  # event id -> (cause, closed_by, decision)
    parked: dict = field(default_factory=dict)  # event id -> cause prefix
    rejected: dict = field(default_factory=dict)  # event id -> cause
    accepted: set = field(default_factory=set)  # event ids (the audit set)


def _key(ev):
    return (ev.hlc, ev.node, ev.epoch)


def _sort_key(ev):
    return (ev.hlc, ev.node, ev.epoch, ev.seq)


def _eid(ev):
    return (ev.node, ev.epoch, ev.seq)


def _office(ev, roster):
    user = roster.users.get(ev.user)
    return user.home_office if user else roster.nodes[ev.node].office


def _admin(ev, roster):
    user = roster.users.get(ev.user)
    return ev.admin and user is not None and user.role == "admin"


def _bad(ev, schema):
    """The static reason an event can never be judged under this schema, or None."""
    t = schema.tables.get(ev.table)
    if t is None:
        return "unknown table"
    if ev.schema > schema.version:
        return "newer schema version"
    if not ev.pk or len(ev.pk) > t.max_pk_chars:
        return "bad value"
    vals = getattr(ev, "values", None) or {}
    for c, v in vals.items():
        if c not in t.columns or t.columns[c].check(v):
            return "bad value"
    if ev.kind == "create":
        for c in t.columns.values():
            if c.required and c.name not in vals and c.default is None:
                return "bad value"
    return None


def _refs(ev, t):
    if ev.kind not in ("create", "update", "resolve"):
        return []
    return [(c.references, ev.values[c.name]) for c in t.columns.values()
            if c.references and ev.values.get(c.name) is not None]


def model(events, schema, roster) -> ModelState:
    evs = {}
    for ev in events:
        evs[_eid(ev)] = ev
    st = ModelState()
    rows: dict = {}
    for ev in evs.values():
        rows.setdefault((ev.table, ev.pk), []).append(ev)
    for lst in rows.values():
        lst.sort(key=_sort_key)

    # Which rows are known: least fixed point of "has a create whose references are known".
    known: set = set()
    changed = True
    while changed:
        changed = False
        for (tbl, pk), lst in rows.items():
            if (tbl, pk) in known or tbl not in schema.tables:
                continue
            t = schema.tables[tbl]
            for ev in lst:
                if ev.kind == "create" and not _bad(ev, schema) and all(
                        r in known for r in _refs(ev, t)):
                    known.add((tbl, pk))
                    changed = True
                    break

    def active(tbl, pk):
        t = schema.tables[tbl]
        return [e for e in rows.get((tbl, pk), [])
                if not _bad(e, schema) and all(r in known for r in _refs(e, t))]

    def first_create(tbl, pk):
        return next(e for e in active(tbl, pk) if e.kind == "create")

    def owner_at(tbl, pk, k):
        t = schema.tables[tbl]
        if t.ownership != "creator":
            pcol = t.ownership.split(":", 1)[1]
            return owner_at(t.columns[pcol].references, first_create(tbl, pk).values[pcol], k)
        owner = _office(first_create(tbl, pk), roster)
        for e in active(tbl, pk):  # sorted: each transfer judged by the owner before it
            if e.kind == "transfer" and _key(e) < k:
                if _admin(e, roster) or _office(e, roster) == owner:
                    owner = e.owner
        return owner

    def may(ev, tbl, pk):
        return _admin(ev, roster) or _office(ev, roster) == owner_at(tbl, pk, _key(ev))

    for (tbl, pk), lst in rows.items():
        t = schema.tables.get(tbl)
        for ev in lst:
            if _bad(ev, schema):
                st.parked[_eid(ev)] = _bad(ev, schema)
            elif any(r not in known for r in _refs(ev, t)):
                st.parked[_eid(ev)] = "missing referenced row"
        if t is None:
            continue
        if (tbl, pk) not in known:
            for ev in active(tbl, pk):
                st.parked[_eid(ev)] = "row not known"
            continue
        parent_col = None if t.ownership == "creator" else t.ownership.split(":", 1)[1]
        fixed = first_create(tbl, pk).values[parent_col] if parent_col else None
        acts = active(tbl, pk)
        ids = {_eid(e) for e in lst}
        verdict: dict = {}
        winner: dict = {}
        for ev in acts:
            if ev.kind == "resolve" and may(ev, tbl, pk):
                winner[ev.conflict] = _eid(ev)  # ascending: the last is the greatest
        row = None
        created = False
        for ev in acts:
            eid = _eid(ev)
            if ev.kind == "transfer":
                if parent_col:
                    verdict[eid] = ("conflict", "row follows its parent's owner")
                elif may(ev, tbl, pk):
                    verdict[eid] = ("accepted", "")
                else:
                    verdict[eid] = ("conflict", "not owner")
                if verdict[eid][0] == "conflict":
                    st.conflicts[eid] = (verdict[eid][1], None, None)
                continue
            if ev.kind == "resolve":
                n, e, s = ev.conflict.rsplit(":", 2)
                target = (n, int(e), int(s))
                if not may(ev, tbl, pk):
                    verdict[eid] = ("rejected", "not owner")
                elif target not in ids:
                    verdict[eid] = ("parked", "conflict not known")
                elif verdict.get(target, ("",))[0] != "conflict":
                    verdict[eid] = ("rejected", "not a conflict")
                elif parent_col and parent_col in ev.values and ev.values[parent_col] != fixed:
                    verdict[eid] = ("rejected", "ownership column is fixed")
                else:
                    verdict[eid] = ("accepted", "")
                    if winner[ev.conflict] == eid:
                        st.conflicts[target] = (st.conflicts[target][0], "{}:{}:{}".format(*eid), ev.decision)
                        if ev.decision != "keep" and row is not None:
                            row.update(ev.values)
                continue
            if not may(ev, tbl, pk):
                verdict[eid] = ("conflict", "not owner")
            elif (parent_col and ev.kind != "delete" and parent_col in ev.values
                  and ev.values[parent_col] != fixed):
                verdict[eid] = ("conflict", "ownership column is fixed")
            elif ev.kind == "update" and row is None:
                verdict[eid] = ("conflict", "row deleted" if created else "row not created yet")
            elif ev.kind == "delete" and not created:
                verdict[eid] = ("conflict", "row not created yet")
            else:
                verdict[eid] = ("accepted", "")
                if ev.kind == "create":
                    row = {c.name: c.default for c in t.columns.values()}
                    row.update(ev.values)
                    created = True
                elif ev.kind == "update":
                    row.update(ev.values)
                else:
                    row = None
            if verdict[eid][0] == "conflict":
                st.conflicts[eid] = (verdict[eid][1], None, None)
        for eid, (status, cause) in verdict.items():
            if status == "accepted":
                st.accepted.add(eid)
            elif status == "rejected":
                st.rejected[eid] = cause
            elif status == "parked":
                st.parked[eid] = cause
        if row is not None:
            st.tables.setdefault(tbl, {})[pk] = row
    return st
