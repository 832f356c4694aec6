"""Staging: where Excel rows and email requests wait until a person approves them.

Theory of operation
-------------------
Nothing that arrives in a file writes a replicated table.  An import makes a **batch**
(one per file, sheet or message) of **staging rows**; each row is checked on arrival
against the table's column rules (types, required, patterns, uniqueness inside the file)
and against live data (who owns the key, which unique values are taken) and is stored
``valid`` or ``invalid`` with reasons a clerk understands (column and row named).

A row whose key is live is an **update**: it carries only the columns it fills, so a
column the file leaves out or blank keeps its live value and "required" does not apply;
a row whose key is not live is a **create** and must give every required column.

``apply`` re-checks every included valid row against live data *at that moment* (another
office's change may have arrived since the import; a row staged as an update whose key
has been deleted since fails, it never becomes a create), and then either turns all of
them into ordinary events with ONE ``Store.commit_local`` call, tagged
``source="staging:<batch id>"`` (the engine records local sources as
``local:staging:<batch id>``) so the audit traces each change back to its batch, or
changes nothing and marks the batch ``failed`` with the reason on the row.  The batch
is marked ``applied`` in the same SQLite transaction as the events (the staging tables
live in the node's own database file), so a crash leaves none or all and a re-run
finds the batch applied and adds nothing.  ``reject`` keeps the batch and its rows for
the record.

Batch states: ``pending`` -> ``applied`` | ``rejected`` | ``failed``; a failed batch can
be corrected (``edit_row``, ``exclude``) and applied again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from riversync.engine.db import migrate, transaction

# Library logging: the daemon configures handlers; a command does not print these twice.
logging.getLogger("riversync.staging").addHandler(logging.NullHandler())

# ---------------------------------------------------------------------------------------
# errors


class StagingError(Exception):
    """Root of staging's refusals: a stable code, an HTTP status, words for a person."""

    code = "STAGING_ERROR"
    http_status = 400
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


class BatchNotFound(StagingError):
    code = "STAGING_BATCH_NOT_FOUND"
    http_status = 404
    hint = "`riversync staging list` shows the batches of this node"


class RowNotStaged(StagingError):
    code = "STAGING_ROW_NOT_FOUND"
    http_status = 404
    hint = "`riversync staging show ID` lists the rows of a batch with their numbers"


class BatchClosed(StagingError):
    code = "STAGING_BATCH_CLOSED"
    http_status = 409
    hint = "an applied or rejected batch is kept for the record; import the file again"


class ConfirmationRequired(StagingError):
    code = "STAGING_CONFIRM_REQUIRED"
    http_status = 409
    hint = "the file is a riversync export; re-run apply with --confirm-reimport if you mean it"


class ApplyRefused(StagingError):
    """Apply found rows that are no longer valid; nothing was written."""

    code = "STAGING_APPLY_REFUSED"
    http_status = 409
    hint = "`riversync staging show ID --invalid` lists the rows and reasons; fix or exclude them"


class NothingToApply(StagingError):
    code = "STAGING_NOTHING_TO_APPLY"
    http_status = 409
    hint = "every row is invalid or excluded; fix the file and import it again"


class UnknownStagingTable(StagingError):
    code = "STAGING_UNKNOWN_TABLE"
    http_status = 404
    hint = "name a table of this node's schema with --table"


# ---------------------------------------------------------------------------------------
# column rules


TYPES = ("text", "integer", "real", "boolean", "date", "money", "blob")  # the schema's types


@dataclass(frozen=True)
class ColumnRule:
    """What an imported value must look like to go into one column."""

    name: str
    type: str = "text"
    required: bool = False
    pattern: str | None = None  # a full-match regular expression, for TEXT
    unique: bool = False
    date_format: str = "DD/MM/YYYY"  # how dates typed as text are read
    aliases: tuple[str, ...] = ()  # other header spellings that mean this column
    references: str | None = None  # the table whose key this column holds

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: type {self.type!r} is not one of {TYPES}")


@dataclass(frozen=True)
class TableRules:
    """The staging view of one table: its key column and the columns a file may fill."""

    name: str
    key: str
    columns: tuple[ColumnRule, ...]
    parent_column: str | None = None  # ownership follows the row this column references
    # The engine's own table, so staging runs the very checks a local commit runs
    # (Table.check_pk, Table.check_values) and never marks valid a row apply would refuse.
    engine_table: Any = field(default=None, compare=False, repr=False)

    def column(self, name: str) -> ColumnRule | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None


# ---------------------------------------------------------------------------------------
# value coercion (shared by Excel and email)

_DATE_FORMATS = {
    "DD/MM/YYYY": "%d/%m/%Y",
    "MM/DD/YYYY": "%m/%d/%Y",
    "DD.MM.YYYY": "%d.%m.%Y",
    "YYYY-MM-DD": "%Y-%m-%d",
}
_EXCEL_EPOCHS = (dt.date(1899, 12, 30), dt.date(1899, 12, 31), dt.date(1904, 1, 1))
EXCEL_EXACT = 10**15  # the first whole number with more digits than an Excel number keeps


class ValueIssue(Exception):
    """One value that cannot go into its column; the message is for a clerk."""


def normalise_text(value: str) -> str:
    """Trim spaces, NBSP and other Unicode whitespace at both ends."""
    return value.strip()


def coerce(rule: ColumnRule, value: Any, *,
           epoch: dt.datetime | None = None) -> tuple[Any, str | None]:
    """Return (value for the column, note or None); raise ValueIssue if it cannot fit.

    ``epoch`` is the workbook's date system, used for serial numbers in date columns.
    """
    t = rule.type
    vt = type(value)
    if vt is str:
        value = value.strip()
        if not value:
            return None, None
        if t == "text":  # the common case, kept short
            return value, None
    elif value is None:
        return None, None
    elif vt is int and t == "integer":
        return value, None
    elif vt is dt.datetime and t == "date" and not value.hour and not value.minute \
            and not value.second and not value.microsecond and value.date() not in _EXCEL_EPOCHS:
        return value.date().isoformat(), None
    if t == "text":
        return _to_text(rule, value)
    if t == "integer":
        return _to_int(value), None
    if t == "real":
        return _to_real(value), None
    if t == "boolean":
        return _to_bool(value), None
    if t == "date":
        return _to_date(rule, value, epoch)
    if t == "money":
        return _to_money(value)
    raise ValueIssue("binary data cannot be imported from a file")


