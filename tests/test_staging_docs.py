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
