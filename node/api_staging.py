"""The node API's staging endpoints: Excel upload, review, apply, reject, email, export.

Wiring (the node daemon does this once, after its own routes)::

    from riversync.node import api_staging
    api_staging.add_routes(app.router, lambda request: request.app[CTX_KEY])
    ctx.staging_backlog = api_staging.backlog        # backlog(store) -> dict, for /metrics

``get_context(request)`` must return the node's context: ``.store`` (engine Store),
``.schema``, ``.db`` (the database thread: ``run``/``write``), ``.cfg`` (NodeConfig:
``node_id``, ``roster_path``, ``staging_email_dir``) and optionally ``.agent``
(``notify_write()`` after an apply) and ``.schema_path``.  The caller is
``request["caller"]`` (name, role, office), set by the daemon's auth middleware.

Every store call runs on the database thread.  Files travel as base64 inside JSON, so
the same small client serves every command.  Routes and bodies: docs/reference/staging.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import head
from .staging import StagingDesk, StagingError, load_import_options
from .staging import backlog as _backlog

log = logging.getLogger("riversync.staging")

CLERK, OPERATOR = "clerk", "operator"
MAX_ID = (1 << 63) - 1  # batch ids and row numbers are SQLite integers
MAX_UPLOAD_BYTES = 24 * 1024 * 1024  # decoded workbook size accepted over the API
EMAIL_POLL_S = 30  # how often the drop-folder watcher looks for new messages

ROUTES = [
    # method, path, handler name, role
    ("GET", "/v1/staging", "list_batches", CLERK),
    ("POST", "/v1/staging/xlsx", "upload_xlsx", CLERK),
    ("POST", "/v1/staging/email/ingest", "ingest_email", OPERATOR),
    ("GET", "/v1/staging/{id}", "show_batch", CLERK),
    ("POST", "/v1/staging/{id}/apply", "apply_batch", OPERATOR),
    ("POST", "/v1/staging/{id}/reject", "reject_batch", OPERATOR),
    ("POST", "/v1/staging/{id}/exclude", "exclude_rows", CLERK),
    ("POST", "/v1/staging/{id}/rows/{row}", "edit_row", CLERK),
    ("POST", "/v1/export/xlsx", "export_xlsx", CLERK),
]


class BadStagingRequest(StagingError):
    code = "STAGING_BAD_REQUEST"
    hint = "see docs/reference/staging.md for the fields this endpoint takes"


def backlog(store) -> dict:
    """Staging backlog for /metrics and health: see ``staging.backlog``."""
    return _backlog(store)


def desk_for(ctx) -> StagingDesk:
    desk = getattr(ctx, "_staging_desk", None)
    if desk is None or desk.store is not ctx.store:
        schema_path = getattr(ctx, "schema_path", None)
        if schema_path is None:
            schema_path = Path(ctx.cfg.roster_path).parent / "schema.toml"
        opts = load_import_options(str(schema_path)) if os.path.exists(schema_path) else {}
        desk = StagingDesk(ctx.store, ctx.schema, opts)
        ctx._staging_desk = desk
    return desk


def add_routes(router: web.UrlDispatcher, get_context: Callable[[web.Request], Any]) -> None:
    """Register the staging routes on ``router``; see the module docstring."""
    handlers = _Handlers(get_context)
    for method, path, name, role in ROUTES:
        router.add_route(method, path, handlers.wrap(getattr(handlers, name), role))


def _caller_of(request: web.Request):
    try:
        from .api import caller_of
    except ImportError:  # pragma: no cover - the daemon always ships api.py
        return request["caller"]
    return caller_of(request)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False, default=str))


async def _body(request: web.Request) -> dict:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadStagingRequest(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadStagingRequest("the request body nests arrays or objects too deeply") from None
    if not isinstance(body, dict):
        raise BadStagingRequest("the request body must be a JSON object")
    if b"\\u" in raw:  # only an escape can smuggle in a lone surrogate
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadStagingRequest("the request body holds a lone surrogate escape (such as"
                                    " \\ud800), which is not valid Unicode text") from None
    return body


def _number(raw: str, what: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID:
        raise BadStagingRequest(f"{what} must be a whole number up to {MAX_ID}, got {raw!r}")
    return int(raw)


def _batch_id(request: web.Request) -> int:
    return _number(request.match_info["id"], "staging batch id")


def _flag(body: dict, key: str, default: bool) -> bool:
    """A JSON true/false only: the string "false" must never count as yes."""
    v = body.get(key, default)
    if not isinstance(v, bool):
        raise BadStagingRequest(f"{key} must be JSON true or false, got {v!r}")
    return v


def _int_list(body: dict, key: str) -> list[int]:
    v = body.get(key, [])
    if not isinstance(v, list) or not all(
            type(x) is int and 0 <= x <= MAX_ID for x in v):
        raise BadStagingRequest(f"{key} must be a list of row numbers")
    return v


class _Handlers:
    def __init__(self, get_context):
        self.ctx = get_context

    def wrap(self, fn, role):
        async def handler(request: web.Request) -> web.StreamResponse:
            caller = _caller_of(request)
            caller.require(role, f"{request.method} {request.path}")
            try:
                return await fn(request, self.ctx(request), caller)
            except StagingError as e:
                log.info("staging refused %s %s: %s", request.method, request.path, e.code)
                return _json(e.to_json(), status=e.http_status)

        handler.__name__ = fn.__name__
        return handler

    async def list_batches(self, request, ctx, caller):
        state = request.query.get("state") or None
        return _json(await ctx.db.run(lambda: desk_for(ctx).list(state)))

    async def show_batch(self, request, ctx, caller):
        bid = _batch_id(request)
        status = request.query.get("status") or None
        limit = _number(request.query.get("limit", "1000"), "limit")
        offset = _number(request.query.get("offset", "0"), "offset")
        return _json(await ctx.db.run(
            lambda: desk_for(ctx).show(bid, status=status, limit=limit, offset=offset)))

    async def upload_xlsx(self, request, ctx, caller):
        body = await _body(request)
        table = body.get("table")
        if not isinstance(table, str) or not table:
            raise BadStagingRequest("give the target table as \"table\"")
        name = os.path.basename(str(body.get("file_name") or "")) or "upload.xlsx"
        try:
            data = base64.b64decode(body.get("content_b64") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadStagingRequest("content_b64 is not valid base64") from None
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadStagingRequest(f"the workbook is over {MAX_UPLOAD_BYTES} bytes")
        sheet = body.get("sheet") or None

        def run():
            with tempfile.TemporaryDirectory(prefix="riversync-upload-") as tmp:
                path = os.path.join(tmp, "upload.xlsx")
                with open(path, "wb") as f:
                    f.write(data)
                return desk_for(ctx).import_xlsx(path, table, user=caller.name, sheet=sheet,
                                                 source=name)

        return _json(await ctx.db.write("staging", run), status=201)

    async def apply_batch(self, request, ctx, caller):
        from .api import refuse_if_clock_ahead  # (api imports this module)

        refuse_if_clock_ahead(ctx)  # an apply is a local write like any other
        bid = _batch_id(request)
        body = await _body(request)
        confirm = _flag(body, "confirm_reimport", False)
        exclude = _int_list(body, "exclude")
        res = await ctx.db.write("local", lambda: desk_for(ctx).apply(
            bid, user=caller.name, confirm=confirm, exclude=exclude))
        store = getattr(ctx, "store", None)
        if store is not None:  # the head file follows every local commit (node.head)
            await ctx.db.run(head.record, store)
        agent = getattr(ctx, "agent", None)
        if agent is not None:
            agent.notify_write()
        return _json(res)

    async def reject_batch(self, request, ctx, caller):
        bid = _batch_id(request)
        body = await _body(request)
        reason = str(body.get("reason") or "")
        return _json(await ctx.db.write(
            "staging", lambda: desk_for(ctx).reject(bid, user=caller.name, reason=reason)))

    async def exclude_rows(self, request, ctx, caller):
        bid = _batch_id(request)
        body = await _body(request)
        rows = _int_list(body, "rows")
        excluded = _flag(body, "excluded", True)
        return _json(await ctx.db.write(
            "staging", lambda: desk_for(ctx).exclude(bid, rows, excluded)))

    async def edit_row(self, request, ctx, caller):
        bid = _batch_id(request)
        row = _number(request.match_info["row"], "row")
        body = await _body(request)
        values = body.get("values")
        if not isinstance(values, dict) or not values:
            raise BadStagingRequest("give the corrected columns as \"values\": {column: value}")
        return _json(await ctx.db.write(
            "staging", lambda: desk_for(ctx).edit(bid, row, values, user=caller.name)))

    async def ingest_email(self, request, ctx, caller):
        folder = str(ctx.cfg.staging_email_dir)
        os.makedirs(folder, exist_ok=True)
        return _json(await ctx.db.write("staging", lambda: desk_for(ctx).ingest(folder)))

    async def export_xlsx(self, request, ctx, caller):
        body = await _body(request)
        scope = str(body.get("scope") or "")

        def run():
            with tempfile.TemporaryDirectory(prefix="riversync-export-") as tmp:
                out = os.path.join(tmp, "export.xlsx")
                res = desk_for(ctx).export(out, scope, node=ctx.cfg.node_id)
                with open(out, "rb") as f:
                    res["content_b64"] = base64.b64encode(f.read()).decode()
                res["file"] = None
                return res

        return _json(await ctx.db.run(run))


async def email_watcher(ctx, interval_s: float = EMAIL_POLL_S) -> None:
    """Run email ingestion on the node's drop folder every ``interval_s`` seconds.

    The daemon may start it as a task: ``asyncio.create_task(email_watcher(ctx))``.
    A failing run is logged and retried on the next tick; files stay where they are.
    """
    folder = str(ctx.cfg.staging_email_dir)
    while True:
        try:
            if os.path.isdir(folder) and any(n.lower().endswith(".eml") for n in os.listdir(folder)):
                await ctx.db.write("staging", lambda: desk_for(ctx).ingest(folder))
        except Exception:  # noqa: BLE001 - the watcher must outlive one bad run
            log.exception("email ingestion run failed; files stay in %s", folder)
        await asyncio.sleep(interval_s)