def _to_text(rule: ColumnRule, value: Any) -> tuple[str, str | None]:
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
        return text, f"a TRUE/FALSE cell in a text column, taken as the text {text!r}"
    if isinstance(value, int | float):
        if abs(value) >= EXCEL_EXACT:
            raise ValueIssue(
                f"{_num(value)} is a number with 16 or more digits: Excel keeps only 15, so "
                "precision is lost; format the column as Text and type the ID again"
            )
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        if rule.pattern and not re.fullmatch(rule.pattern, text):
            padded = re.fullmatch(rule.pattern, text.rjust(len(text) + 1, "0")) or any(
                re.fullmatch(rule.pattern, "0" * k + text) for k in range(1, 16)
            )
            if padded:
                raise ValueIssue(
                    f"the cell holds the number {text}: leading zeros are lost; format the "
                    "column as Text and type the ID with its zeros"
                )
            raise ValueIssue(f"the cell holds the number {text}, which does not match {rule.pattern}")
        return text, None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(), None
    return str(value), None


def _num(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueIssue("expected a whole number, found TRUE/FALSE")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueIssue(f"expected a whole number, found {value!r}")
    if isinstance(value, str):
        s = value.replace("\u00a0", "").replace(" ", "")
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        if re.fullmatch(r"[+-]?\d+\.0*", s):
            return int(s.split(".")[0])
        raise ValueIssue(f"expected a whole number, found {value!r}")
    raise ValueIssue(f"expected a whole number, found {type(value).__name__}")


def _to_real(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueIssue("expected a number, found TRUE/FALSE")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace("\u00a0", "").replace(" ", ""))
        except ValueError:
            pass
    raise ValueIssue(f"expected a number, found {value!r}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        s = value.casefold()
        if s in ("yes", "y", "true", "1", "x"):
            return True
        if s in ("no", "n", "false", "0"):
            return False
    raise ValueIssue(f"expected yes or no, found {value!r}")


def _is_time_only(value: dt.datetime) -> bool:
    return value.date() in _EXCEL_EPOCHS and value.time() != dt.time(0)


def _date_shape(fmt: str) -> str:
    """A strptime format as a pattern of digits, to tell '31/02/2024' (the right form, no
    such day) from 'next Friday' (not the form at all)."""
    return (re.escape(fmt).replace("%d", r"\d{1,2}").replace("%m", r"\d{1,2}")
            .replace("%Y", r"\d{4}"))


def _to_date(rule: ColumnRule, value: Any, epoch: dt.datetime | None) -> tuple[str, str | None]:
    if isinstance(value, dt.time):
        raise ValueIssue("time without date: type the full date")
    if isinstance(value, dt.timedelta):
        raise ValueIssue("a duration, not a date: type the full date")
    if isinstance(value, dt.datetime):
        if _is_time_only(value):
            raise ValueIssue("time without date: type the full date")
        if value.time() != dt.time(0):
            raise ValueIssue(f"date column holds a date and time ({value.isoformat(' ')})")
        return value.date().isoformat(), None
    if isinstance(value, dt.date):
        return value.isoformat(), None
    if isinstance(value, bool):
        raise ValueIssue("expected a date, found TRUE/FALSE")
    if isinstance(value, int | float):
        if epoch is None:
            raise ValueIssue(f"number {_num(value)} in a date column: type the date as {rule.date_format}")
        if not float(value).is_integer():
            raise ValueIssue(f"number {value!r} in a date column has a time part")
        if not 1 <= value <= 2958465:
            raise ValueIssue(f"number {_num(value)} in a date column is not a date")
        day = epoch.date() + dt.timedelta(days=int(value))
        if epoch.date() == dt.date(1899, 12, 30) and value < 61:
            day += dt.timedelta(days=1)  # Excel's 1900 leap-year bug before 1 March 1900
        system = "1904" if epoch.year == 1904 else "1900"
        return day.isoformat(), f"serial number {int(value)} read as a date ({system} date system)"
    if isinstance(value, str):
        formats = ("%Y-%m-%d", _DATE_FORMATS.get(rule.date_format, "%d/%m/%Y"))
        for fmt in formats:
            try:
                return dt.datetime.strptime(value, fmt).date().isoformat(), None
            except ValueError:
                continue
        if any(re.fullmatch(_date_shape(fmt), value) for fmt in formats):
            raise ValueIssue(f"{value!r} is not a real date (no such day in that month, or "
                             "no such month)")
        raise ValueIssue(f"{value!r} is not a date in the form {rule.date_format}")
    raise ValueIssue(f"expected a date, found {type(value).__name__}")


# An amount as typed: digits, either plain or in groups of three split by commas or
# spaces, then at most two decimals after a point. Anything else ("12,50", "1.500,00",
# "1,5", "1.500") has more than one honest reading, so it is refused rather than guessed.
_AMOUNT = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+)(?:\.\d{1,2})?")


def _to_money(value: Any) -> tuple[int, str | None]:
    """Money is stored as an integer number of cents; a sheet holds currency units.

    Amounts go through Decimal, never through a float product, so 10,000,000.01 stays
    1000000001 cents; a float cell is read at Excel's 15 significant digits, which is all
    the precision the workbook ever held.
    """
    if isinstance(value, bool):
        raise ValueIssue("expected an amount, found TRUE/FALSE")
    if isinstance(value, str):
        s = re.sub(r"[\u00a0\u202f\u2009]", " ", value).strip()
        if not _AMOUNT.fullmatch(s):
            if re.fullmatch(r"[+-]?[1-9]\d{0,2}(\.\d{3})+", s):
                raise ValueIssue(
                    f"{value!r} is ambiguous: a point before three digits separates thousands "
                    f"in much of Europe; write {s.replace('.', '')} if that is meant, or the "
                    "amount with at most two decimals")
            if re.fullmatch(r"[+-]?\d+\.\d{3,}", s):
                raise ValueIssue(f"amount {value!r} has more than 2 decimal places")
            if re.fullmatch(r"[+-]?\d+,\d{1,2}", s) or re.fullmatch(r"[+-]?\d{1,3}(\.\d{3})+,\d+", s):
                raise ValueIssue(
                    f"{value!r} uses a comma as the decimal mark; write the amount with a "
                    "point, like 12.50, so it cannot be read as a thousands separator"
                )
            raise ValueIssue(f"expected an amount like 1500.00 or 1,500.00, found {value!r}")
        amount = Decimal(s.replace(",", "").replace(" ", ""))
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueIssue(f"expected an amount, found {value!r}")
        if abs(value) * 100 >= EXCEL_EXACT:
            raise ValueIssue(
                f"{_num(value)} has more digits than Excel keeps (15) once in cents, so its "
                "last digits may be lost; format the cell as Text and type the amount again")
        amount = Decimal(format(value, ".15g"))
    else:
        raise ValueIssue(f"expected an amount, found {type(value).__name__}")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueIssue(f"amount {value!r} has more than 2 decimal places")
    return int(cents), None  # the engine's own check refuses what does not fit 64 bits


def check_pattern(rule: ColumnRule, value: Any) -> None:
    if rule.pattern and isinstance(value, str) and not re.fullmatch(rule.pattern, value):
        raise ValueIssue(f"{value!r} does not match the form {rule.pattern}")


# ---------------------------------------------------------------------------------------
# staged rows


@dataclass
class StagedRow:
    """One incoming row, before storage: values by column, issues and notes."""

    row_no: int
    values: dict[str, Any]
    errors: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key: str | None = None
    op: str | None = None  # "create" | "update", decided against live data
    # Required columns the row leaves out or blank: an error for a new row, nothing for
    # an update (a missing or blank cell leaves the live value alone).
    missing: list[str] = field(default_factory=list)

    def error(self, column: str | None, message: str) -> None:
        self.errors.append({"column": column or "", "message": message})

    @property
    def valid(self) -> bool:
        return not self.errors


def check_row(rules: TableRules, raw: dict[str, Any], row: StagedRow, *,
              epoch: dt.datetime | None = None) -> None:
    """Coerce ``raw`` (column -> incoming value) into ``row.values``, recording issues.

    A required column left out or blank is reported as if the row were new; once
    ``check_live`` finds the key live (an update), it withdraws those reports, since an
    update touches only the columns it gives.
    """
    values = row.values
    for col in rules.columns:
        name = col.name
        if name not in raw:
            if col.required and not _has_error(row, name):
                _required(row, name)
            continue
        v = raw[name]
        vt = type(v)
        if vt is str and col.type == "text" and not col.pattern:  # most cells: inline
            v = v.strip()
            values[name] = v or None
            if not v and col.required:
                _required(row, name)
            continue
        if vt is int and col.type == "integer":
            values[name] = v
            continue
        try:
            value, note = coerce(col, v, epoch=epoch)
            if col.pattern:
                check_pattern(col, value)
        except ValueIssue as e:
            row.error(name, str(e))
            continue
        values[name] = value
        if note:
            row.notes.append(f"{name}: {note}")
        if value is None and col.required:
            _required(row, name)
    key = row.values.get(rules.key)
    row.key = None if key is None else str(key)
    if rules.engine_table is not None:
        engine_checks(rules, row)


def engine_checks(rules: TableRules, row: StagedRow) -> None:
    """The engine's key and value checks (the same functions a local commit calls), so a
    row staging calls valid is one the engine accepts."""
    t = rules.engine_table
    if row.key is not None and not _has_error(row, rules.key):
        why = t.check_pk(row.key)
        if why:
            row.error(rules.key, why)
    values = {k: v for k, v in row.values.items()
              if k != rules.key and k in t.columns and not _has_error(row, k)}
    if t.check_values(values, creating=False) is None:
        return
    for name, v in values.items():
        why = t.check_values({name: v}, creating=False)
        if why:
            row.error(name, why)


def _has_error(row: StagedRow, column: str) -> bool:
    return any(e["column"] == column for e in row.errors)


def _required_message(name: str) -> str:
    return f"{name} required"


def _required(row: StagedRow, name: str) -> None:
    row.missing.append(name)
    row.error(name, _required_message(name))


def _as_update(rules: TableRules, row: StagedRow) -> None:
    """The key is live: withdraw the "required" reports (absent means unchanged), and
    refuse a row that would change nothing, which the engine refuses too."""
    if row.missing:
        gone = {(n, _required_message(n)) for n in row.missing}
        row.errors = [e for e in row.errors if (e["column"], e["message"]) not in gone]
    given = [k for k, v in row.values.items() if k != rules.key and v is not None]
    if not given and not row.errors:
        row.error(rules.key, f"{row.key} exists and this row changes nothing: every other "
                             "cell is blank (a blank cell leaves the live value alone)")


class FileChecks:
    """Checks that need the whole file: duplicate keys and unique values inside it."""

    def __init__(self, rules: TableRules):
        self.rules = rules
        self.keys: dict[str, int] = {}
        self.uniques: dict[str, dict[Any, int]] = {c.name: {} for c in rules.columns if c.unique}

    def check(self, row: StagedRow) -> None:
        if row.key is not None:
            first = self.keys.setdefault(row.key, row.row_no)
            if first != row.row_no:
                row.error(self.rules.key, f"duplicate key {row.key} in the file (also on row {first})")
        for name, seen in self.uniques.items():
            v = row.values.get(name)
            if v is None:
                continue
            first = seen.setdefault(v, row.row_no)
            if first != row.row_no:
                row.error(name, f"{name} {v} appears twice in the file (also on row {first})")


class LiveView(Protocol):
    """What validation needs to know of live data; the engine's Store provides it."""

    office: str

    def owner_of(self, table: str, key: str) -> str | None:
        """The owning office of a live row, or None if there is no live row."""

    def holder_of(self, table: str, column: str, value: Any) -> str | None:
        """The key of a live row whose ``column`` equals ``value``, or None."""


def check_live(rules: TableRules, row: StagedRow, live: LiveView) -> None:
    """Ownership, references and uniqueness against live data; sets ``row.op``."""
    if row.key is None:
        return
    owner = live.owner_of(rules.name, row.key)
    if owner is None:
        row.op = "create"
        if rules.parent_column:
            parent_rule = rules.column(rules.parent_column)
            parent = row.values.get(rules.parent_column)
            if parent is not None and parent_rule is not None and parent_rule.references:
                p_owner = live.owner_of(parent_rule.references, str(parent))
                if p_owner is not None and p_owner != live.office:
                    row.error(rules.parent_column,
                              f"{parent} is owned by office {p_owner}; only {p_owner} can add "
                              f"rows under it")
    else:
        row.op = "update"
        if owner != live.office:
            row.error(rules.key,
                      f"{row.key} is owned by office {owner}; only {owner} can change it")
        _as_update(rules, row)
    for col in rules.columns:
        v = row.values.get(col.name)
        if v is None:
            continue
        if col.references and live.owner_of(col.references, str(v)) is None:
            row.error(col.name, f"{col.references} {v} does not exist; create it first")
        if col.unique:
            holder = live.holder_of(rules.name, col.name, v)
            if holder is not None and holder != row.key:
                row.error(col.name, f"{col.name} {v} is already used by {holder}")


LIVE_CHUNK = 500  # keys looked up per query when checking many rows against live data


class _Prefetched:
    """A LiveView answering from bulk lookups made for a chunk of rows.

    Checking rows one by one costs two queries per row; this asks once per chunk for the
    owners of every key and referenced key and the holders of every unique value, and
    falls back to the live view for anything it did not prefetch.
    """

    def __init__(self, live: LiveView, rules: TableRules, rows: list[StagedRow]):
        self.live = live
        self.office = live.office
        self.owners: dict[tuple[str, str], str | None] = {}
        self.holders: dict[tuple[str, Any], str | None] = {}
        wanted: dict[str, set[str]] = {rules.name: {r.key for r in rows if r.key is not None}}
        for col in rules.columns:
            if col.references:
                vals = {str(r.values[col.name]) for r in rows
                        if r.values.get(col.name) is not None}
                wanted.setdefault(col.references, set()).update(vals)
        for table, keys in wanted.items():
            found = live.owners_many(table, sorted(keys))
            for k in keys:
                self.owners[(table, k)] = found.get(k)
        for col in rules.columns:
            if col.unique:
                vals = {r.values[col.name] for r in rows if r.values.get(col.name) is not None}
                found = live.holders_many(rules.name, col.name, sorted(vals, key=repr))
                for v in vals:
                    self.holders[(col.name, v)] = found.get(v)

    def owner_of(self, table: str, key: str) -> str | None:
        try:
            return self.owners[(table, key)]
        except KeyError:
            return self.live.owner_of(table, key)

    def holder_of(self, table: str, column: str, value: Any) -> str | None:
        try:
            return self.holders[(column, value)]
        except KeyError:
            return self.live.holder_of(table, column, value)


def check_live_many(rules: TableRules, rows: list[StagedRow], live: LiveView) -> None:
    """``check_live`` for many rows, with bulk lookups when the live view offers them."""
    if hasattr(live, "owners_many") and hasattr(live, "holders_many") and len(rows) > 1:
        live = _Prefetched(live, rules, rows)
    for row in rows:
        check_live(rules, row, live)


def rules_from_schema(schema, table: str, extra: dict | None = None) -> TableRules:
    """Staging rules for one table of an engine Schema, plus the import-only options.

    ``extra`` is the schema file's ``[import.<table>]`` section: per column ``pattern``,
    ``unique``, ``date_format``, ``aliases`` (the engine ignores these; staging checks
    them before anything reaches the engine).

    Raises:
        UnknownStagingTable: the schema has no such table.
    """
    t = schema.table(table)
    if t is None:
        names = ", ".join(sorted(schema.tables))
        raise UnknownStagingTable(f"the schema has no table {table!r}; it has {names}")
    extra = extra or {}
    cols = [ColumnRule(t.primary_key, "text", required=True, **_opts(extra.get(t.primary_key)))]
    for c in t.columns.values():
        cols.append(ColumnRule(c.name, c.type, required=c.required and c.default is None,
                               references=c.references, **_opts(extra.get(c.name))))
    return TableRules(t.name, t.primary_key, tuple(cols), parent_column=t.parent_column,
                      engine_table=t)


def _opts(spec: dict | None) -> dict:
    if not spec:
        return {}
    out: dict[str, Any] = {}
    for k in ("pattern", "unique", "date_format"):
        if k in spec:
            out[k] = spec[k]
    if "aliases" in spec:
        out["aliases"] = tuple(spec["aliases"])
    return out


def load_import_options(schema_path: str) -> dict:
    """The ``[import]`` section of a schema file (import-only column options)."""
    import tomllib

    with open(schema_path, "rb") as f:
        doc = tomllib.load(f)
    section = doc.get("import", {})
    return section if isinstance(section, dict) else {}


# ---------------------------------------------------------------------------------------
# storage

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS staging_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                 -- xlsx | email
    table_name TEXT,
    source TEXT NOT NULL,               -- file name, or email:<message key>
    sha256 TEXT NOT NULL,
    sheet TEXT,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT NOT NULL DEFAULT '',
    flags TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    summary TEXT NOT NULL DEFAULT '{}',
    confirm_required INTEGER NOT NULL DEFAULT 0,
    closed_ms INTEGER,
    closed_by TEXT,
    events INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS staging_rows (
    batch_id INTEGER NOT NULL REFERENCES staging_batches(id),
    row_no INTEGER NOT NULL,
    key TEXT,
    op TEXT,
    status TEXT NOT NULL,               -- valid | invalid
    excluded INTEGER NOT NULL DEFAULT 0,
    vals TEXT NOT NULL,
    errors TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (batch_id, row_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staging_messages (
    message_key TEXT PRIMARY KEY,       -- Message-ID, else sha256:<hex of the bytes>
    batch_id INTEGER NOT NULL REFERENCES staging_batches(id),
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    subject TEXT,
    sender TEXT,
    sent_at TEXT,
    received_at TEXT,
    flags TEXT NOT NULL DEFAULT '[]',
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS staging_parts (
    batch_id INTEGER NOT NULL REFERENCES staging_batches(id),
    part_no INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    declared_charset TEXT,
    used_charset TEXT,
    filename TEXT,
    raw BLOB NOT NULL,
    text TEXT,
    PRIMARY KEY (batch_id, part_no)
) WITHOUT ROWID;
"""

# staging_0002: one Message-ID may name several different messages (a client that reuses
# it, a forwarded copy): messages are told apart by Message-ID *and* a hash of what they
# carry (parts and attachments), so only a true redelivery counts as already staged.
MESSAGES_0002_SQL = """
CREATE TABLE staging_messages_v2 (
    id INTEGER PRIMARY KEY,
    message_key TEXT NOT NULL,          -- Message-ID, else sha256:<hex of the bytes>
    content_sha256 TEXT NOT NULL,       -- email_ingest.content_hash of the parts
    batch_id INTEGER NOT NULL REFERENCES staging_batches(id),
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    subject TEXT,
    sender TEXT,
    sent_at TEXT,
    received_at TEXT,
    flags TEXT NOT NULL DEFAULT '[]',
    raw BLOB NOT NULL
);
"""


def content_hash(parts: Iterable[tuple[str, str | None, bytes]]) -> str:
    """SHA-256 over each part's content type, file name and decoded bytes, in order.

    Headers are left out on purpose: a mail server's redelivery adds ``Received`` lines
    and may re-encode the transfer, but what staging reads stays the same.
    """
    h = hashlib.sha256()
    for ctype, filename, raw in parts:
        for piece in (ctype.encode(), (filename or "").encode(), raw):
            h.update(len(piece).to_bytes(8, "big"))
            h.update(piece)
    return h.hexdigest()


def _messages_0002(conn) -> None:
    conn.execute(MESSAGES_0002_SQL)
    olds = list(conn.execute(
        "SELECT message_key, batch_id, file_name, sha256, subject, sender, sent_at,"
        " received_at, flags, raw FROM staging_messages"))
    for row in olds:
        parts = [(c, f, bytes(r)) for c, f, r in conn.execute(
            "SELECT content_type, filename, raw FROM staging_parts WHERE batch_id=?"
            " ORDER BY part_no", (row[1],))]
        conn.execute(
            "INSERT INTO staging_messages_v2(message_key, content_sha256, batch_id, file_name,"
            " sha256, subject, sender, sent_at, received_at, flags, raw)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)", (row[0], content_hash(parts), *row[1:]))
    conn.execute("DROP TABLE staging_messages")
    conn.execute("ALTER TABLE staging_messages_v2 RENAME TO staging_messages")
    conn.execute("CREATE UNIQUE INDEX staging_messages_key"
                 " ON staging_messages(message_key, content_sha256)")
    conn.execute("CREATE INDEX staging_messages_batch ON staging_messages(batch_id)")


MIGRATIONS = [("staging_0001", lambda conn: conn.execute(SCHEMA_SQL)),
              ("staging_0002", _messages_0002)]
STAGING_TABLES = ("staging_batches", "staging_rows", "staging_messages", "staging_parts")


def carry_staging(conn, old_path: str) -> int:
    """Put the staging of the database at ``old_path`` in place of ``conn``'s; returns how
    many of its batches ``conn`` lacked.

    A restore calls this with the database it puts aside.  Staging is the node's own
    record of what was uploaded and decided, never replicated: batches staged since the
    backup (an email moved to processed/ is never staged twice, so it would be lost for
    good), and batches applied or rejected since, whose events are carried over (left
    pending, they could be applied a second time).  Batch ids stay as they were, and the
    id sequence goes on after the highest, so an audit source names one batch only.
    """
    import apsw

    migrate(conn, MIGRATIONS)
    old = apsw.Connection(old_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        present = {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "staging_batches" not in present:
            return 0
        mine = {r[0] for r in conn.execute("SELECT id FROM staging_batches")}
        with transaction(conn):
            for t in reversed(STAGING_TABLES):
                conn.execute(f"DELETE FROM {t}")
            for t in STAGING_TABLES:
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({t})")}
                cols = [r[1] for r in old.execute(f"PRAGMA table_info({t})") if r[1] in have]
                names = ", ".join(cols)
                conn.executemany(f"INSERT INTO {t}({names}) VALUES ({', '.join('?' * len(cols))})",
                                 old.execute(f"SELECT {names} FROM {t}"))
            top = max([r[0] for r in old.execute("SELECT seq FROM sqlite_sequence WHERE "
                                                 "name='staging_batches'")] + [0])
            conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE "
                         "name='staging_batches'", (top,))
        return sum(1 for (i,) in conn.execute("SELECT id FROM staging_batches") if i not in mine)
    finally:
        old.close()
PENDING, APPLIED, REJECTED, FAILED = "pending", "applied", "rejected", "failed"
FLAG_EXPORT_REIMPORT = "export_reimport"
_INSERT_CHUNK = 2000


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _j(v: Any) -> str:
    if not v and isinstance(v, list):
        return "[]"
    return _dumps(v)


@dataclass
class BatchInfo:
    id: int
    kind: str
    table: str | None
    source: str
    sha256: str
    sheet: str | None
    created_ms: int
    created_by: str
    state: str
    reason: str
    flags: list[str]
    notes: list[str]
    summary: dict
    confirm_required: bool
    closed_ms: int | None
    closed_by: str | None
    events: int

    def to_json(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "table": self.table, "source": self.source,
            "sha256": self.sha256, "sheet": self.sheet, "created_ms": self.created_ms,
            "created_by": self.created_by, "state": self.state, "reason": self.reason,
            "flags": self.flags, "notes": self.notes, "summary": self.summary,
            "confirm_required": self.confirm_required, "closed_ms": self.closed_ms,
            "closed_by": self.closed_by, "events": self.events,
        }


_BATCH_COLS = ("id, kind, table_name, source, sha256, sheet, created_ms, created_by, state, "
               "reason, flags, notes, summary, confirm_required, closed_ms, closed_by, events")


def _batch(r: tuple) -> BatchInfo:
    return BatchInfo(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                     json.loads(r[10]), json.loads(r[11]), json.loads(r[12]), bool(r[13]),
                     r[14], r[15], r[16])


def now_ms() -> int:
    return int(time.time() * 1000)


ProgressFn = Callable[[int], None]


class Staging:
    """Staging batches and rows, kept in tables of the node's own SQLite file.

    ``conn`` is an apsw connection to that file; it must be the store's own connection
    so that ``apply`` can commit the events and the batch's new state together.
    """

    def __init__(self, conn):
        self.conn = conn
        migrate(conn, MIGRATIONS)

    # -- creating batches ---------------------------------------------------------------

    def create_batch(self, *, kind: str, table: str | None, source: str, sha256: str,
                     user: str, sheet: str | None = None, flags: Iterable[str] = (),
                     notes: Iterable[str] = (), created_ms: int | None = None) -> int:
        flags = list(flags)
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO staging_batches(kind, table_name, source, sha256, sheet, created_ms,"
                " created_by, flags, notes, confirm_required) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (kind, table, source, sha256, sheet, created_ms or now_ms(), user, _j(flags),
                 _j(list(notes)), int(FLAG_EXPORT_REIMPORT in flags)),
            )
            return self.conn.last_insert_rowid()

    def add_rows(self, batch_id: int, rows: Iterable[StagedRow]) -> None:
        """Store rows in chunks (one transaction each) so memory stays bounded."""
        chunk: list[tuple] = []
        for r in rows:
            chunk.append(self._row_tuple(batch_id, r))
            if len(chunk) >= _INSERT_CHUNK:
                self._insert(chunk)
                chunk = []
        if chunk:
            self._insert(chunk)

    @staticmethod
    def _row_tuple(batch_id: int, r: StagedRow) -> tuple:
        return (batch_id, r.row_no, r.key, r.op, "valid" if r.valid else "invalid",
                _j(r.values), _j(r.errors), _j(r.notes))

    def _insert(self, chunk: list[tuple]) -> None:
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO staging_rows(batch_id, row_no, key, op, status, vals, errors, notes)"
                " VALUES (?,?,?,?,?,?,?,?)", chunk)

    def finish_batch(self, batch_id: int, summary: dict, notes: Iterable[str] = ()) -> None:
        b = self.batch(batch_id)
        with transaction(self.conn):
            self.conn.execute("UPDATE staging_batches SET summary=?, notes=? WHERE id=?",
                              (_j(summary), _j(b.notes + list(notes)), batch_id))

    def discard_batch(self, batch_id: int) -> None:
        """Remove a batch whose import failed part-way (it was never shown to anyone)."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM staging_rows WHERE batch_id=?", (batch_id,))
            self.conn.execute("DELETE FROM staging_parts WHERE batch_id=?", (batch_id,))
            self.conn.execute("DELETE FROM staging_messages WHERE batch_id=?", (batch_id,))
            self.conn.execute("DELETE FROM staging_batches WHERE id=?", (batch_id,))

    # -- reading ------------------------------------------------------------------------

    def batch(self, batch_id: int) -> BatchInfo:
        for r in self.conn.execute(f"SELECT {_BATCH_COLS} FROM staging_batches WHERE id=?",
                                   (batch_id,)):
            return _batch(r)
        raise BatchNotFound(f"no staging batch {batch_id}")

    def batches(self, *, state: str | None = None, limit: int = 100) -> list[BatchInfo]:
        sql = f"SELECT {_BATCH_COLS} FROM staging_batches"
        args: tuple = ()
        if state:
            sql += " WHERE state=?"
            args = (state,)
        sql += " ORDER BY id DESC LIMIT ?"
        return [_batch(r) for r in self.conn.execute(sql, args + (limit,))]

    def rows(self, batch_id: int, *, status: str | None = None, limit: int = -1,
             offset: int = 0) -> list[dict]:
        sql = ("SELECT row_no, key, op, status, excluded, vals, errors, notes FROM staging_rows"
               " WHERE batch_id=?")
        args: tuple = (batch_id,)
        if status:
            sql += " AND status=?"
            args += (status,)
        sql += " ORDER BY row_no LIMIT ? OFFSET ?"
        return [
            {"row": r[0], "key": r[1], "op": r[2], "status": r[3], "excluded": bool(r[4]),
             "values": json.loads(r[5]), "errors": json.loads(r[6]), "notes": json.loads(r[7])}
            for r in self.conn.execute(sql, args + (limit, offset))
        ]

    def counts(self, batch_id: int) -> dict:
        out = {"rows": 0, "valid": 0, "invalid": 0, "excluded": 0}
        for status, excluded, n in self.conn.execute(
                "SELECT status, excluded, count(*) FROM staging_rows WHERE batch_id=?"
                " GROUP BY status, excluded", (batch_id,)):
            out["rows"] += n
            out[status] += n
            if excluded:
                out["excluded"] += n
        return out

    # -- corrections --------------------------------------------------------------------

    def _open(self, batch_id: int) -> BatchInfo:
        b = self.batch(batch_id)
        if b.state in (APPLIED, REJECTED):
            raise BatchClosed(f"batch {batch_id} is {b.state}")
        return b

    def exclude(self, batch_id: int, row_nos: Iterable[int], excluded: bool = True) -> int:
        """Leave rows out of (or back in) the apply; returns how many rows changed."""
        self._open(batch_id)
        n = 0
        with transaction(self.conn):
            for no in row_nos:
                self.conn.execute("UPDATE staging_rows SET excluded=? WHERE batch_id=? AND row_no=?",
                                  (int(excluded), batch_id, int(no)))
                if self.conn.changes() == 0:
                    raise RowNotStaged(f"batch {batch_id} has no row {no}")
                n += 1
        return n

    def edit_row(self, batch_id: int, row_no: int, changes: dict[str, Any], rules: TableRules,
                 live: LiveView | None = None) -> dict:
        """Correct values of one staged row and check it again; returns the row."""
        self._open(batch_id)
        current = [r for r in self.rows(batch_id) if r["row"] == row_no]
        if not current:
            raise RowNotStaged(f"batch {batch_id} has no row {row_no}")
        raw = dict(current[0]["values"])
        for k in changes:
            if rules.column(k) is None:
                raise UnknownStagingTable(f"table {rules.name} has no column {k}",
                                          hint="name a column of the table")
        raw.update(changes)
        row = StagedRow(row_no, {}, notes=list(current[0]["notes"]) + [f"edited: {sorted(changes)}"])
        check_row(rules, raw, row)
        checks = FileChecks(rules)
        for other in self.rows(batch_id):
            if other["row"] != row_no and other["status"] == "valid" and not other["excluded"]:
                checks.check(StagedRow(other["row"], other["values"], key=other["key"]))
        checks.check(row)
        if live is not None and row.key is not None and not _has_error(row, rules.key):
            check_live(rules, row, live)  # also decides create/update, hence "required"
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE staging_rows SET key=?, op=?, status=?, vals=?, errors=?, notes=?"
                " WHERE batch_id=? AND row_no=?",
                (row.key, row.op, "valid" if row.valid else "invalid", _j(row.values),
                 _j(row.errors), _j(row.notes), batch_id, row_no))
        return [r for r in self.rows(batch_id) if r["row"] == row_no][0]

    # -- closing ------------------------------------------------------------------------

    def reject(self, batch_id: int, *, user: str, reason: str = "", now: int | None = None) -> BatchInfo:
        """Close the batch without applying; the rows stay for the record."""
        self._open(batch_id)
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE staging_batches SET state=?, reason=?, closed_ms=?, closed_by=? WHERE id=?",
                (REJECTED, reason or "rejected", now or now_ms(), user, batch_id))
        return self.batch(batch_id)

    def _fail(self, batch_id: int, reason: str) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE staging_batches SET state=?, reason=? WHERE id=?",
                              (FAILED, reason, batch_id))

    def apply(self, batch_id: int, store, rules: TableRules, live: LiveView, *, user: str,
              now: int | None = None, confirm: bool = False,
              to_change: Callable[[StagedRow], Any] | None = None) -> BatchInfo:
        """Turn the batch's included valid rows into events, all or nothing.

        Raises:
            BatchClosed: the batch was applied or rejected already (a re-run adds nothing).
            ConfirmationRequired: the file is a riversync export and ``confirm`` is False.
            ApplyRefused: a row is no longer valid against live data; the batch is marked
                failed with the reason on the row and nothing is written.
            NothingToApply: no included valid rows.
            engine errors from ``commit_local``: nothing is written, the batch is failed.
        """
        b = self._open(batch_id)
        if b.confirm_required and not confirm:
            raise ConfirmationRequired(
                f"batch {batch_id} ({b.source}) was read from a riversync export; applying it "
                "would write a snapshot back over newer data")
        loads = json.loads
        staged = []
        was_update = set()
        for no, key, op, vals in self.conn.execute(
                "SELECT row_no, key, op, vals FROM staging_rows WHERE batch_id=?"
                " AND status='valid' AND excluded=0 ORDER BY row_no", (batch_id,)):
            staged.append(StagedRow(no, loads(vals), key=key))
            if op == "update":
                was_update.add(no)
        if not staged:
            raise NothingToApply(f"batch {batch_id} has no included valid rows")
        for i in range(0, len(staged), LIVE_CHUNK):
            check_live_many(rules, staged[i:i + LIVE_CHUNK], live)
        for row in staged if was_update else ():
            if row.op == "create" and row.row_no in was_update:
                # Staged as a change to a live row, it may lack required columns; either
                # way, re-creating a row someone deleted is not what the file asked for.
                row.error(rules.key, f"{row.key} no longer exists (deleted since the batch "
                                     "was staged); a row staged as an update does not create "
                                     "it: exclude the row, or correct it to stage it as new")
        bad = [row for row in staged if not row.valid]
        if bad:
            with transaction(self.conn):
                for row in bad:
                    self.conn.execute(
                        "UPDATE staging_rows SET status='invalid', errors=? WHERE batch_id=? AND row_no=?",
                        (_j(row.errors), batch_id, row.row_no))
            first = bad[0]
            reason = (f"{len(bad)} row(s) no longer valid, e.g. row {first.row_no}: "
                      f"{first.errors[0]['message']}")
            self._fail(batch_id, reason)
            raise ApplyRefused(f"batch {batch_id} not applied: {reason}")
        changes = [to_change(r) for r in staged] if to_change else staged
        del staged  # the changes hold what the engine needs; free the rows before it runs
        stamp = now or now_ms()
        try:
            with transaction(self.conn, durable=True):
                events = store.commit_local(changes, user=user, now_ms=stamp,
                                            source=_apply_source(batch_id))
                self.conn.execute(
                    "UPDATE staging_batches SET state=?, reason='', closed_ms=?, closed_by=?, events=?"
                    " WHERE id=? AND state IN (?, ?)",
                    (APPLIED, stamp, user, len(events), batch_id, PENDING, FAILED))
                if self.conn.changes() != 1:
                    raise BatchClosed(f"batch {batch_id} was closed while it was being applied")
        except StagingError:
            raise
        except Exception as e:
            code = getattr(e, "code", type(e).__name__)
            self._fail(batch_id, f"{code}: {e}")
            raise
        return self.batch(batch_id)

    # -- metrics ------------------------------------------------------------------------

    def backlog(self, now: int | None = None) -> dict:
        """Numbers for /metrics and alerts: pending email batches, oldest pending Excel batch."""
        stamp = now or now_ms()
        email = self.conn.execute(
            "SELECT count(*) FROM staging_batches WHERE kind='email' AND state IN (?, ?)",
            (PENDING, FAILED)).fetchall()[0][0]
        xlsx = self.conn.execute(
            "SELECT count(*), min(created_ms) FROM staging_batches WHERE kind='xlsx'"
            " AND state IN (?, ?)", (PENDING, FAILED)).fetchall()[0]
        oldest = 0.0 if xlsx[1] is None else max(0.0, (stamp - xlsx[1]) / 1000.0)
        return {"email_pending": email, "xlsx_pending": xlsx[0], "xlsx_oldest_age_s": oldest}


