"""The node's local HTTP API: rows, ownership, conflicts, sync, status and metrics.

Every route is in ``ROUTES`` below with the role it needs; the middleware authenticates
the bearer token before a handler runs (``/healthz`` and the static UI shell are the only
open paths: the UI asks for a token and sends it with every call).  Handlers validate
the whole request before they call the store, and the store's own refusals are typed
and change nothing, so a refused request never leaves a trace in the data.  Errors are
JSON ``{"error": {"code", "message", "hint"}}`` with the codes of ``node/errors.py``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import errors as E
from .auth import ADMIN, CLERK, OPERATOR, Caller, authenticate
from .hubclock import GUARD_HINT, guard_message
from .transport import HubUnreachable

log = logging.getLogger("riversync.node.api")

STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = frozenset({"/healthz", "/", "/ui"})
OPEN_PREFIX = "/static/"
MAX_LIST_LIMIT = 1000
CTX_KEY = web.AppKey("riversync_node", object)
# A typed key: aiohttp warns on string keys, and with warnings as errors that is a 500.
CALLER_KEY = web.RequestKey("riversync_caller", Caller)

# Engine refusals, by class name, to the API's codes (the engine's types stay inside it).
ENGINE_ERRORS: dict[str, type[E.ApiError]] = {
    "UnknownTable": E.UnknownTable,
    "UnknownColumn": E.UnknownColumn,
    "BadValue": E.BadValue,
    "BadPrimaryKey": E.BadValue,
    "MissingValue": E.BadValue,
    "NotOwner": E.NotOwner,
    "RowNotFound": E.RowNotFound,
    "RowExists": E.RowExists,
    "ConflictNotFound": E.ConflictNotFound,
    "UnknownConflict": E.ConflictNotFound,
    "ConflictClosed": E.ConflictClosed,
    "ConflictResolved": E.ConflictClosed,
    "BadDecision": E.BadRequest,
    "UnknownOffice": E.BadValue,
}


def api_error_from(exc: Exception) -> E.ApiError | None:
    """The API error for an engine refusal, or None when ``exc`` is not one."""
    for cls in type(exc).__mro__:
        mapped = ENGINE_ERRORS.get(cls.__name__)
        if mapped is not None:
            err = mapped(str(getattr(exc, "message", None) or exc))
            hint = getattr(exc, "hint", None)
            if isinstance(hint, str) and hint:
                err.hint = hint
            return err
    return None


def ctx_of(request: web.Request) -> Any:
    return request.app[CTX_KEY]


def caller_of(request: web.Request) -> Caller:
    return request[CALLER_KEY]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False)


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes | bytearray | memoryview):
        return {"$hex": bytes(o).hex()}
    if isinstance(o, tuple | set | frozenset):
        return list(o)
    if hasattr(o, "__dict__"):
        return {k: v for k, v in vars(o).items() if not k.startswith("_")}
    return str(o)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON, but no double holds it
        raise ValueError(f"{text} is too large for a number (a 64-bit float)")
    return value


async def read_json(request: web.Request, fields: tuple[str, ...]) -> dict:
    """The request body as a JSON object of the endpoint's ``fields``.

    A field the endpoint does not know is refused, not ignored: a misspelt ``admin`` or
    ``values`` would otherwise change what the write does without a word.

    Raises:
        BadJson: empty, not JSON (NaN, Infinity and numbers that overflow a double
            included), or not an object.
        BadRequest: a field the endpoint does not take.
    """
    raw = await request.read()
    if not raw:
        raise E.BadJson("the request body is empty; a JSON object is expected")
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise E.BadJson(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise E.BadJson("the request body nests arrays or objects too deeply") from None
    if not isinstance(body, dict):
        raise E.BadJson(f"the request body must be a JSON object, got {type(body).__name__}")
    if b"\\u" in raw:  # only an escape can smuggle in a lone surrogate
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise E.BadJson("the request body holds a lone surrogate escape (such as"
                            " \\ud800), which is not valid Unicode text") from None
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise E.BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                           f"{request.method} {request.path} takes {', '.join(fields)}")
    return body


def values_of(body: dict, key: str = "values", *, required: bool = True) -> dict:
    values = body.get(key)
    if values is None and not required:
        return {}
    if not isinstance(values, dict):
        raise E.BadRequest(f"'{key}' must be an object of column: value", field=key)
    for col, val in values.items():
        if isinstance(val, dict | list):
            raise E.BadValue(f"column {col!r}: a value must be text, a number, true/false or "
                             f"null, got {type(val).__name__}", field=f"{key}.{col}")
    return values


def json_type(value) -> str:
    """A JSON value's kind in the words of a request's author."""
    if isinstance(value, bool):
        return "true/false"
    return {int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def flag(body: dict, key: str) -> bool:
    v = body.get(key, False)
    if not isinstance(v, bool):
        raise E.BadRequest(f"'{key}' must be true or false", field=key)
    return v


def bool_param(request: web.Request, name: str) -> bool:
    """A true/false query parameter: true/false/1/0 only, so a typo is never a silent no."""
    raw = request.query.get(name)
    if raw is None:
        return False
    v = raw.lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise E.BadRequest(f"query parameter {name!r} must be true, false, 1 or 0, got {raw!r}",
                       field=name)


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise E.BadRequest(f"query parameter {name!r} must be an integer", field=name) from None
    if not lo <= v <= hi:
        raise E.BadRequest(f"query parameter {name!r} must be between {lo} and {hi}", field=name)
    return v


def event_json(ev: Any) -> dict:
    return {"kind": ev.kind, "node": ev.node, "epoch": ev.epoch, "seq": ev.seq, "hlc": ev.hlc,
            "table": ev.table, "pk": ev.pk}


# ---- middleware -------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        path = request.path
        if path not in OPEN_PATHS and not path.startswith(OPEN_PREFIX):
            ctx = ctx_of(request)
            caller = authenticate(request.headers.get("Authorization"), ctx.roster)
            request[CALLER_KEY] = caller
            role = ROLE_OF.get(getattr(request.match_info, "handler", None))
            if role is not None:
                caller.require(role, f"{request.method} {request.path}")
            if ctx.maintenance and path not in ("/v1/status", "/metrics"):
                raise E.Unavailable(f"the node is busy: {ctx.maintenance}")
            await _refuse_what_the_endpoint_does_not_take(request)
            ctx.serving += 1  # a restore waits for these before it closes the store
            try:
                return await handler(request)
            finally:
                ctx.serving -= 1
        if path.startswith("/static/") and not (
                STATIC_DIR / request.match_info.get("filename", "")).is_file():
            # aiohttp finds a file missing only while it sends it: an empty octet-stream 404
            err = E.NotFound(f"no file {path}")
            return json_response(err.to_json(), status=404)
        return await handler(request)
    except E.ApiError as e:
        return json_response(e.to_json(), status=e.status)
    except web.HTTPException as e:
        if e.status == 404:
            err: E.ApiError = E.NotFound(f"no endpoint {request.method} {request.path}")
        elif e.status == 405:
            err = E.MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        elif e.status == 413:
            err = E.TooLarge("the request body is too large")
        elif e.status == 403:  # a static path aiohttp will not serve (a folder)
            err = E.NotFound(f"no file {request.path}")
            return json_response(err.to_json(), status=404)
        else:
            raise
        return json_response(err.to_json(), status=e.status)
    except Exception as e:  # noqa: BLE001 - the engine's typed refusals arrive here
        mapped = api_error_from(e)
        if mapped is not None:
            return json_response(mapped.to_json(), status=mapped.status)
        log.exception("unexpected error on %s %s", request.method, request.path)
        err = E.Internal(f"{type(e).__name__}: {e}")
        return json_response(err.to_json(), status=err.status)


async def _refuse_what_the_endpoint_does_not_take(request: web.Request) -> None:
    """A query parameter or a body an endpoint does not take is refused, never ignored: a
    misspelt ``?limt=`` or an ``{"admin": true}`` sent to DELETE (whose override is
    ``?admin=true``) would otherwise do something else than asked, without a word."""
    handler = getattr(request.match_info, "handler", None)
    takes = QUERY_OF.get(handler)
    if takes is None:  # not one of this module's endpoints (staging checks its own)
        return
    unknown = sorted(set(request.query) - takes)
    if unknown:
        raise E.BadRequest(
            f"{request.method} {request.path} takes no query parameter {unknown[0]!r}"
            + (f"; it takes {', '.join(sorted(takes))}" if takes else ""), field=unknown[0])
    if handler in NO_BODY and request.can_read_body:
        raw = (await request.read()).strip()
        if raw and raw != b"{}":
            hint = " (an admin override is ?admin=true)" if handler is delete_row else ""
            raise E.BadRequest(f"{request.method} {request.path} takes no request body{hint}")


# ---- handlers ---------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    level, _ = await ctx.health()
    return json_response({"status": level, "node": ctx.node_id})


async def ui(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def status(request: web.Request) -> web.Response:
    return json_response(await ctx_of(request).status())


async def metrics(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    await ctx.health()
    body = generate_latest(ctx.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def tables(request: web.Request) -> web.Response:
    return json_response({"tables": ctx_of(request).describe_tables()})


def table_arg(request: web.Request) -> str:
    ctx = ctx_of(request)
    table = request.match_info["table"]
    if table not in ctx.table_names():
        raise E.UnknownTable(f"there is no table {table!r} in this node's schema")
    return table


async def list_rows(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    table = table_arg(request)
    limit = int_param(request, "limit", 100, 1, MAX_LIST_LIMIT)
    offset = int_param(request, "offset", 0, 0, 1 << 62)
    rows = await ctx.db.run(ctx.store.list_rows, table, limit=limit, offset=offset)
    return json_response({"table": table, "rows": rows, "limit": limit, "offset": offset})


async def get_row(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    table = table_arg(request)
    pk = request.match_info["pk"]
    row = await ctx.db.run(ctx.store.get_row, table, pk)
    if row is None:
        raise E.RowNotFound(f"{table} {pk!r} does not exist here")
    return json_response({"table": table, "pk": pk, "row": row})


def refuse_if_clock_ahead(ctx: Any) -> None:
    """The write guard: while the hub's replies show this node's clock ahead of the hub's by
    more than the cluster's max drift, a local write would be stamped with an HLC the hub
    refuses, so it is not taken.  With the hub unreachable nothing is known and writes go on
    (offline first); the agent forgets a reading the clock no longer bears out.

    Raises:
        ClockAhead: 503, with the measured offset and how it was measured.
    """
    agent = getattr(ctx, "agent", None)
    info = agent.clock_ahead() if agent is not None else None
    if info is not None:
        raise E.ClockAhead(guard_message(info), hint=GUARD_HINT)


async def _commit(request: web.Request, changes: list, *, admin: bool) -> web.Response:
    ctx = ctx_of(request)
    caller = caller_of(request)
    if admin:
        caller.require(ADMIN, "an admin override")
    refuse_if_clock_ahead(ctx)
    events = await ctx.commit(changes, caller, admin=admin)
    ch = changes[0]
    row = await ctx.db.run(ctx.store.get_row, ch.table, ch.pk)
    return json_response({"ok": True, "events": [event_json(e) for e in events], "row": row},
                         status=201 if ch.kind == "create" else 200)


async def create_row(request: web.Request) -> web.Response:
    from riversync.engine.store import LocalChange

    table = table_arg(request)
    body = await read_json(request, ("pk", "values", "admin"))
    pk = body.get("pk")
    if pk is not None and not isinstance(pk, str):
        raise E.BadRequest(f"'pk' must be text (the primary key), not {json_type(pk)}",
                           field="pk")
    if pk is None:
        raise E.BadRequest("'pk' (the primary key, as text) is required", field="pk")
    if not pk:
        raise E.BadRequest("'pk' is empty: a primary key needs at least one character",
                           field="pk")
    values = values_of(body)
    admin = flag(body, "admin")
    return await _commit(request, [LocalChange(kind="create", table=table, pk=pk,
                                               values=values)], admin=admin)


async def update_row(request: web.Request) -> web.Response:
    from riversync.engine.store import LocalChange

    table = table_arg(request)
    body = await read_json(request, ("values", "admin"))
    values = values_of(body)
    if not values:
        raise E.BadRequest("'values' names no column to change", field="values")
    admin = flag(body, "admin")
    pk = request.match_info["pk"]
    return await _commit(request, [LocalChange(kind="update", table=table, pk=pk,
                                               values=values)], admin=admin)


async def delete_row(request: web.Request) -> web.Response:
    from riversync.engine.store import LocalChange

    table = table_arg(request)
    admin = bool_param(request, "admin")
    pk = request.match_info["pk"]
    return await _commit(request, [LocalChange(kind="delete", table=table, pk=pk)], admin=admin)


async def transfer_row(request: web.Request) -> web.Response:
    from riversync.engine.store import LocalChange

    ctx = ctx_of(request)
    table = table_arg(request)
    body = await read_json(request, ("owner", "admin"))
    owner = body.get("owner")
    offices = ", ".join(ctx.roster.offices)
    if owner is None:
        raise E.BadRequest(f"'owner' is required: the office the row goes to ({offices})",
                           field="owner")
    if not isinstance(owner, str) or owner not in ctx.roster.offices:
        raise E.BadValue(f"'owner' {owner!r} is not an office of the cluster",
                         hint=f"give one of the offices: {offices}", field="owner")
    admin = flag(body, "admin")
    pk = request.match_info["pk"]
    if await ctx.db.run(ctx.store.owner_of, table, pk) == owner:
        raise E.BadValue(f"{table} {pk!r} already belongs to office {owner!r}",
                         hint="nothing to transfer", field="owner")
    return await _commit(request, [LocalChange(kind="transfer", table=table, pk=pk,
                                               owner=owner)], admin=admin)


async def list_conflicts(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(OPERATOR, "listing conflicts")
    open_only = not bool_param(request, "all")
    conflicts = await ctx.db.run(ctx.store.conflicts, open_only=open_only)
    parked = await ctx.db.run(ctx.store.parked)
    return json_response({"conflicts": conflicts, "parked": parked})


async def show_conflict(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(OPERATOR, "reading a conflict")
    cid = request.match_info["cid"]
    c = await ctx.db.run(ctx.store.conflict, cid)
    if c is None:
        raise E.ConflictNotFound(f"there is no conflict {cid!r} on this node")
    return json_response({"conflict": c})


async def resolve_conflict(request: web.Request) -> web.Response:
    from riversync.engine.store import LocalChange

    ctx = ctx_of(request)
    caller = caller_of(request)
    caller.require(OPERATOR, "resolving a conflict")
    cid = request.match_info["cid"]
    body = await read_json(request, ("decision", "values", "admin"))
    decision = body.get("decision")
    if decision not in ("accept", "keep", "merge"):
        raise E.BadRequest("'decision' must be 'accept' (take the incoming change), 'keep' "
                           "(keep the local state) or 'merge' (with 'values')", field="decision")
    values = values_of(body, required=decision == "merge")
    if decision != "merge" and values:
        raise E.BadRequest("'values' only goes with decision 'merge'", field="values")
    admin = flag(body, "admin")
    c = await ctx.db.run(ctx.store.conflict, cid)
    if c is None:
        raise E.ConflictNotFound(f"there is no conflict {cid!r} on this node")
    if not _is_open(c):
        raise E.ConflictClosed(f"conflict {cid!r} is already resolved")
    if admin:
        caller.require(ADMIN, "an admin override")
    change = LocalChange(kind="resolve", table=c["table"], pk=c["pk"], conflict=cid,
                         decision=decision, values=values or None)
    refuse_if_clock_ahead(ctx)
    events = await ctx.commit([change], caller, admin=admin)
    after = await ctx.db.run(ctx.store.conflict, cid)
    return json_response({"ok": True, "events": [event_json(e) for e in events],
                          "conflict": after})


def _is_open(c: dict) -> bool:
    if "open" in c:
        return bool(c["open"])
    status_ = c.get("status") or c.get("state")
    return status_ in (None, "open")


async def sync_now(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(OPERATOR, "sync now")
    try:
        result = await ctx.agent.sync_now()
    except HubUnreachable as e:
        raise E.Unavailable(f"the hub did not answer: {e}",
                            hint="the node keeps its changes and retries by itself") from None
    except Exception as e:  # noqa: BLE001 - typed sync failures become a 502 with their code
        err = ctx.agent.error or {}
        return json_response({"error": {"code": err.get("code", type(e).__name__),
                                        "message": err.get("message", str(e)),
                                        "hint": err.get("hint", "")}}, status=502)
    return json_response({"ok": True, **result, "status": await ctx.status()})


async def digests(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(OPERATOR, "reading digests")
    return json_response(await ctx.digests())


async def audit(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(OPERATOR, "reading the audit")
    limit = int_param(request, "limit", 100, 1, MAX_LIST_LIMIT)
    return json_response({"audit": await ctx.db.run(ctx.store.audit, limit=limit)})


async def backup(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(OPERATOR, "taking a backup")
    return json_response(await ctx.take_backup(), status=201)


async def restore(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    caller_of(request).require(ADMIN, "restoring from a backup")
    body = await read_json(request, ("backup",))
    path = body.get("backup")
    if not isinstance(path, str) or not path:
        raise E.BadRequest("'backup' (path of a backup file on this machine) is required",
                           field="backup")
    return json_response(await ctx.restore(Path(path)))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# method, path, handler, role (None: open).  The role here is the least any caller needs;
# handlers check more where the body decides (admin overrides).
ROUTES: list[tuple[str, str, Handler, str | None]] = [
    ("GET", "/healthz", healthz, None),
    ("GET", "/", ui, None),
    ("GET", "/ui", ui, None),
    ("GET", "/v1/status", status, CLERK),
    ("GET", "/metrics", metrics, CLERK),
    ("GET", "/v1/tables", tables, CLERK),
    ("GET", "/v1/tables/{table}/rows", list_rows, CLERK),
    ("POST", "/v1/tables/{table}/rows", create_row, CLERK),
    ("GET", "/v1/tables/{table}/rows/{pk}", get_row, CLERK),
    ("PATCH", "/v1/tables/{table}/rows/{pk}", update_row, CLERK),
    ("DELETE", "/v1/tables/{table}/rows/{pk}", delete_row, CLERK),
    ("POST", "/v1/tables/{table}/rows/{pk}/transfer", transfer_row, CLERK),
    ("GET", "/v1/conflicts", list_conflicts, OPERATOR),
    ("GET", "/v1/conflicts/{cid}", show_conflict, OPERATOR),
    ("POST", "/v1/conflicts/{cid}/resolve", resolve_conflict, OPERATOR),
    ("POST", "/v1/sync", sync_now, OPERATOR),
    ("GET", "/v1/digests", digests, OPERATOR),
    ("GET", "/v1/audit", audit, OPERATOR),
    ("POST", "/v1/backup", backup, OPERATOR),
    ("POST", "/v1/restore", restore, ADMIN),
]


ROLE_OF: dict[Any, str] = {h: role for _m, _p, h, role in ROUTES if role is not None}
# The query parameters each endpoint reads; any other is refused (BAD_REQUEST).
QUERY_OF: dict[Any, frozenset[str]] = {h: frozenset() for _m, _p, h, role in ROUTES
                                       if role is not None and h is not metrics}
QUERY_OF.update({list_rows: frozenset({"limit", "offset"}), delete_row: frozenset({"admin"}),
                 list_conflicts: frozenset({"all"}), audit: frozenset({"limit"})})
NO_BODY = frozenset({delete_row, sync_now, backup})  # POST/DELETE endpoints without a body


def add_routes(app: web.Application) -> None:
    for method, path, handler, _role in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)

