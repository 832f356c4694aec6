"""Every staging command, option and error code is in docs/reference/staging.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from riversync.cli import build_parser
from riversync.node import api_staging, email_ingest, staging, xlsx_export, xlsx_import

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "reference" / "staging.md").read_text()
MINE = {("import", "xlsx"), ("staging", "list"), ("staging", "show"), ("staging", "apply"),
        ("staging", "reject"), ("export", "xlsx"), ("ingest", "email")}


def _leaves(parser, words=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaves(sub, (*words, name))
    if len(words) == 2:
        yield words, parser


def test_every_staging_command_and_option_is_documented():
    found = set()
    for words, parser in _leaves(build_parser()):
        if words not in MINE:
            continue
        found.add(words)
        section = DOC.split(f"### `riversync {' '.join(words)}`", 1)
        assert len(section) == 2, words
        body = section[1].split("### ", 1)[0] + DOC.split("## Commands", 1)[1][:900]
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in body, (words, opt)
    assert found == MINE


def test_every_staging_error_code_is_documented():
    codes = set()
    for mod in (staging, xlsx_import, xlsx_export, email_ingest, api_staging):
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, staging.StagingError):
                codes.add(obj.code)
    assert len(codes) > 15
    for code in codes:
        assert f"`{code}`" in DOC, code


def test_every_api_route_is_documented():
    for method, path, _, role in api_staging.ROUTES:
        assert f"| `{method} {path}` | {role} |" in DOC, path


def test_the_documented_audit_source_is_the_one_apply_writes(tmp_path):
    """Every page names the audit source of an applied batch as the engine writes it:
    apply passes ``staging:<id>`` and the engine prefixes local sources with ``local:``."""
    import re

    import openpyxl

    from riversync.engine.schema import load_schema
    from riversync.engine.store import Store
    from riversync.protocol.keys import NodeEntry, Roster, User

    template = "local:staging:<batch id>"
    assert f"`{template}`" in DOC
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        assert not re.search(r"(?<![\w:])staging:<batch id>", text), page
        assert "local:staging:batch-" not in text, page
    data = ROOT / "tests" / "data" / "staging_schema.toml"
    nodes = {"north": NodeEntry("north", "north", bytes([1]) * 32)}
    roster = Roster("c", nodes, {"alice": User("alice", "north", "operator")})
    schema = load_schema(data)
    store = Store.open(str(tmp_path / "north.db"), schema, roster, "north", epoch=1)
    try:
        desk = staging.StagingDesk(store, schema, staging.load_import_options(str(data)))
        wb = openpyxl.Workbook()
        wb.active.append(["staff_id", "full_name", "region"])
        wb.active.append(["S1", "Ada Example", "North"])
        wb.save(tmp_path / "s.xlsx")
        bid = desk.import_xlsx(str(tmp_path / "s.xlsx"), "staff", user="alice")["batch"]["id"]
        desk.apply(bid, user="alice")
        assert [a["source"] for a in store.audit()] == [template.replace("<batch id>", str(bid))]
    finally:
        store.close()
