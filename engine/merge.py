"""Merge decisions: pure functions from held events to one row's state.

Theory of operation.  The state of a replica is a pure function of the set of events it
holds (DESIGN.md, "Merge rules").  This module states that function for one row:
``fold_row`` takes every held event of the row, sorts them by order key
``(hlc, node, epoch)`` and folds them:

1. *Static checks* park what cannot be judged yet or ever under this schema: unknown
   table, newer schema version, a value that fails its column, a reference to a row not
   yet known.
2. *Known*: a row with no (unparked) create is not known; its other events are parked
   with cause "row not known" until a create arrives.
3. *Ownership*: the owner at order key ``k`` is the target of the greatest valid transfer
   below ``k``, else the acting office of the row's first create.  Rows of a table with
   ``ownership = "parent:<column>"`` follow their parent row's owner at ``k``.
4. *Data*: in order, each create/update/delete is judged (``judge``); accepted ones fold
   into the row (per-column last-writer-wins, a create resets the row, a delete makes a
   tombstone that only a create undoes).  Refused ones are conflicts with a cause.
5. *Resolutions*: of all authorised resolves of one conflict the greatest order key is
   the winner; it closes the conflict and, for accept/merge on a live row, sets its
   values.  A resolve is never itself a conflict: an unauthorised one is rejected.

The store calls ``judge`` directly on its fast path (an event newer than anything known
for its row) and ``fold_row`` whenever a row must be recomputed, so both paths share one
set of rules.  Nothing here touches SQLite, clocks or randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from riversync.protocol.keys import Roster
from riversync.protocol.messages import CREATE, DELETE, KEEP, RESOLVE, TRANSFER, UPDATE

from .schema import Schema, Table

Key = tuple[int, str, int]  # (hlc, node, epoch)
EventId = tuple[str, int, int]  # (node, epoch, seq)
RowRef = tuple[str, str]  # (table, pk)

ACCEPTED = "accepted"
CONFLICT = "conflict"
PARKED = "parked"
REJECTED = "rejected"  # a resolve that may not take effect; never a conflict

# Causes: stable strings, shown to operators and hashed into digests.
NOT_OWNER = "not owner"
ROW_DELETED = "row deleted"
ROW_NOT_CREATED = "row not created yet"
FOLLOWS_PARENT = "row follows its parent's owner"
FIXED_PARENT = "ownership column is fixed"
UNKNOWN_TABLE = "unknown table"
NEWER_SCHEMA = "newer schema version"
BAD_VALUE = "bad value"
ROW_NOT_KNOWN = "row not known"
MISSING_REF = "missing referenced row"
CONFLICT_NOT_KNOWN = "conflict not known"
NOT_A_CONFLICT = "not a conflict"


@dataclass(frozen=True)
class Verdict:
    status: str
    cause: str = ""
    wait: RowRef | None = None  # parked: the row whose arrival may unpark it

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


ACCEPT_VERDICT = Verdict(ACCEPTED)


def conflict_id(event_id: EventId) -> str:
    """The id of the conflict an event causes: the same on every node."""
    node, epoch, seq = event_id
    return f"{node}:{epoch}:{seq}"


def parse_conflict_id(cid: str) -> EventId | None:
    parts = cid.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return (parts[0], int(parts[1]), int(parts[2]))


class Rules:
    """Who acts for which office: the roster's view, shared by every merge decision."""

    def __init__(self, schema: Schema, roster: Roster):
        self.schema = schema
        self.roster = roster

    def acting_office(self, ev) -> str | None:
        """The home office of the event's user; the signing node's office if unlisted."""
        u = self.roster.users.get(ev.user)
        if u is not None:
            return u.home_office
        return self.roster.office_of_node(ev.node)

    def overrides(self, ev) -> bool:
        """An admin override: the event says so and the roster makes its user an admin."""
        return bool(ev.admin) and self.roster.is_admin(ev.user)

    def authorised(self, ev, owner: str | None) -> bool:
        return self.overrides(ev) or (owner is not None and self.acting_office(ev) == owner)


def static_verdict(ev, schema: Schema) -> Verdict | None:
    """Parked verdict for an event this schema cannot judge, else None."""
    table = schema.tables.get(ev.table)
    if table is None:
        return Verdict(PARKED, f"{UNKNOWN_TABLE}: {ev.table}")
    if ev.schema > schema.version:
        return Verdict(PARKED, f"{NEWER_SCHEMA}: {ev.schema} > {schema.version}")
    why = table.check_pk(ev.pk)
    if why is None and ev.kind in (CREATE, UPDATE, RESOLVE):
        why = table.check_values(ev.values, creating=ev.kind == CREATE)
    if why:
        return Verdict(PARKED, f"{BAD_VALUE}: {why}")
    return None


def ref_waits(ev, table: Table) -> list[RowRef]:
    """Rows an event's values point at; each must be known before it can apply."""
    if ev.kind not in (CREATE, UPDATE, RESOLVE):
        return []
    out = []
    for col, target in table.references.items():
        v = ev.values.get(col)
        if v is not None:
            out.append((target, v))
    return out


def judge(kind: str, *, authorised: bool, live: bool, created_before: bool,
          parent_ok: bool = True) -> Verdict:
    """Verdict for a create, update or delete at its order key, given the row there."""
    if not authorised:
        return Verdict(CONFLICT, NOT_OWNER)
    if not parent_ok:
        return Verdict(CONFLICT, FIXED_PARENT)
    if kind == UPDATE and not live:
        return Verdict(CONFLICT, ROW_DELETED if created_before else ROW_NOT_CREATED)
    if kind == DELETE and not created_before:
        return Verdict(CONFLICT, ROW_NOT_CREATED)
    return ACCEPT_VERDICT


