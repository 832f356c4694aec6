"""Typed engine errors: what a local caller did wrong, named precisely.

Remote events are never refused with these: a remote event the engine cannot apply is
recorded as a conflict or parked, with its cause, because the hub already accepted it and
every replica must reach the same state.  These errors are for local writes (API, UI,
staging) and for broken schema files; each one says which table, key or column.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every engine error.  ``code`` is stable; ``hint`` says what to do next."""

    code = "ENGINE_ERROR"
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        if hint is not None:
            self.hint = hint
        super().__init__(f"{self.code}: {message}")


class SchemaError(EngineError):
    code = "SCHEMA_ERROR"
    hint = "fix the schema file; see docs/reference/schema.md"


class SchemaChanged(SchemaError):
    code = "SCHEMA_CHANGED"
    hint = ("a schema version names one content on every node: put the schema file back as "
            "it was, or raise its `version` and roll the new file out to every office; if "
            "this node ran a wrong file and you just put the cluster's in place, run "
            "`riversync node adopt-schema` (docs/how-to/operate.md)")


class SchemaDowngrade(SchemaError):
    code = "SCHEMA_DOWNGRADE"
    hint = ("start the node with the schema file of the newest version it ran, or a later "
            "one (the cluster's current file): a database never goes back to an older version")


class SchemaVersionDiffers(SchemaError):
    code = "SCHEMA_VERSION_DIFFERS"
    hint = ("adopt-schema replaces a wrong file under the version this database runs; to move "
            "to another version, start the node with that version's file (`node serve`)")


class UnknownTable(EngineError):
    code = "UNKNOWN_TABLE"
    hint = "use a table the schema declares"


class UnknownColumn(EngineError):
    code = "UNKNOWN_COLUMN"
    hint = "use a column the schema declares for this table"


class BadValue(EngineError):
    code = "BAD_VALUE"
    hint = "give a value of the column's declared type"


class BadKey(BadValue):
    code = "BAD_KEY"
    hint = "primary keys are non-empty text within the schema's length limit"


class RowTooLarge(BadValue):
    code = "ROW_TOO_LARGE"
    hint = ("keep one change under 15 MiB encoded (MAX_EVENT_BYTES): store large documents "
            "outside the database and keep a reference to them")


class MissingReference(BadValue):
    code = "MISSING_REFERENCE"
    hint = "create the referenced row first"


class NotOwner(EngineError):
    code = "NOT_OWNER"
    hint = "ask the owning office to make the change, or an admin to override"


class RowNotFound(EngineError):
    code = "ROW_NOT_FOUND"
    hint = "the row does not exist (or was deleted); create it first"


class RowExists(EngineError):
    code = "ROW_EXISTS"
    hint = "update the existing row instead of creating it again"


class ConflictNotFound(EngineError):
    code = "CONFLICT_NOT_FOUND"
    hint = "list open conflicts with `riversync conflicts list`"


class EpochRequired(EngineError):
    code = "EPOCH_REQUIRED"
    hint = "the first open of a database needs a node epoch (random 63-bit integer)"


class NotNodeDatabase(EngineError):
    """The file at db_path is a database, but not a node's: opening it would write the
    engine's tables into someone else's data (a hub store, another program's file)."""

    code = "NOT_NODE_DB"
    hint = ("check db_path in the node config: it must name this node's own database, or a "
            "file that does not exist yet")


class DatabaseUnreadable(EngineError):
    """db_path names no SQLite database at all (a folder, a damaged or foreign file)."""

    code = "DB_UNREADABLE"
    hint = ("check db_path in the node config; a damaged node database is restored with "
            "`riversync restore -c NODE.toml BACKUP`")


class WrongCluster(EngineError):
    code = "WRONG_CLUSTER"
    hint = ("this database belongs to another cluster: check db_path in the node config, or "
            "restore this node from one of its own backups")


class WrongNode(EngineError):
    code = "WRONG_NODE"
    hint = "this database belongs to another node; check the node id in the config"


ALL_ERRORS: tuple[type[EngineError], ...] = (
    SchemaError,
    UnknownTable,
    UnknownColumn,
    BadValue,
    BadKey,
    MissingReference,
    NotOwner,
    RowNotFound,
    RowExists,
    ConflictNotFound,
    EpochRequired,
    WrongNode,
)
