"""State digests: how two replicas tell, cheaply, whether they hold the same thing.

Each digest is a SHA-256 over a canonical, sorted listing, so it depends only on the
content, never on arrival order or rowids.  ``events`` is a version vector (highest
contiguous sequence per origin ``node/epoch``), which says whether two replicas hold the
same events; the others say whether they reached the same state from them.
"""

from __future__ import annotations

import hashlib

import msgspec

from .schema import q

_enc = msgspec.msgpack.Encoder()


def _hash_rows(rows) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(_enc.encode(list(row)))
    return h.hexdigest()


def table_digest(conn, table) -> str:
    cols = ", ".join(q(c) for c in [table.primary_key, *table.columns])
    return _hash_rows(conn.execute(
        f"SELECT {cols} FROM {q(table.name)} ORDER BY {q(table.primary_key)}"))


def digests(store) -> dict:
    conn = store.conn
    tables = {name: table_digest(conn, t) for name, t in sorted(store.schema.tables.items())}
    conflicts = _hash_rows(conn.execute(
        "SELECT j.node, j.epoch, j.seq, s.tbl, s.pk, s.cause, s.closed_by, s.decision"
        " FROM _rs_status s JOIN _rs_journal j USING (jid) WHERE s.status='conflict'"
        " ORDER BY j.node, j.epoch, j.seq"))
    parked = _hash_rows(conn.execute(
        "SELECT j.node, j.epoch, j.seq, s.status, s.cause FROM _rs_status s"
        " JOIN _rs_journal j USING (jid) WHERE s.status IN ('parked', 'rejected')"
        " ORDER BY j.node, j.epoch, j.seq"))
    audit = _hash_rows(conn.execute(
        "SELECT node, epoch, seq FROM _rs_ids i WHERE NOT EXISTS"
        " (SELECT 1 FROM _rs_status s WHERE s.jid=i.jid) ORDER BY node, epoch, seq"))
    events = {f"{n}/{e}": c for n, e, c in conn.execute(
        "SELECT node, epoch, contiguous FROM _rs_origins WHERE contiguous > 0"
        " ORDER BY node, epoch")}
    state = hashlib.sha256(_enc.encode([tables, conflicts, parked, audit])).hexdigest()
    return {"tables": tables, "conflicts": conflicts, "parked": parked, "audit": audit,
            "events": events, "state": state}
