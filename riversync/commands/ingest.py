"""``riversync ingest email [DIR]``: stage every .eml in the drop folder once."""

from __future__ import annotations

import os

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError

from .staging import add_node_args, emit, open_node


def register(subparsers) -> None:
    p = subparsers.add_parser("ingest", help="stage inbound messages for review")
    sub = p.add_subparsers(dest="ingest_command", metavar="SOURCE", required=True)
    e = sub.add_parser("email", help="stage the .eml files of a drop folder, once")
    e.add_argument("dir", nargs="?", default=None, metavar="DIR",
                   help="the drop folder (default: staging.email_dir of the node config)")
    add_node_args(e, user=False)
    e.set_defaults(handler=cmd_ingest_email)


def cmd_ingest_email(args) -> int:
    with open_node(args) as node:
        folder = os.path.abspath(args.dir or str(node.cfg.staging_email_dir))
        if not os.path.isdir(folder):
            raise CommandError(f"no drop folder {folder}", "create it or pass DIR",
                               EXIT_UNAVAILABLE)
        if node.desk is None and args.dir and os.path.abspath(args.dir) != os.path.abspath(
                str(node.cfg.staging_email_dir)):
            raise CommandError("the node is running and watches its own drop folder",
                               f"drop the files in {node.cfg.staging_email_dir}",
                               EXIT_CRITICAL)
        res = node.run(lambda d: d.ingest(folder), "/v1/staging/email/ingest", {})
    lines = [f"{folder}: {len(res['staged'])} staged, {len(res['duplicates'])} already "
             f"staged, {len(res['failed'])} failed"]
    for s in res["staged"]:
        flags = f" flags {', '.join(s['flags'])}" if s.get("flags") else ""
        lines.append(f"  {s['file']} -> batch {s['batch']} ({s['rows']} rows){flags}")
        if s.get("rows_left_out"):
            lines.append(f"    cut at {s['rows']} rows: {s['rows_left_out']} more rows in the "
                         "body were not staged; send them as an .xlsx attachment")
        if s.get("message_id_batches"):
            others = s["message_id_batches"]
            lines.append("    reused Message-ID: " + (
                f"a different message under it is batch {others[0]}; review both"
                if len(others) == 1 else
                f"different messages under it are batches {', '.join(map(str, others))}; "
                "review them all"))
        for a in s.get("attachments", []):
            lines.append(f"    attachment {a['file']}: " + (
                f"Excel batch {a['batch']}" if a.get("staged") else f"not staged: {a['reason']}"))
    for d in res["duplicates"]:
        lines.append(f"  {d['file']}: already staged as batch {d['batch']} (moved to processed/)")
    for f in res["failed"]:
        where = "" if f["code"] == "INTERNAL" else " (moved to failed/)"
        lines.append(f"  {f['file']}: {f['code']}: {f['reason']}{where}")
    emit(args, res, lines)
    return 1 if res["failed"] else 0
