"""Errors of the node's local API: a stable code, an HTTP status and words for a person.

Every refusal the API makes is one of these, sent as ``{"error": {"code", "message",
"hint"}}``.  Codes never change once released; docs/reference/node-api.md lists them and a
test checks that every code here is documented there.  A refusal is raised before anything
is written, so a refused request changes nothing.
"""

from __future__ import annotations


class ApiError(Exception):
    """Root of the node API's refusals."""

    code = "API_ERROR"
    status = 400
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if hint is not None:
            self.hint = hint

    def to_json(self) -> dict:
        body = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.field:
            body["field"] = self.field
        return {"error": body}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"
    status = 401
    hint = "send 'Authorization: Bearer <token>' with a token from the cluster roster"


class Forbidden(ApiError):
    code = "FORBIDDEN"
    status = 403
    hint = "ask an operator or admin of this office to do it"


class BadJson(ApiError):
    code = "BAD_JSON"
    status = 400
    hint = "send a JSON object in the request body with Content-Type: application/json"


class BadRequest(ApiError):
    code = "BAD_REQUEST"
    status = 400
    hint = "see docs/reference/node-api.md for the fields this endpoint takes"


class TooLarge(ApiError):
    code = "TOO_LARGE"
    status = 413
    hint = ("send fewer rows per request (the node takes bodies up to 32 MiB), or stage a large "
            "file with `riversync import xlsx`")


class UnknownTable(ApiError):
    code = "UNKNOWN_TABLE"
    status = 404
    hint = "GET /v1/tables lists the tables of this node's schema"


class UnknownColumn(ApiError):
    code = "UNKNOWN_COLUMN"
    status = 400
    hint = "GET /v1/tables lists each table's columns"


class BadValue(ApiError):
    code = "BAD_VALUE"
    status = 400
    hint = "check the value against the column's type in the schema"


class RowNotFound(ApiError):
    code = "ROW_NOT_FOUND"
    status = 404
    hint = "check the primary key; GET /v1/tables/<table>/rows lists rows"


class RowExists(ApiError):
    code = "ROW_EXISTS"
    status = 409
    hint = "update the existing row instead, or choose another key"


class NotOwner(ApiError):
    code = "NOT_OWNER"
    status = 403
    hint = "the row belongs to another office: ask that office, or an admin override"


class ConflictNotFound(ApiError):
    code = "CONFLICT_NOT_FOUND"
    status = 404
    hint = "GET /v1/conflicts lists the open conflicts"


class ConflictClosed(ApiError):
    code = "CONFLICT_CLOSED"
    status = 409
    hint = "the conflict was already resolved; GET /v1/conflicts/<id> shows how"


class NotFound(ApiError):
    code = "NOT_FOUND"
    status = 404
    hint = "see docs/reference/node-api.md for the endpoints"


class MethodNotAllowed(ApiError):
    code = "METHOD_NOT_ALLOWED"
    status = 405
    hint = "see docs/reference/node-api.md for the methods each endpoint takes"


class Unavailable(ApiError):
    code = "UNAVAILABLE"
    status = 503
    hint = "the node's database is busy or being restored; retry in a few seconds"


class RestoreRefused(ApiError):
    """A backup the node will not restore: checked before replication pauses or a file
    moves, so the live database and the running node are untouched."""

    code = "RESTORE_DAMAGED"
    status = 400
    hint = "choose another backup"


class RestoreNotNodeDb(RestoreRefused):
    code = "RESTORE_NOT_NODE_DB"


class RestoreWrongNode(RestoreRefused):
    code = "RESTORE_WRONG_NODE"


class RestoreWrongCluster(RestoreRefused):
    code = "RESTORE_WRONG_CLUSTER"


class RestoreFailed(RestoreRefused):
    code = "RESTORE_FAILED"


def restore_refused(code: str, message: str, hint: str) -> RestoreRefused:
    """The refusal for a backup check's code (node/backup.py)."""
    for cls in (RestoreNotNodeDb, RestoreWrongNode, RestoreWrongCluster, RestoreFailed):
        if cls.code == code:
            return cls(message, hint=hint or None)
    return RestoreRefused(message, hint=hint or None)


class ClockAhead(ApiError):
    """This node's clock is ahead of the hub's by more than the cluster allows: an event
    stamped now would be refused by the hub, so the write is not taken (node.hubclock)."""

    code = "CLOCK_AHEAD"
    status = 503
    hint = "fix this computer's clock (NTP); writes are taken again once it agrees with the hub's"


class Internal(ApiError):
    code = "INTERNAL"
    status = 500
    hint = "this is a bug in riversync; the node's log has the details"


ALL_API_ERRORS: tuple[type[ApiError], ...] = (
    Unauthenticated,
    Forbidden,
    BadJson,
    BadRequest,
    TooLarge,
    UnknownTable,
    UnknownColumn,
    BadValue,
    RowNotFound,
    RowExists,
    NotOwner,
    ConflictNotFound,
    ConflictClosed,
    NotFound,
    MethodNotAllowed,
    Unavailable,
    ClockAhead,
    RestoreRefused,
    RestoreNotNodeDb,
    RestoreWrongNode,
    RestoreWrongCluster,
    RestoreFailed,
    Internal,
)