# ---------------------------------------------------------------------------------------
# the engine side


def store_conn(store):
    """The store's own apsw connection: staging shares it so apply is one transaction."""
    for name in ("conn", "_conn", "db", "connection"):
        conn = getattr(store, name, None)
        if conn is not None and hasattr(conn, "execute"):
            return conn
    raise RuntimeError("the engine Store exposes no connection; staging cannot share it")


class StoreLive:
    """LiveView over the engine's Store (and its tables, for unique lookups)."""

    def __init__(self, store, schema):
        self.store = store
        self.schema = schema
        self.office = store.office
        self.conn = store_conn(store)

    def owner_of(self, table: str, key: str) -> str | None:
        """The office owning a live row (the engine knows: last transfer, creator, or the
        parent's owner); None when the row is not live."""
        if self.schema.table(table) is None:
            return None
        return self.store.owner_of(table, key)

    def owners_many(self, table: str, keys: list[str]) -> dict[str, str | None]:
        """Owners of the live rows among ``keys`` (absent keys are not live)."""
        if self.schema.table(table) is None or not keys:
            return {}
        out: dict[str, str | None] = {}
        for i in range(0, len(keys), LIVE_CHUNK):
            out.update(self.store.owners_of(table, keys[i:i + LIVE_CHUNK]))
        return out

    def holders_many(self, table: str, column: str, values: list) -> dict:
        t = self.schema.table(table)
        if t is None or column not in t.columns or not values:
            return {}
        out: dict = {}
        for i in range(0, len(values), LIVE_CHUNK):
            part = values[i:i + LIVE_CHUNK]
            marks = ",".join("?" * len(part))
            for v, pk in self.conn.execute(
                    f'SELECT "{column}", "{t.primary_key}" FROM "{t.name}" WHERE "{column}" IN'
                    f" ({marks})", tuple(part)):
                out.setdefault(v, pk)
        return out

    def holder_of(self, table: str, column: str, value: Any) -> str | None:
        t = self.schema.table(table)
        if t is None or column not in t.columns:
            return None
        sql = f'SELECT "{t.primary_key}" FROM "{t.name}" WHERE "{column}" = ? LIMIT 1'
        for (pk,) in self.conn.execute(sql, (value,)):
            return pk
        return None


