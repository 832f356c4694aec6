"""``riversync import xlsx FILE --table T``: stage one sheet of a workbook for review."""

from __future__ import annotations

import os
import sys

from .staging import add_node_args, b64_file, check_file, emit, open_node, progress_printer


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help="stage a file for review (nothing is applied)")
    sub = p.add_subparsers(dest="import_command", metavar="FORMAT", required=True)
    x = sub.add_parser("xlsx", help="stage one sheet of an Excel workbook (.xlsx, .xlsm)")
    x.add_argument("file", metavar="FILE")
    x.add_argument("--table", required=True, help="the table the rows are for")
    x.add_argument("--sheet", default=None, help="sheet name (default: the sheet named like "
                                                  "the table, else the first)")
    add_node_args(x)
    x.set_defaults(handler=cmd_import_xlsx)


def summary_lines(res: dict) -> list[str]:
    s, b = res["summary"], res["batch"]
    lines = [f"staged batch {b['id']} from {s['file']} (sheet {s['sheet']}, table {s['table']})",
             f"  rows read {s['rows_read']}, staged {s['staged']}: {s['valid']} valid, "
             f"{s['invalid']} invalid; blank rows skipped {s['blank_skipped']}"]
    for reason, n in s.get("invalid_by_reason", {}).items():
        lines.append(f"  invalid: {reason} ({n})")
    lines += [f"  note: {n}" for n in b.get("notes", [])]
    if "export_reimport" in b.get("flags", []):
        lines.append("  this file is a riversync export: apply needs --confirm-reimport")
    lines.append(f"Next: riversync staging show {b['id']} -c CONFIG, then "
                 f"riversync staging apply {b['id']} -c CONFIG")
    return lines


def cmd_import_xlsx(args) -> int:
    check_file(args.file)
    with open_node(args) as node:
        res = node.run(
            lambda d: d.import_xlsx(args.file, args.table, user=node.user, sheet=args.sheet,
                                    progress=progress_printer()),
            "/v1/staging/xlsx",
            {"table": args.table, "sheet": args.sheet,
             "file_name": os.path.basename(args.file), "content_b64": b64_file(args.file)}
            if node.desk is None else None)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    emit(args, res, summary_lines(res))
    return 0
