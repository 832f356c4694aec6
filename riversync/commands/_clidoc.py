"""The command reference in docs/reference/cli.md, generated from the argparse parser.

Hand-typed option lists drift from the code; this walks every subcommand the parser
knows and writes its usage line and options between ``<!-- generated:commands -->``
markers.  ``python -m riversync.commands._clidoc`` rewrites the block; ``--check``
exits 1 when it is out of date (a test runs the check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"
BEGIN, END = "<!-- generated:commands -->", "<!-- /generated:commands -->"
FALLBACK = {  # words for arguments whose parser gives no help text
    "config": "the config file",
    "json": "print the result as JSON",
    "token": "API token",
}


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:  # argparse offers no public walk of its tree
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "riversync"):
    """(name, parser, help) for every runnable command, in the order --help lists them."""
    helps = {}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
    for name, sub in _subparsers(parser).items():
        full = f"{prefix} {name}"
        if _subparsers(sub):
            yield from leaf_commands(sub, full)
        else:
            yield full, sub, helps.get(name) or ""


def _option(a: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.metavar or a.dest}`"
    words = (a.help or FALLBACK.get(a.dest, "")).replace("|", "\\|")
    if a.choices and not isinstance(a, argparse._SubParsersAction):
        words += f" (one of: {', '.join(map(str, a.choices))})"
    return f"| {names} | {words} |"


def render(parser: argparse.ArgumentParser) -> str:
    out = [BEGIN, "", "Generated from the command's parser (`python -m "
           "riversync.commands._clidoc`); every command and option is here.", ""]
    for full, sub, helptext in leaf_commands(parser):
        sub.prog = full
        usage = " ".join(sub.format_usage().split())
        usage = usage.removeprefix("usage: ")
        out += [f"### `{full}`", "", helptext[:1].upper() + helptext[1:] + ("." if helptext
                and not helptext.endswith(".") else ""), "", "```text", usage, "```", ""]
        rows = [_option(a) for a in sub._actions
                if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| argument | meaning |", "|---|---|", *rows, ""]
    out.append(END)
    return "\n".join(out)


def updated(text: str, block: str) -> str:
    if BEGIN not in text:
        return text.rstrip("\n") + "\n\n## Every command\n\n" + block + "\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main(argv: list[str]) -> int:
    from riversync.cli import build_parser

    text = DOC.read_text(encoding="utf-8")
    new = updated(text, render(build_parser()))
    if "--check" in argv:
        if new != text:
            print(f"out of date: {DOC} (run python -m riversync.commands._clidoc)")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