class ActingAs:
    """A live view whose ``office`` is the acting office of a user from another office."""

    def __init__(self, live: LiveView, office: str):
        self.live = live
        self.office = office

    def __getattr__(self, name: str) -> Any:
        return getattr(self.live, name)


def to_local_change(rules: TableRules, row: StagedRow):
    """The engine change a staged row becomes: create a new key, update an owned one.

    An update carries only the columns the file filled (a blank cell leaves the live
    value as it is); a create carries every filled column.
    """
    key = rules.key
    values = {k: v for k, v in row.values.items() if v is not None and k != key}
    return _LocalChange()(row.op or "create", rules.name, row.key, values)


def audit_source(batch_id: int) -> str:
    """The source the audit shows for the changes of an applied batch: apply passes
    ``staging:<id>`` and the engine marks every local source with its ``local:`` prefix."""
    from riversync.engine.store import LOCAL

    return f"{LOCAL}:{_apply_source(batch_id)}"


def _apply_source(batch_id: int) -> str:
    return f"staging:{batch_id}"


def _LocalChange():  # noqa: N802 - the engine's class, imported on first use
    from riversync.engine.store import LocalChange

    return LocalChange


def backlog(store, *, email_dir: str | None = None, now: int | None = None) -> dict:
    """Staging numbers for /metrics and health (keys the node's health checks read).

    ``email_backlog`` counts email batches waiting for review plus files still in the
    drop folder; ``excel_oldest_age_s`` is the age of the oldest Excel batch waiting
    (None when none waits).
    """
    st = Staging(store_conn(store))
    b = st.backlog(now)
    files = 0
    if email_dir:
        from .email_ingest import pending_files

        files = pending_files(email_dir)
    b["email_files"] = files
    b["email_backlog"] = b["email_pending"] + files
    b["excel_oldest_age_s"] = b["xlsx_oldest_age_s"] if b["xlsx_pending"] else None
    return b


