"""mkdocs hook: pages include files from outside docs/ at build time.

The normative spec lives in spec/PROTOCOL.md, next to its vectors; copying it into docs/
would make two texts that drift.  A line ``<!-- include: PATH -->`` (PATH relative to the
repository root, optionally followed by ``shift=N`` to demote headings by N levels) is
replaced by that file's text when the site is built.  Plain mkdocs, no plugin.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r"^<!-- include: (\S+)(?: shift=(\d))? -->$", re.M)


def _shift(text: str, levels: int) -> str:
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def include(markdown: str) -> str:
    """Replace every include line of ``markdown`` by the named file's text."""

    def sub(m: re.Match) -> str:
        path = (ROOT / m.group(1)).resolve()
        if ROOT not in path.parents or not path.is_file():
            raise FileNotFoundError(f"docs include names a missing file: {m.group(1)}")
        return _shift(path.read_text(encoding="utf-8"), int(m.group(2) or 0))

    return INCLUDE.sub(sub, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - mkdocs hook signature
    return include(markdown)
