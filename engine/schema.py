"""The replicated schema: which tables exist, their typed columns and who owns their rows.

A schema is a small TOML file (see docs/reference/schema.md).  It is the only source of
SQL identifiers: names are checked against a strict pattern here, and every statement the
engine builds uses these checked names, never event data.  Values are checked against
column types here too, with one function shared by local writes and remote replay, so a
value a node refuses locally is exactly one a peer parks.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from riversync.protocol import limits

from .errors import SchemaError

IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_PREFIXES = ("_rs_", "sqlite_")
TYPES = ("text", "integer", "real", "boolean", "date", "money", "blob")
SQL_TYPES = {
    "text": "TEXT",
    "integer": "INTEGER",
    "real": "REAL",
    "boolean": "INTEGER",
    "date": "TEXT",
    "money": "INTEGER",
    "blob": "BLOB",
}
CREATOR = "creator"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Characters a primary key may not hold: C0/C1 controls and DEL (they break spreadsheets,
# mail subjects and terminals, and are never typed on purpose), the Unicode line and
# paragraph separators, and lone surrogates (not encodable as UTF-8, so not on the wire).
PK_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Characters a text value may not hold: lone surrogates only (they cannot be encoded);
# newlines, tabs and other controls are legitimate text and exported escaped.
TEXT_FORBIDDEN = re.compile("[\ud800-\udfff]")
INT64 = (-(1 << 63), (1 << 63) - 1)


def check_ident(name: object, what: str) -> str:
    """Raises SchemaError unless ``name`` is a safe lower-case SQL identifier."""
    if not isinstance(name, str) or not IDENT.match(name) or name.startswith(RESERVED_PREFIXES):
        raise SchemaError(
            f"{what} {name!r} is not a valid name: use [a-z][a-z0-9_]*, at most 63 characters,"
            " not starting with _rs_ or sqlite_"
        )
    return name


def q(name: str) -> str:
    """Quote a checked identifier for SQL."""
    return f'"{name}"'


_PY_TYPES = {
    "text": (str,),
    "integer": (int,),
    "real": (float, int),
    "boolean": (bool,),
    "date": (str,),
    "money": (int,),
    "blob": (bytes,),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    references: str | None = None
    default: object = None

    def __post_init__(self):
        # Precomputed for the replay hot path: the Python types a value may have, and
        # whether a value of such a type still needs the full check (dates, long text).
        object.__setattr__(self, "py_types", _PY_TYPES.get(self.type, ()))
        object.__setattr__(self, "slow_check", self.type == "date")

    def check(self, value: object) -> str | None:
        """Why ``value`` does not fit this column, or None when it does."""
        if value is None:
            return f"column {self.name!r} is required" if self.required else None
        t = type(value)
        kind = self.type
        if kind == "text":
            if t is not str:
                return f"column {self.name!r} is text, got {t.__name__}"
            if len(value) > limits.MAX_TEXT_CHARS:
                return f"column {self.name!r} is longer than {limits.MAX_TEXT_CHARS} characters"
            if not value.isascii() and TEXT_FORBIDDEN.search(value):
                return f"column {self.name!r} holds a lone surrogate (not valid Unicode text)"
        elif kind in ("integer", "money"):
            if t is not int:
                return f"column {self.name!r} is {kind}, got {t.__name__}"
            if not INT64[0] <= value <= INT64[1]:
                return f"column {self.name!r} is outside the signed 64-bit range"
        elif kind == "real":
            if t is not float and t is not int:
                return f"column {self.name!r} is real, got {t.__name__}"
            if t is float and not math.isfinite(value):
                # JSON has no such number and SQLite stores NaN as NULL: one replica would
                # hold what another could not show or export.
                return f"column {self.name!r} is real and needs a finite number, got {value!r}"
            if t is int and not INT64[0] <= value <= INT64[1]:
                return f"column {self.name!r} is outside the signed 64-bit range"
        elif kind == "boolean":
            if t is not bool:
                return f"column {self.name!r} is boolean, got {t.__name__}"
        elif kind == "date":
            if t is not str or not DATE_RE.match(value):
                return f"column {self.name!r} is a date (YYYY-MM-DD), got {value!r}"
            try:
                _dt.date.fromisoformat(value)
            except ValueError:
                return f"column {self.name!r} holds an impossible date {value!r}"
        elif kind == "blob":
            if t is not bytes:
                return f"column {self.name!r} is blob, got {t.__name__}"
        return None


@dataclass(frozen=True)
class Table:
    name: str
    primary_key: str
    columns: dict[str, Column]  # without the primary key, in declared order
    ownership: str = CREATOR  # "creator" or "parent:<column>"
    max_pk_chars: int = limits.MAX_PK_CHARS

    def __post_init__(self):
        # Derived once: the replay hot path reads these for every event.
        pcol = self.ownership.split(":", 1)[1] if self.ownership != CREATOR else None
        cols = self.columns
        object.__setattr__(self, "parent_column", pcol)
        object.__setattr__(self, "parent_table", cols[pcol].references if pcol else None)
        object.__setattr__(self, "references",
                           {c.name: c.references for c in cols.values() if c.references})
        object.__setattr__(self, "defaults", {n: c.default for n, c in cols.items()})
        object.__setattr__(self, "required_columns",
                           [c.name for c in cols.values() if c.required and c.default is None])

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def check_pk(self, pk: object) -> str | None:
        """Why ``pk`` cannot be a key, or None.  Pure, and the one rule for local writes,
        staging and remote replay, so a key refused here is parked by every peer alike."""
        if not isinstance(pk, str) or not pk:
            return "the primary key must be non-empty text"
        if len(pk) > self.max_pk_chars:
            return f"the primary key is longer than {self.max_pk_chars} characters"
        bad = PK_FORBIDDEN.search(pk)
        if bad:
            return (f"the primary key holds the control character U+{ord(bad.group()):04X}"
                    f" at position {bad.start()}")
        if pk.strip() != pk:
            return "the primary key starts or ends with a space (or is only spaces)"
        return None

    def check_values(self, values: dict, *, creating: bool) -> str | None:
        """Why ``values`` cannot be stored, or None.  Absent columns are fine for updates."""
        cols = self.columns
        for name, value in values.items():
            col = cols.get(name)
            if col is None:
                return f"unknown column {name!r} in table {self.name!r}"
            if value is None:
                if col.required:
                    return f"column {name!r} is required"
                continue
            tp = type(value)
            if tp not in col.py_types or col.slow_check or (
                    tp is int and not INT64[0] <= value <= INT64[1]) or (
                    tp is float and not math.isfinite(value)) or (
                    tp is str and (len(value) > limits.MAX_TEXT_CHARS or not value.isascii())):
                why = col.check(value)
                if why:
                    return why
        if creating:
            for name in self.required_columns:
                if name not in values:
                    return f"column {name!r} is required"
        return None

    def full_row(self, values: dict) -> dict:
        """A created row: declared defaults overlaid with the create's values."""
        row = self.defaults.copy()
        row.update(values)
        return row


