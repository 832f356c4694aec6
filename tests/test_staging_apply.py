"""Apply and reject against a real engine Store: all or nothing, traceable, never twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import openpyxl
import pytest

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import staging as S
from riversync.node.xlsx_import import import_xlsx
from riversync.protocol.keys import NodeEntry, Roster, User

DATA = os.path.join(os.path.dirname(__file__), "data")
SCHEMA_PATH = os.path.join(DATA, "staging_schema.toml")
T0 = 1_710_496_800_000  # 2024-03-15 10:00:00 UTC


def roster() -> Roster:
    nodes = {n: NodeEntry(n, n, bytes([i]) * 32) for i, n in enumerate(("north", "south"), 1)}
    users = {"alice": User("alice", "north", "operator"), "bob": User("bob", "south", "operator")}
    return Roster("test-cluster", nodes, users)


class Node:
    def __init__(self, tmp_path, node_id, epoch):
        self.schema = load_schema(SCHEMA_PATH)
        self.store = Store.open(str(tmp_path / f"{node_id}.db"), self.schema, roster(), node_id,
                                epoch=epoch)
        self.staging = S.Staging(S.store_conn(self.store))
        self.live = S.StoreLive(self.store, self.schema)
        self.opts = S.load_import_options(SCHEMA_PATH)

    def rules(self, table):
        return S.rules_from_schema(self.schema, table, self.opts.get(table))

    def import_file(self, path, table, user="alice"):
        return import_xlsx(self.staging, str(path), self.rules(table), self.live, user=user)

    def apply(self, batch_id, table, user="alice", **kw):
        rules = self.rules(table)
        return self.staging.apply(batch_id, self.store, rules, self.live, user=user, now=T0 + 5000,
                                  to_change=lambda r: S.to_local_change(rules, r), **kw)

    def count(self, table):
        return self.store.count_rows(table)

    def staging_audit(self, batch_id):
        return [a for a in self.store.audit(limit=100000)
                if a.get("source", "").endswith(f"staging:{batch_id}")]


@pytest.fixture
def north(tmp_path):
    n = Node(tmp_path, "north", 11)
    yield n
    n.store.close()


@pytest.fixture
def south(tmp_path):
    n = Node(tmp_path, "south", 22)
    yield n
    n.store.close()


def test_c28_apply_is_all_or_nothing_and_a_rerun_never_duplicates(north, south):
    north.store.commit_local([LocalChange("create", "customers", "C-0999", {
        "name": "Live North", "vat_number": "XX000000999"})], user="alice", now_ms=T0)
    c0998 = south.store.commit_local([LocalChange("create", "customers", "C-0998", {
        "name": "Live South"})], user="bob", now_ms=T0)
    north.store.apply_remote(c0998, now_ms=T0 + 1)
    # 1. validate: row 4 (vat used by C-0999) and row 5 (duplicate key) flagged before apply
    res = north.import_file(os.path.join(DATA, "C28-apply-atomicity.xlsx"), "customers")
    bid = res.batch_id
    rows = {r["row"]: r for r in north.staging.rows(bid)}
    assert rows[4]["status"] == "invalid" and "already used by C-0999" in str(rows[4]["errors"])
    assert rows[5]["status"] == "invalid" and "duplicate key C-3002" in str(rows[5]["errors"])
    assert north.count("customers") == 2
    # 2. the user excludes rows 4 and 5
    north.staging.exclude(bid, [4, 5])
    # 3. south sets C-0998's vat to the value C-3005 wants; north pulls it
    ev = south.store.commit_local([LocalChange("update", "customers", "C-0998", {
        "vat_number": "XX000000005"})], user="bob", now_ms=T0 + 2000)
    north.store.apply_remote(ev, now_ms=T0 + 2001)
    before = north.store.digests()
    audit_before = north.store.audit_count()
    outbox_before = north.store.outbox_size()
    # 4. apply fails as a whole
    with pytest.raises(S.ApplyRefused):
        north.apply(bid, "customers")
    assert north.count("customers") == 2
    assert north.store.digests() == before
    assert north.store.audit_count() == audit_before
    assert north.store.outbox_size() == outbox_before
    b = north.staging.batch(bid)
    assert b.state == "failed" and "row 6" in b.reason
    r6 = {r["row"]: r for r in north.staging.rows(bid)}[6]
    assert r6["status"] == "invalid" and "already used by C-0998" in str(r6["errors"])
    # 5. fix C-3005's vat and apply again
    fixed = north.staging.edit_row(bid, 6, {"vat_number": "XX000000006"},
                                   north.rules("customers"), north.live)
    assert fixed["status"] == "valid"
    b = north.apply(bid, "customers")
    assert b.state == "applied" and b.events == 3
    assert {r["customer_id"] for r in north.store.list_rows("customers")} == {
        "C-0998", "C-0999", "C-3001", "C-3002", "C-3005"}
    assert north.store.get_row("customers", "C-3002")["name"] == "Sample Logistics"
    audit = north.staging_audit(bid)
    assert len(audit) == 3
    assert north.store.outbox_size() == outbox_before + 3
    # a re-run adds nothing
    with pytest.raises(S.BatchClosed):
        north.apply(bid, "customers")
    assert len(north.staging_audit(bid)) == 3 and north.count("customers") == 5


def test_nothing_reaches_a_table_before_apply_and_reject_keeps_the_batch(north, tmp_path):
    p = tmp_path / "c.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["customer_id", "name"])
    wb.active.append(["C-1", "One"])
    wb.save(p)
    before = north.store.digests()
    res = north.import_file(p, "customers")
    assert north.count("customers") == 0
    assert north.store.digests() == before and north.store.audit_count() == 0
    b = north.staging.reject(res.batch_id, user="alice", reason="wrong month")
    assert b.state == "rejected" and b.reason == "wrong month"
    assert len(north.staging.rows(res.batch_id)) == 1
    with pytest.raises(S.BatchClosed):
        north.apply(res.batch_id, "customers")
    assert north.count("customers") == 0 and north.store.digests() == before


def test_rows_another_office_owns_are_invalid_and_own_rows_update(north, south, tmp_path):
    ev = south.store.commit_local([LocalChange("create", "customers", "C-S", {"name": "S"})],
                                  user="bob", now_ms=T0)
    north.store.apply_remote(ev, now_ms=T0 + 1)
    north.store.commit_local([LocalChange("create", "customers", "C-N", {"name": "N"})],
                             user="alice", now_ms=T0 + 2)
    p = tmp_path / "o.xlsx"
    wb = openpyxl.Workbook()
    for r in (["customer_id", "name"], ["C-S", "mine now"], ["C-N", "renamed"], ["C-new", "x"]):
        wb.active.append(r)
    wb.save(p)
    res = north.import_file(p, "customers")
    rows = {r["key"]: r for r in north.staging.rows(res.batch_id)}
    assert rows["C-S"]["status"] == "invalid"
    assert "owned by office south" in str(rows["C-S"]["errors"])
    assert rows["C-N"]["op"] == "update" and rows["C-new"]["op"] == "create"
    north.staging.exclude(res.batch_id, [2])
    b = north.apply(res.batch_id, "customers")
    assert b.events == 2
    assert north.store.get_row("customers", "C-N")["name"] == "renamed"
    assert north.store.get_row("customers", "C-S")["name"] == "S"


def test_engine_refusal_inside_apply_changes_nothing_and_fails_the_batch(north, tmp_path):
    p = tmp_path / "c.xlsx"
    wb = openpyxl.Workbook()
    for r in (["customer_id", "name"], ["C-1", "One"], ["C-2", "Two"]):
        wb.active.append(r)
    wb.save(p)
    res = north.import_file(p, "customers")
    before = north.store.digests()

    def boom(phase):
        raise RuntimeError(f"fault at {phase}")

    north.store._fault = boom
    with pytest.raises(RuntimeError):
        north.apply(res.batch_id, "customers")
    north.store._fault = None
    assert north.store.digests() == before and north.count("customers") == 0
    b = north.staging.batch(res.batch_id)
    assert b.state == "failed" and "fault at" in b.reason
    assert north.apply(res.batch_id, "customers").events == 2


def test_an_export_needs_explicit_confirmation(north, tmp_path):
    from riversync.node.xlsx_export import export_batch

    p = tmp_path / "c.xlsx"
    wb = openpyxl.Workbook()
    for r in (["customer_id", "name"], ["C-1", "One"]):
        wb.active.append(r)
    wb.save(p)
    first = north.import_file(p, "customers")
    out = tmp_path / "export.xlsx"
    export_batch(str(out), north.staging, first.batch_id, north.rules("customers"),
                 node="north", exported_at="2024-03-15T10:00:00Z")
    again = north.import_file(out, "customers")
    b = north.staging.batch(again.batch_id)
    assert b.confirm_required and "export_reimport" in b.flags
    with pytest.raises(S.ConfirmationRequired):
        north.apply(again.batch_id, "customers")
    assert north.count("customers") == 0
    assert north.apply(again.batch_id, "customers", confirm=True).events == 1


CRASH = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_staging_apply import Node, T0
    import pathlib
    n = Node(pathlib.Path({tmp!r}), "north", 11)
    res = n.import_file({xlsx!r}, "customers") if {do_import} else None
    bid = res.batch_id if res else 1
    print(bid, flush=True)
    if {when!r} == "inside":
        n.store._fault = lambda phase: os.kill(os.getpid(), signal.SIGKILL)
    n.apply(bid, "customers")
    if {when!r} == "after":
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _crash(tmp_path, xlsx, when, do_import):
    code = CRASH.format(tests=os.path.dirname(__file__), tmp=str(tmp_path), xlsx=str(xlsx),
                        when=when, do_import=do_import)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    return int(p.stdout.split()[0])


def test_sigkill_during_apply_leaves_none_and_after_leaves_all(tmp_path):
    p = tmp_path / "many.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["customer_id", "name"])
    for i in range(300):
        wb.active.append([f"C-{i:04d}", f"Customer {i}"])
    wb.save(p)
    bid = _crash(tmp_path, p, "inside", True)
    n = Node(tmp_path, "north", 11)
    try:
        assert n.count("customers") == 0 and n.store.audit_count() == 0
        assert n.staging.batch(bid).state == "pending"
        assert len(n.staging.rows(bid)) == 300
    finally:
        n.store.close()
    _crash(tmp_path, p, "after", False)
    n = Node(tmp_path, "north", 11)
    try:
        assert n.count("customers") == 300
        b = n.staging.batch(bid)
        assert b.state == "applied" and b.events == 300
        with pytest.raises(S.BatchClosed):
            n.apply(bid, "customers")
        assert n.count("customers") == 300 and len(n.staging_audit(bid)) == 300
    finally:
        n.store.close()


def test_backlog_numbers(north, tmp_path):
    p = tmp_path / "c.xlsx"
    wb = openpyxl.Workbook()
    for r in (["customer_id", "name"], ["C-1", "One"]):
        wb.active.append(r)
    wb.save(p)
    assert S.backlog(north.store)["excel_oldest_age_s"] is None
    res = north.import_file(p, "customers")
    created = north.staging.batch(res.batch_id).created_ms
    b = S.backlog(north.store, now=created + 90_000_000)
    assert b["xlsx_pending"] == 1 and b["excel_oldest_age_s"] == 90_000.0
    assert b["email_backlog"] == 0


@pytest.mark.parametrize("name", ["C27-legacy.xls", "C27-legacy-renamed.xlsx",
                                  "C27-encrypted.xlsx", "C27-truncated.xlsx", "C27-empty.xlsx"])
def test_a_refused_file_leaves_every_table_and_staging_unchanged(north, name):
    from riversync.node.xlsx_import import XlsxRefused

    north.store.commit_local([LocalChange("create", "customers", "C-1", {"name": "x"})],
                             user="alice", now_ms=T0)
    before = north.store.digests()
    with pytest.raises(XlsxRefused):
        north.import_file(os.path.join(DATA, name), "customers")
    assert north.store.digests() == before
    assert north.staging.batches() == []


def test_an_all_invalid_file_stages_but_changes_no_table(north, tmp_path):
    p = tmp_path / "bad.xlsx"
    wb = openpyxl.Workbook()
    for r in (["customer_id", "name", "credit_limit"], ["C-1", None, 5], ["C-2", "n", "lots"]):
        wb.active.append(r)
    wb.save(p)
    before = north.store.digests()
    res = north.import_file(p, "customers")
    assert res.summary["valid"] == 0 and res.summary["invalid"] == 2
    with pytest.raises(S.NothingToApply):
        north.apply(res.batch_id, "customers")
    assert north.store.digests() == before and north.store.audit_count() == 0