def owner_at(owner0: str | None, transfers: list[tuple[Key, str]], k: Key) -> str | None:
    """Target of the greatest transfer below ``k``, else the first creator's office."""
    for tk, target in reversed(transfers):
        if tk < k:
            return target
    return owner0


def parent_ok(table: Table, values: dict, ppk: str | None) -> bool:
    col = table.parent_column
    return col is None or col not in values or values[col] == ppk


@dataclass
class RowResult:
    known: bool
    values: dict | None = None  # the live row's columns (pk excluded); None if not live
    owner0: str | None = None
    transfers: list[tuple[Key, str]] = field(default_factory=list)
    ppk: str | None = None
    max_key: Key | None = None
    created: bool = False  # a valid create was ever applied (a delete leaves it True)
    verdicts: dict[EventId, Verdict] = field(default_factory=dict)
    closed: dict[EventId, tuple[EventId, str]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.values is not None

    @property
    def owner(self) -> str | None:
        return self.transfers[-1][1] if self.transfers else self.owner0


def fold_row(
    table: Table,
    pk: str,
    events: Iterable,
    rules: Rules,
    known: Callable[[str, str], bool],
    parent_owner_at: Callable[[str, str, Key], str | None],
) -> RowResult:
    """The state of row ``(table, pk)`` given every held event of it.

    ``known(table, pk)`` says whether a referenced row has a create; ``parent_owner_at``
    gives a parent row's owner at an order key (for parent-owned tables).
    """
    # seq breaks ties a misbehaving origin could create by reusing one HLC
    evs = sorted(events, key=lambda e: (e.hlc, e.node, e.epoch, e.seq))
    verdicts: dict[EventId, Verdict] = {}
    active = []
    schema = rules.schema
    has_refs = bool(table.references)
    for ev in evs:
        v = static_verdict(ev, schema)
        if v is None and has_refs:
            for ref in ref_waits(ev, table):
                if not known(*ref):
                    v = Verdict(PARKED, f"{MISSING_REF}: {ref[0]} {ref[1]!r}", ref)
                    break
        if v is None:
            active.append(ev)
        else:
            verdicts[ev.event_id] = v
    creates = [e for e in active if e.kind == CREATE]
    if not creates:
        for ev in active:
            verdicts[ev.event_id] = Verdict(PARKED, ROW_NOT_KNOWN, (table.name, pk))
        return RowResult(known=False, verdicts=verdicts)

    res = RowResult(known=True, verdicts=verdicts)
    first = creates[0]
    pcol = table.parent_column
    if pcol:
        ptbl = table.parent_table
        ppk = first.values[pcol]
        res.ppk = ppk

        def owner_fn(k: Key) -> str | None:
            return parent_owner_at(ptbl, ppk, k)
    else:
        res.owner0 = rules.acting_office(first)
        for ev in active:
            if ev.kind != TRANSFER:
                continue
            if rules.authorised(ev, owner_at(res.owner0, res.transfers, ev.order_key)):
                res.transfers.append((ev.order_key, ev.owner))
                verdicts[ev.event_id] = ACCEPT_VERDICT
            else:
                verdicts[ev.event_id] = Verdict(CONFLICT, NOT_OWNER)

        def owner_fn(k: Key) -> str | None:
            return owner_at(res.owner0, res.transfers, k)

    winners: dict[str, object] = {}
    for ev in active:
        if ev.kind == RESOLVE and rules.authorised(ev, owner_fn(ev.order_key)):
            winners[ev.conflict] = ev  # ascending order: the last one is the greatest

    row_ids = {ev.event_id for ev in evs}
    values: dict | None = None
    created = False
    seen: set[EventId] = set()  # judged before the current event, in order-key order
    for ev in active:
        kind = ev.kind
        eid = ev.event_id
        seen.add(eid)
        if kind == TRANSFER:
            if pcol:
                verdicts[eid] = Verdict(CONFLICT, FOLLOWS_PARENT)
            continue
        auth = rules.authorised(ev, owner_fn(ev.order_key))
        if kind == RESOLVE:
            target = parse_conflict_id(ev.conflict)
            if not auth:
                verdicts[eid] = Verdict(REJECTED, NOT_OWNER)
            elif target not in row_ids:
                verdicts[eid] = Verdict(PARKED, CONFLICT_NOT_KNOWN, (table.name, pk))
            elif target not in seen or verdicts[target].status != CONFLICT:
                verdicts[eid] = Verdict(REJECTED, NOT_A_CONFLICT)
            elif not parent_ok(table, ev.values, res.ppk):
                verdicts[eid] = Verdict(REJECTED, FIXED_PARENT)
            else:
                verdicts[eid] = ACCEPT_VERDICT
                if winners.get(ev.conflict) is ev:
                    res.closed[target] = (eid, ev.decision)
                    if ev.decision != KEEP and values is not None:
                        values.update(ev.values)
            continue
        pok = kind == DELETE or parent_ok(table, ev.values, res.ppk)
        v = judge(kind, authorised=auth, live=values is not None, created_before=created,
                  parent_ok=pok)
        verdicts[eid] = v
        if not v.accepted:
            continue
        if kind == CREATE:
            values = table.full_row(ev.values)
            created = True
        elif kind == UPDATE:
            values.update(ev.values)
        else:
            values = None
    res.values = values
    res.created = created
    keys = [ev.order_key for ev in evs if verdicts[ev.event_id].status != PARKED]
    res.max_key = max(keys) if keys else None
    return res