@dataclass(frozen=True)
class Schema:
    version: int
    tables: dict[str, Table] = field(default_factory=dict)

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def children_of(self, table: str) -> list[Table]:
        """Tables whose rows follow the owner of a row of ``table``."""
        return [t for t in self.tables.values() if t.parent_table == table]

    def digest(self) -> str:
        """SHA-256 of everything the merge depends on (tables, keys, columns, types, rules),
        not of the file's text: two nodes with equal digests judge every event alike."""
        doc = {"version": self.version, "tables": {
            name: {"pk": t.primary_key, "ownership": t.ownership, "max_pk": t.max_pk_chars,
                   "columns": [[c.name, c.type, c.required, c.references, c.default]
                               for c in t.columns.values()]}
            for name, t in sorted(self.tables.items())}}
        text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _parse_column(table: str, name: str, spec: object) -> Column:
    check_ident(name, f"column of table {table!r}")
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise SchemaError(f"column {table}.{name} must be a type name or a table of options")
    unknown = set(spec) - {"type", "required", "references", "default"}
    if unknown:
        raise SchemaError(f"column {table}.{name} has unknown options {sorted(unknown)}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise SchemaError(f"column {table}.{name} has type {kind!r}; use one of {', '.join(TYPES)}")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise SchemaError(f"column {table}.{name}: required must be true or false")
    ref = spec.get("references")
    if ref is not None:
        check_ident(ref, f"table referenced by {table}.{name}")
    col = Column(name, kind, required, ref, spec.get("default"))
    if col.default is not None and col.check(col.default):
        raise SchemaError(f"column {table}.{name}: default {col.default!r} does not fit its type")
    return col


def parse_schema(doc: dict) -> Schema:
    """Build a Schema from a parsed TOML document.

    Raises:
        SchemaError: naming the table and column at fault.
    """
    version = doc.get("version")
    if not isinstance(version, int) or not 1 <= version <= 65535:
        raise SchemaError("schema needs `version = N` (1..65535)")
    raw_tables = doc.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise SchemaError("schema declares no [tables.<name>]")
    tables: dict[str, Table] = {}
    for tname, spec in raw_tables.items():
        check_ident(tname, "table")
        if not isinstance(spec, dict):
            raise SchemaError(f"table {tname!r} must be a TOML table")
        unknown = set(spec) - {"primary_key", "columns", "ownership", "max_pk_chars"}
        if unknown:
            raise SchemaError(f"table {tname!r} has unknown options {sorted(unknown)}")
        pk = check_ident(spec.get("primary_key"), f"primary key of table {tname!r}")
        raw_cols = spec.get("columns")
        if not isinstance(raw_cols, dict) or pk not in raw_cols:
            raise SchemaError(f"table {tname!r} must declare its primary key column {pk!r}")
        pk_spec = raw_cols[pk]
        pk_type = pk_spec if isinstance(pk_spec, str) else pk_spec.get("type")
        if pk_type != "text":
            raise SchemaError(f"primary key {tname}.{pk} must be of type text")
        cols = {n: _parse_column(tname, n, s) for n, s in raw_cols.items() if n != pk}
        ownership = spec.get("ownership", CREATOR)
        if ownership != CREATOR:
            if not isinstance(ownership, str) or not ownership.startswith("parent:"):
                raise SchemaError(
                    f"table {tname!r}: ownership is \"creator\" or \"parent:<column>\""
                )
            pcol = ownership.split(":", 1)[1]
            if pcol not in cols or not cols[pcol].references or not cols[pcol].required:
                raise SchemaError(
                    f"table {tname!r}: ownership column {pcol!r} must be a required column"
                    " with `references`"
                )
        max_pk = spec.get("max_pk_chars", limits.MAX_PK_CHARS)
        if not isinstance(max_pk, int) or not 1 <= max_pk <= limits.MAX_PK_CHARS:
            raise SchemaError(f"table {tname!r}: max_pk_chars must be 1..{limits.MAX_PK_CHARS}")
        tables[tname] = Table(tname, pk, cols, ownership, max_pk)
    for t in tables.values():
        for col in t.columns.values():
            if col.references and col.references not in tables:
                raise SchemaError(
                    f"column {t.name}.{col.name} references unknown table {col.references!r}"
                )
    # Ownership chains must end at a creator-owned table.
    for t in tables.values():
        seen = {t.name}
        cur = t
        while cur.parent_table:
            cur = tables[cur.parent_table]
            if cur.name in seen:
                raise SchemaError(f"table {t.name!r}: ownership follows parents in a cycle")
            seen.add(cur.name)
    return Schema(version, tables)


def load_schema(path: str | Path) -> Schema:
    """Read and check a schema TOML file.

    Raises:
        SchemaError: the file is missing, not TOML, or declares something invalid.
    """
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise SchemaError(f"cannot read schema file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SchemaError(f"schema file {path} is not valid TOML: {e}") from None
    return parse_schema(doc)


def create_table_sql(t: Table) -> str:
    """DDL for one replicated table.  STRICT so SQLite itself refuses a mistyped value."""
    cols = [f"{q(t.primary_key)} TEXT PRIMARY KEY NOT NULL"]
    for c in t.columns.values():
        cols.append(f"{q(c.name)} {SQL_TYPES[c.type]}")
    return f"CREATE TABLE IF NOT EXISTS {q(t.name)} ({', '.join(cols)}) STRICT"