class StagingDesk:
    """Everything a clerk or operator does with staging, for one node's open Store.

    The node API and the ``riversync`` commands both call these methods (the API from
    its database thread), so the two surfaces cannot drift apart.  Results are plain
    JSON-ready dicts.
    """

    def __init__(self, store, schema, import_options: dict | None = None):
        self.store = store
        self.schema = schema
        self.opts = import_options or {}
        self.staging = Staging(store_conn(store))
        self.live = StoreLive(store, schema)

    def rules(self, table: str) -> TableRules:
        return rules_from_schema(self.schema, table, self.opts.get(table))

    def live_for(self, user: str | None) -> LiveView:
        """The live view as ``user`` acts: the engine's events act for the user's home
        office (hybrid staff sign in at either node), so ownership is judged for that
        office, not the node's."""
        roster = getattr(self.store, "roster", None)
        office = (roster.home_office(user) if roster is not None and user else None)
        if office is None or office == self.live.office:
            return self.live
        return ActingAs(self.live, office)

    def import_xlsx(self, path: str, table: str, *, user: str, sheet: str | None = None,
                    source: str | None = None, progress: ProgressFn | None = None) -> dict:
        from .xlsx_import import import_xlsx

        res = import_xlsx(self.staging, path, self.rules(table), self.live_for(user), user=user,
                          sheet=sheet, source=source, progress=progress)
        return {"batch": self.staging.batch(res.batch_id).to_json(), "summary": res.summary}

    def list(self, state: str | None = None, limit: int = 100) -> dict:
        out = []
        for b in self.staging.batches(state=state, limit=limit):
            d = b.to_json()
            d["counts"] = self.staging.counts(b.id)
            out.append(d)
        return {"batches": out}

    def show(self, batch_id: int, *, status: str | None = None, limit: int = 1000,
             offset: int = 0) -> dict:
        b = self.staging.batch(batch_id).to_json()
        b["counts"] = self.staging.counts(batch_id)
        rows = self.staging.rows(batch_id, status=status, limit=limit, offset=offset)
        out = {"batch": b, "rows": rows}
        if b["kind"] == "email":
            out["message"] = self.message(batch_id)
        return out

    def message(self, batch_id: int) -> dict | None:
        for key, fname, subject, sender, sent, received, flags in self.staging.conn.execute(
                "SELECT message_key, file_name, subject, sender, sent_at, received_at, flags"
                " FROM staging_messages WHERE batch_id=?", (batch_id,)):
            parts = [
                {"part": n, "content_type": ct, "declared_charset": dc, "used_charset": uc,
                 "filename": fn, "bytes": size, "text": text}
                for n, ct, dc, uc, fn, size, text in self.staging.conn.execute(
                    "SELECT part_no, content_type, declared_charset, used_charset, filename,"
                    " length(raw), text FROM staging_parts WHERE batch_id=? ORDER BY part_no",
                    (batch_id,))]
            return {"message_id": key, "file": fname, "subject": subject, "from": sender,
                    "sent_at": sent, "received_at": received, "flags": json.loads(flags),
                    "parts": parts}
        return None

    def _table_of(self, batch_id: int) -> str:
        b = self.staging.batch(batch_id)
        if not b.table:
            raise NothingToApply(f"batch {batch_id} names no table",
                                 hint="a message needs a 'table:' line; see docs/how-to/email.md")
        return b.table

    def apply(self, batch_id: int, *, user: str, confirm: bool = False,
              exclude: Iterable[int] = (), now: int | None = None) -> dict:
        rules = self.rules(self._table_of(batch_id))
        exclude = list(exclude)
        if exclude:
            self.staging.exclude(batch_id, exclude)
        b = self.staging.apply(batch_id, self.store, rules, self.live_for(user), user=user,
                               now=now,
                               confirm=confirm, to_change=lambda r: to_local_change(rules, r))
        return {"batch": b.to_json()}

    def reject(self, batch_id: int, *, user: str, reason: str = "") -> dict:
        return {"batch": self.staging.reject(batch_id, user=user, reason=reason).to_json()}

    def exclude(self, batch_id: int, rows: Iterable[int], excluded: bool = True) -> dict:
        n = self.staging.exclude(batch_id, rows, excluded)
        return {"changed": n, "batch": self.staging.batch(batch_id).to_json()}

    def edit(self, batch_id: int, row: int, values: dict, *, user: str | None = None) -> dict:
        rules = self.rules(self._table_of(batch_id))
        return {"row": self.staging.edit_row(batch_id, row, values, rules, self.live_for(user))}

    def ingest(self, folder: str, *, user: str = "email") -> dict:
        from .email_ingest import ingest_folder

        return ingest_folder(self.staging, folder, self.rules, self.live, user=user).to_json()

    def export(self, out_path: str, scope: str, *, node: str) -> dict:
        from .xlsx_export import export_batch, export_snapshot, parse_scope

        kind, ident = parse_scope(scope)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if kind in ("batch", "staging"):
            bid = int(ident) if ident.isdigit() else -1
            n = export_batch(out_path, self.staging, bid, self.rules(self._table_of(bid)),
                             node=node, exported_at=stamp)
            return {"file": out_path, "scope": scope, "tables": {"staging": n}}
        conn = store_conn(self.store)
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN DEFERRED")  # one read snapshot for every sheet; no write lock
        try:
            shapes = _shapes(self.schema)
            hlc = self.store.newest_hlc()
            tables = export_snapshot(
                out_path, shapes, self._rows_with_owner, scope=(kind, ident), node=node,
                office=self.store.office, snapshot_hlc=hlc, schema_version=self.schema.version,
                exported_at=stamp)
        finally:
            if own:
                conn.execute("COMMIT")
        return {"file": out_path, "scope": scope, "snapshot_hlc": hlc, "tables": tables}

    def _rows_with_owner(self, table: str):
        t = self.schema.table(table)
        cols = ", ".join(f'"{c}"' for c in [t.primary_key, *t.columns])
        names = [t.primary_key, *t.columns]
        flags = {c.name for c in t.columns.values() if c.type == "boolean"}
        for row in store_conn(self.store).execute(
                f'SELECT {cols} FROM "{t.name}" ORDER BY "{t.primary_key}"'):
            d = dict(zip(names, row, strict=True))
            for f in flags:
                if d[f] is not None:
                    d[f] = bool(d[f])
            yield d, self.live.owner_of(table, d[t.primary_key])

    def backlog(self) -> dict:
        return backlog(self.store)


def _shapes(schema) -> dict:
    from .xlsx_export import TableShape

    return {t.name: TableShape(t.name, t.primary_key,
                               tuple((c.name, c.type) for c in t.columns.values()),
                               dict(t.references))
            for t in schema.tables.values()}
