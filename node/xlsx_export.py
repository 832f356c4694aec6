"""Excel export: a read-only snapshot of live rows, scoped by league, session or office.

Theory of operation
-------------------
A snapshot is read inside one SQLite read transaction, so every sheet shows the same
moment, named by the snapshot HLC (the greatest HLC the node had folded in).  Each table
gets a sheet with typed cells: numbers as numbers, dates as real date cells, money as
currency units, text as text (so ``00042`` keeps its zeros and a value starting with
``=`` is never written as a formula).  The ``_riversync`` sheet holds the node, scope,
snapshot HLC and a do-not-re-import marker; the Excel import looks for that sheet and
flags the batch for explicit confirmation, because applying a snapshot writes old values
over newer ones.  Sheets are protected (no password) to say "read-only" to a clerk.

Scope ``office=ID`` keeps rows owned by that office.  Scope ``<entity>=ID`` (``league``,
``session``, ...) keeps the row ``ID`` of the table named after the entity (``leagues``),
and every row that references a kept row, transitively (sessions of the league,
registrations of those sessions).  The file is written to a temporary name, fsynced and
renamed, so a reader never sees half a workbook.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from .staging import EXCEL_EXACT, StagingError, TableRules
from .xlsx_import import EXPORT_MARKER, META_SHEET, escape_text

OWNER_HEADER = "(owner)"  # an extra column naming each row's owning office; import ignores it


class BadScope(StagingError):
    code = "EXPORT_BAD_SCOPE"
    hint = "use --scope league=ID, session=ID or office=ID"


class EmptyScope(StagingError):
    code = "EXPORT_EMPTY_SCOPE"
    http_status = 404
    hint = "check the ID; `riversync export xlsx OUT --scope office=<office>` exports all of an office"


def parse_scope(text: str) -> tuple[str, str]:
    """'league=L-1' -> ('league', 'L-1').

    Raises:
        BadScope: not of the form kind=ID.
    """
    kind, sep, value = (text or "").partition("=")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or not kind or not value:
        raise BadScope(f"scope {text!r} is not of the form kind=ID")
    return kind, value


@dataclass(frozen=True)
class TableShape:
    """What the export needs of a table: key, typed columns, references."""

    name: str
    key: str
    columns: tuple[tuple[str, str], ...]  # (name, type) after the key
    references: dict[str, str]  # column -> referenced table


RowSource = Callable[[str], Iterable[tuple[dict, str | None]]]  # table -> (row, owner)


def entity_table(kind: str, shapes: dict[str, TableShape]) -> str | None:
    for cand in (kind, kind + "s", kind + "es", kind[:-1] + "ies" if kind.endswith("y") else ""):
        if cand in shapes:
            return cand
    return None


def select_rows(shapes: dict[str, TableShape], source: RowSource, scope: tuple[str, str]
                ) -> dict[str, list[tuple[dict, str | None]]]:
    """The rows of each table inside ``scope``.

    Raises:
        BadScope: the scope names no table of the schema.
    """
    kind, ident = scope
    if kind == "office":
        return {t: [(r, o) for r, o in source(t) if o == ident] for t in shapes}
    root = entity_table(kind, shapes)
    if root is None:
        names = ", ".join(sorted(shapes))
        raise BadScope(f"scope {kind!r} names no table (tables: {names}); use office=ID or a "
                       "table's name in the singular")
    all_rows = {t: list(source(t)) for t in shapes}
    keep: dict[str, set[str]] = {t: set() for t in shapes}
    keep[root] = {r[shapes[root].key] for r, _ in all_rows[root] if r[shapes[root].key] == ident}
    changed = True
    while changed:
        changed = False
        for t, shape in shapes.items():
            if not shape.references:
                continue
            for r, _ in all_rows[t]:
                k = r[shape.key]
                if k in keep[t]:
                    continue
                if any(r.get(c) in keep[ref] for c, ref in shape.references.items()):
                    keep[t].add(k)
                    changed = True
    return {t: [(r, o) for r, o in all_rows[t] if r[shapes[t].key] in keep[t]] for t in shapes}


_FIRST_EXCEL_DAY = dt.date(1900, 3, 1)


def money_text(cents: int) -> str:
    """Cents as an amount in currency units, exactly: -1234.05 for -123405."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _cell(ws, value, ctype: str):
    if value is None:
        return None
    if ctype == "date" and isinstance(value, str):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            day = None
        # Excel has no date cell before 1 March 1900 that reads back as itself (serial 0
        # is a time, earlier ones negative): those stay ISO text, which the import reads.
        if day is not None and day >= _FIRST_EXCEL_DAY:
            c = WriteOnlyCell(ws, value=day)
            c.number_format = "yyyy-mm-dd"
            return c
    if ctype in ("money", "integer") and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= EXCEL_EXACT:
            # Excel keeps 15 significant digits of a number cell: a longer one goes out as
            # text, which the import reads back exactly.
            c = WriteOnlyCell(ws, value=money_text(value) if ctype == "money" else str(value))
            c.data_type = "s"
            return c
        if ctype == "money":
            c = WriteOnlyCell(ws, value=value / 100)
            c.number_format = "#,##0.00"
            return c
    if isinstance(value, bytes):
        value = value.hex()
    if isinstance(value, str):
        value = escape_text(value)  # control characters would make openpyxl refuse the file
    c = WriteOnlyCell(ws, value=value)
    if isinstance(value, str):
        c.data_type = "s"  # never a formula, whatever the text starts with
    return c


