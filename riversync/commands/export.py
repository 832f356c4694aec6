"""``riversync export xlsx OUT --scope league=ID|session=ID|office=ID``: a snapshot workbook."""

from __future__ import annotations

import base64
import os
import tempfile

from riversync.cli import EXIT_CRITICAL, CommandError

from .staging import add_node_args, emit, open_node


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a read-only snapshot of live rows")
    sub = p.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    x = sub.add_parser("xlsx", help="a workbook: a sheet per table and a metadata sheet")
    x.add_argument("out", metavar="OUT", help="the .xlsx file to write")
    x.add_argument("--scope", required=True,
                   help="league=ID, session=ID, office=ID (or batch=ID for a staging batch)")
    add_node_args(x, user=False)
    x.set_defaults(handler=cmd_export_xlsx)


def cmd_export_xlsx(args) -> int:
    out = os.path.abspath(args.out)
    if not os.path.isdir(os.path.dirname(out)):
        raise CommandError(f"folder {os.path.dirname(out)} does not exist",
                           "create it or choose another OUT", EXIT_CRITICAL)
    with open_node(args) as node:
        res = node.run(lambda d: d.export(out, args.scope, node=node.cfg.node_id),
                       "/v1/export/xlsx", {"scope": args.scope})
    if node.desk is None:
        fd, tmp = tempfile.mkstemp(prefix=".riversync-export-", dir=os.path.dirname(out))
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(res.pop("content_b64")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        res["file"] = out
    tables = ", ".join(f"{t} {n}" for t, n in res["tables"].items())
    emit(args, res, [f"wrote {out}: scope {args.scope}, rows: {tables}",
                     "  read-only snapshot; importing it again needs --confirm-reimport"])
    return 0
