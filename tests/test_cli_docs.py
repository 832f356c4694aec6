"""docs/reference/cli.md documents every command the parser knows, with its options,
and the generated block is up to date with the code."""

from __future__ import annotations

import argparse

from riversync.cli import build_parser
from riversync.commands import _clidoc


def test_the_generated_command_reference_is_up_to_date():
    assert _clidoc.main(["--check"]) == 0, "run: python -m riversync.commands._clidoc"


def test_every_subcommand_and_option_is_documented():
    text = _clidoc.DOC.read_text(encoding="utf-8")
    leaves = list(_clidoc.leaf_commands(build_parser()))
    names = {full for full, _, _ in leaves}
    for expected in ("riversync cluster init", "riversync hub serve", "riversync import xlsx",
                     "riversync staging apply", "riversync export xlsx",
                     "riversync ingest email", "riversync conformance",
                     "riversync bench replay"):
        assert expected in names
    for full, sub, _ in leaves:
        assert f"### `{full}`" in text, full
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            for opt in a.option_strings:
                assert f"`{opt}`" in text, (full, opt)