def write_workbook(out_path: str, sheets: Iterator[tuple[str, list[str], list[str],
                                                         Iterable[list]]], meta: list[tuple]) -> None:
    """Write sheets (title, headers, column types, rows) plus the metadata sheet, atomically."""
    wb = Workbook(write_only=True)
    wb.properties.keywords = "riversync-export"
    wb.properties.title = EXPORT_MARKER
    bold = Font(bold=True)
    for title, headers, types, rows in sheets:
        ws = wb.create_sheet(title[:31])
        ws.protection.sheet = True
        hdr = []
        for h in headers:
            c = WriteOnlyCell(ws, value=escape_text(h))
            c.font = bold
            c.data_type = "s"
            hdr.append(c)
        ws.append(hdr)
        for row in rows:
            ws.append([_cell(ws, v, t) for v, t in zip(row, types, strict=False)])
    meta_ws = wb.create_sheet(META_SHEET)
    meta_ws.protection.sheet = True
    meta_ws.append([WriteOnlyCell(meta_ws, value=EXPORT_MARKER)])
    for k, v in meta:
        meta_ws.append([k, v if not isinstance(v, str) else _cell(meta_ws, v, "text")])
    folder = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".riversync-export-", suffix=".xlsx", dir=folder)
    os.close(fd)
    try:
        wb.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_snapshot(out_path: str, shapes: dict[str, TableShape], source: RowSource, *,
                    scope: tuple[str, str], node: str, office: str, snapshot_hlc: int,
                    schema_version: int, exported_at: str) -> dict:
    """Write the snapshot workbook; returns {table: rows written}.

    Raises:
        BadScope: the scope names nothing the schema knows.
        EmptyScope: nothing is inside the scope.
    """
    chosen = select_rows(shapes, source, scope)
    counts = {t: len(rows) for t, rows in chosen.items()}
    if not any(counts.values()):
        raise EmptyScope(f"no rows inside scope {scope[0]}={scope[1]}")

    def sheets():
        for t, shape in shapes.items():
            if not chosen[t]:
                continue
            cols = [shape.key] + [c for c, _ in shape.columns]
            types = ["text"] + [ty for _, ty in shape.columns] + ["text"]
            rows = ([r.get(c) for c in cols] + [o] for r, o in chosen[t])
            yield t, cols + [OWNER_HEADER], types, rows

    write_workbook(out_path, sheets(), [
        ("node", node), ("office", office), ("scope", f"{scope[0]}={scope[1]}"),
        ("snapshot_hlc", str(snapshot_hlc)), ("schema_version", schema_version),
        ("exported_at", exported_at),
        ("note", "read-only snapshot; importing it again needs explicit confirmation"),
    ] + [(f"rows:{t}", n) for t, n in counts.items() if n])
    return {t: n for t, n in counts.items() if n}


def export_batch(out_path: str, staging, batch_id: int, rules: TableRules, *, node: str,
                 exported_at: str) -> int:
    """Write the valid rows of a staging batch (what an apply would write); returns count."""
    b = staging.batch(batch_id)
    rows = [r for r in staging.rows(batch_id) if r["status"] == "valid" and not r["excluded"]]
    cols = [c.name for c in rules.columns]
    types = [c.type for c in rules.columns]

    def sheets():
        yield rules.name, cols, types, ([r["values"].get(c) for c in cols] for r in rows)

    write_workbook(out_path, sheets(), [
        ("node", node), ("scope", f"staging={batch_id}"), ("source", b.source),
        ("state", b.state), ("exported_at", exported_at)])
    return len(rows)
