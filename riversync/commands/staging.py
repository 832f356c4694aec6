"""``riversync staging list|show|apply|reject``: review staged Excel and email batches.

Every staging command works two ways.  When the node daemon runs (it holds the
database lock) the command goes through the node's API with the operator's token;
otherwise it opens the node's database itself, under the same lock, so the two never
write at once.  Either way the work is done by ``riversync.node.staging.StagingDesk``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError

from ._nodecfg import call, client_for, exit_for_status, load  # noqa: F401 - re-exported


def add_node_args(p, *, user: bool = True) -> None:
    p.add_argument("-c", "--config", required=True, metavar="NODE.toml",
                   help="the node's config file (node-<office>.toml)")
    p.add_argument("--schema", default=None, metavar="PATH",
                   help="the cluster schema (default: schema.toml next to the roster)")
    p.add_argument("--token", default=None,
                   help="API token when the node runs (default: $RIVERSYNC_TOKEN or tokens.txt)")
    if user:
        p.add_argument("--user", default=None,
                       help="act as this roster user when the node is not running "
                            "(default: an operator of this office)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def staging_error(e) -> CommandError:
    code = getattr(e, "code", type(e).__name__)
    msg = getattr(e, "message", str(e))
    status = getattr(e, "http_status", 400)
    return CommandError(f"{code}: {msg}", getattr(e, "hint", ""),
                        exit_code=exit_for_status(status))


def required_role(method: str, path: str) -> str:
    """The role the node API demands for ``method path``: the offline path demands the
    same, so stopping the daemon never lifts a restriction."""
    import re

    from riversync.node.api_staging import ROUTES

    bare = path.split("?", 1)[0]
    for m, pattern, _name, role in ROUTES:
        rx = "^" + re.sub(r"\\{[a-z]+\\}", "[^/]+", re.escape(pattern)) + "$"
        if m == method and re.match(rx, bare):
            return role
    return "admin"  # a path no route names: only an admin may act offline


class Node:
    """A node reached directly (``desk``) or through its API (``client``)."""

    def __init__(self, cfg, desk=None, client=None, user=None):
        self.cfg, self.desk, self.client, self.user = cfg, desk, client, user

    def run(self, direct, path: str, body: dict | None = None, method: str = "POST"):
        """``direct(desk)`` when the database is ours, else the API call."""
        if self.desk is not None:
            from riversync.engine.errors import EngineError
            from riversync.node.auth import RANK, who_can
            from riversync.node.staging import StagingError

            role = required_role(method, path)
            u = self.cfg.roster.users.get(self.user)
            if u is None or RANK.get(u.role, 0) < RANK[role]:
                have = f"has the {u.role} role" if u is not None else "is not in the roster"
                raise CommandError(
                    f"FORBIDDEN: user {self.user!r} {have}; this needs the {role} role",
                    who_can(role) + " (--user NAME)", EXIT_CRITICAL)

            try:
                return direct(self.desk)
            except (StagingError, EngineError) as e:
                raise staging_error(e) from None
        if method == "GET":
            return call(self.client.get, path)
        return call(self.client.post, path, body or {})


def default_user(cfg, explicit: str | None) -> str:
    roster = cfg.roster
    if explicit:
        u = roster.users.get(explicit)
        if u is None:
            raise CommandError(f"user {explicit!r} is not in the cluster roster",
                               "pass --user with a name from roster.toml", EXIT_CRITICAL)
        return explicit
    for role in ("operator", "admin"):
        for u in roster.users.values():
            if u.home_office == cfg.office and u.role == role:
                return u.name
    raise CommandError(f"no operator of office {cfg.office} in the roster",
                       "pass --user NAME", EXIT_CRITICAL)


@contextlib.contextmanager
def open_node(args, *, admin: bool = False):
    """Yield a Node for the config in ``args``; the database lock is held while open."""
    cfg = load(args.config)
    from riversync.engine.errors import EngineError
    from riversync.engine.schema import load_schema
    from riversync.node import daemon
    from riversync.node.staging import StagingDesk, load_import_options

    # Checked before the lock, which would leave a lock file beside a mistyped path.
    if not cfg.db_path.exists():
        raise CommandError(
            f"no database at {cfg.db_path} (db_path in {args.config})",
            "check db_path; only `riversync node serve` creates a node's database",
            EXIT_UNAVAILABLE)
    if daemon.is_locked(cfg.db_path):
        yield Node(cfg, client=client_for(cfg, getattr(args, "token", None), timeout_s=600,
                                          admin=admin))
        return
    schema_path = daemon.schema_path_for(cfg, args.schema)
    try:
        schema = load_schema(schema_path)
    except EngineError as e:
        raise CommandError(e.message, e.hint, EXIT_CRITICAL) from None
    user = default_user(cfg, getattr(args, "user", None))
    from riversync.node import head

    try:
        with daemon.db_lock(cfg.db_path):
            store = daemon.open_store(cfg, schema)
            try:
                # As at the daemon's start: a copy put back by hand must not take writes
                # under numbers the hub already holds [N-EPOCH-3].
                renewed = daemon.renew_if_behind(store)
                if renewed is not None:
                    print(f"note: {cfg.db_path} is behind its head file (put back from a "
                          f"copy): started node epoch {renewed[1]} (was {renewed[0]}) before "
                          "any write", file=sys.stderr)
                yield Node(cfg, desk=StagingDesk(store, schema,
                                                 load_import_options(str(schema_path))),
                           user=user)
                head.record(store)  # what this command wrote is the head now
            finally:
                store.close()
    except daemon.NodeLocked as e:
        raise CommandError(str(e), "try again in a moment", EXIT_UNAVAILABLE) from None
    except EngineError as e:  # the database is not this node's (WRONG_NODE, WRONG_CLUSTER...)
        raise CommandError(str(e), e.hint, EXIT_CRITICAL) from None


def emit(args, data: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(lines))


# ---- staging list|show|apply|reject -----------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser("staging", help="review, apply or reject staged imports")
    sub = p.add_subparsers(dest="staging_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="staging batches, newest first")
    add_node_args(ls, user=False)
    ls.add_argument("--state", choices=["pending", "applied", "rejected", "failed"])
    ls.set_defaults(handler=cmd_list)
    sh = sub.add_parser("show", help="one batch with its rows and reasons")
    add_node_args(sh, user=False)
    sh.add_argument("id", type=int, metavar="BATCH")
    sh.add_argument("--invalid", action="store_true", help="only invalid rows")
    sh.add_argument("--limit", type=int, default=200, help="rows to show (default 200)")
    sh.set_defaults(handler=cmd_show)
    ap = sub.add_parser("apply", help="turn a batch's valid rows into changes, all or nothing")
    add_node_args(ap)
    ap.add_argument("id", type=int, metavar="BATCH")
    ap.add_argument("--exclude", default="", metavar="ROWS",
                    help="row numbers to leave out, e.g. 4,5")
    ap.add_argument("--confirm-reimport", action="store_true",
                    help="apply a batch read from a riversync export")
    ap.set_defaults(handler=cmd_apply)
    rj = sub.add_parser("reject", help="close a batch without applying; it stays on record")
    add_node_args(rj)
    rj.add_argument("id", type=int, metavar="BATCH")
    rj.add_argument("--reason", default="", help="why, for the record")
    rj.set_defaults(handler=cmd_reject)


def _batch_line(b: dict) -> str:
    c = b.get("counts") or {}
    flags = f"  flags: {', '.join(b['flags'])}" if b.get("flags") else ""
    return (f"  {b['id']:>4}  {b['state']:<8} {b['kind']:<5} {b.get('table') or '-':<14} "
            f"{c.get('valid', 0)} valid / {c.get('invalid', 0)} invalid  {b['source']}{flags}")


def cmd_list(args) -> int:
    with open_node(args) as node:
        q = f"?state={args.state}" if args.state else ""
        res = node.run(lambda d: d.list(args.state), f"/v1/staging{q}", method="GET")
    lines = [f"{len(res['batches'])} staging batch(es) on node {node.cfg.node_id}"]
    lines += [_batch_line(b) for b in res["batches"]]
    emit(args, res, lines)
    return 0


def cmd_show(args) -> int:
    status = "invalid" if args.invalid else None
    with open_node(args) as node:
        q = f"?limit={args.limit}" + (f"&status={status}" if status else "")
        res = node.run(lambda d: d.show(args.id, status=status, limit=args.limit),
                       f"/v1/staging/{args.id}{q}", method="GET")
    b = res["batch"]
    lines = [f"batch {b['id']}: {b['kind']} {b['source']} -> {b.get('table') or '(no table)'}",
             f"  state {b['state']}" + (f" ({b['reason']})" if b.get("reason") else ""),
             f"  sha256 {b['sha256']}"]
    lines += [f"  note: {n}" for n in b.get("notes", [])]
    if res.get("message"):
        m = res["message"]
        lines.append(f"  message {m['message_id']} from {m['from']}: {m['subject']!r}")
        lines.append(f"  sent {m['sent_at'] or '-'}  received {m['received_at'] or '-'}  "
                     f"flags {', '.join(m['flags']) or '-'}")
    for r in res["rows"]:
        mark = "x" if r["excluded"] else ("ok" if r["status"] == "valid" else "!!")
        values, kept = r["values"], ""
        if r.get("op") == "update":  # a blank cell leaves the live value alone: not a null
            blank = [k for k, v in values.items() if v is None]
            values = {k: v for k, v in values.items() if v is not None}
            kept = f"  (left as they are: {', '.join(blank)})" if blank else ""
        lines.append(f"  row {r['row']:>5} {mark:<2} {r.get('op') or '':<6} {r['key']}: "
                     + json.dumps(values, ensure_ascii=False, default=str) + kept)
        lines += [f"            {e['column']}: {e['message']}" for e in r["errors"]]
        lines += [f"            note: {n}" for n in r["notes"]]
    emit(args, res, lines)
    return 0


def _rows_arg(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise CommandError(f"--exclude {text!r} is not a list of row numbers",
                           "--exclude 4,5", EXIT_CRITICAL) from None


def cmd_apply(args) -> int:
    exclude = _rows_arg(args.exclude)
    with open_node(args) as node:
        res = node.run(
            lambda d: d.apply(args.id, user=node.user, confirm=args.confirm_reimport,
                              exclude=exclude),
            f"/v1/staging/{args.id}/apply",
            {"confirm_reimport": args.confirm_reimport, "exclude": exclude})
    from riversync.node.staging import audit_source

    b = res["batch"]
    emit(args, res, [f"applied batch {b['id']}: {b['events']} change(s) written as one "
                     f"transaction (audit source {audit_source(b['id'])})"])
    return 0


def cmd_reject(args) -> int:
    with open_node(args) as node:
        res = node.run(lambda d: d.reject(args.id, user=node.user, reason=args.reason),
                       f"/v1/staging/{args.id}/reject", {"reason": args.reason})
    b = res["batch"]
    emit(args, res, [f"rejected batch {b['id']}; it stays on record with its rows"])
    return 0


def progress_printer():
    """Progress on a terminal (stderr), nothing when output is redirected."""
    if not sys.stderr.isatty():
        return None

    def show(n: int) -> None:
        print(f"\r  {n} rows read...", end="", file=sys.stderr, flush=True)

    return show


def b64_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror}", "check the path",
                           EXIT_CRITICAL) from None


def check_file(path: str) -> None:
    if os.path.isdir(path):
        raise CommandError(f"{path} is a folder, not a file", "name the workbook inside it",
                           EXIT_CRITICAL)
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}", "check the path", EXIT_UNAVAILABLE)
