"""spec/PROTOCOL.md stays honest: every MUST has a stable id, every id (protocol, hub,
merge and node rules) is cited by a test, and the docs site carries the spec itself, not
a copy."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from riversync.protocol import errors, limits

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "spec" / "PROTOCOL.md").read_text(encoding="utf-8")
RULE_ID = re.compile(r"\[([PHNM]-[A-Z]+-\d+)\]")


def _blocks(text: str) -> list[str]:
    """Paragraphs and bullets of prose: no tables, code fences or generated blocks."""
    text = re.sub(r"<!-- generated:([\w-]+) -->.*?<!-- /generated:\1 -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks, cur = [], []
    for line in text.splitlines():
        new_block = not line.strip() or line.startswith(("- ", "#", "|")) or re.match(r"\d+\. ", line)
        if new_block and cur:
            blocks.append(" ".join(cur))
            cur = []
        if line.strip() and not line.startswith(("#", "|")):
            cur.append(line.strip())
    if cur:
        blocks.append(" ".join(cur))
    return blocks


def test_every_must_carries_a_rule_id():
    keywords = re.compile(r"\bMUST\b")
    missing = [b for b in _blocks(SPEC)
               if keywords.search(b) and not RULE_ID.search(b) and '"MUST"' not in b]
    assert not missing, "MUST without a rule id:\n" + "\n".join(missing)


def test_rule_ids_are_defined_once():
    starts = re.findall(r"^- \[([PHNM]-[A-Z]+-\d+)\]", SPEC, re.M)
    assert len(starts) == len(set(starts)), sorted({i for i in starts if starts.count(i) > 1})
    assert len(set(RULE_ID.findall(SPEC))) >= 40


def _cited() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        found |= set(re.findall(r"[PHNM]-[A-Z]+-\d+", path.read_text(encoding="utf-8")))
    return found


def test_every_rule_is_cited_by_a_test():
    """Each P-, H-, M- and N- id of the spec appears in a test under tests/ (in the
    docstring of a test that proves it), so a new rule cannot go unproven."""
    ids = set(RULE_ID.findall(SPEC))
    assert {i[0] for i in ids} == set("PHMN")
    uncited = sorted(ids - _cited())
    assert not uncited, f"rules no test cites: {uncited}"


def test_tests_cite_only_rules_that_exist():
    ids = set(RULE_ID.findall(SPEC))
    stray = sorted(_cited() - ids)
    assert not stray, f"tests cite rule ids the spec does not define: {stray}"


def test_spec_lists_every_error_code_and_limit():
    for cls in errors.ALL_ERRORS:
        assert f"| `{cls.code}` | {cls.http_status} | `{cls.action}` |" in SPEC
        assert f"| `{cls.code}` | " in SPEC.split("When each is sent:")[1]
    for name in dir(limits):
        if name.isupper():
            assert f"`{name}`" in SPEC


def test_docs_site_includes_the_spec_at_build_time():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (ROOT / "docs" / "reference" / "protocol.md").read_text(encoding="utf-8")
    rendered = hooks.on_page_markdown(page, None, None, None)
    assert SPEC.strip() in rendered
    assert "## Conformance vector format" in rendered  # vectors README, demoted one level
    assert "<!-- include:" not in rendered
