"""Snapshot and staging-batch exports: typed cells, metadata, re-import caught."""

from __future__ import annotations

import datetime as dt
import os
import zipfile

import openpyxl
import pytest

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import xlsx_export as E
from riversync.node.staging import StagingDesk, load_import_options
from riversync.protocol.keys import NodeEntry, Roster, User

DATA = os.path.join(os.path.dirname(__file__), "data")
SCHEMA_PATH = os.path.join(DATA, "staging_schema.toml")
T0 = 1_710_496_800_000


@pytest.fixture
def desk(tmp_path):
    nodes = {n: NodeEntry(n, n, bytes([i]) * 32) for i, n in enumerate(("north", "south"), 1)}
    roster = Roster("c", nodes, {"alice": User("alice", "north", "operator"),
                                 "bob": User("bob", "south", "operator")})
    schema = load_schema(SCHEMA_PATH)
    store = Store.open(str(tmp_path / "n.db"), schema, roster, "north", epoch=3)
    d = StagingDesk(store, schema, load_import_options(SCHEMA_PATH))
    yield d
    store.close()


def test_c25_export_of_the_staging_batch_holds_five_rows(desk, tmp_path):
    res = desk.import_xlsx(os.path.join(DATA, "C25-phantom-rows.xlsx"), "customers", user="alice")
    out = tmp_path / "batch.xlsx"
    got = desk.export(str(out), f"batch={res['batch']['id']}", node="north")
    assert got["tables"] == {"staging": 5}
    ws = openpyxl.load_workbook(out, read_only=True)["customers"]
    rows = [r for r in ws.iter_rows(min_row=2, values_only=True)]
    assert [r[0] for r in rows] == ["C-2001", "C-2002", "C-2003", "C-2004", "C-2005"]


def test_snapshot_has_typed_cells_metadata_and_is_caught_on_reimport(desk, tmp_path):
    store = desk.store
    store.commit_local([
        LocalChange("create", "customers", "C-1", {"name": "=HYPERLINK(\"x\")",
                                                    "credit_limit": 1500, "phone": "00042"}),
        LocalChange("create", "starters", "S-1", {"full_name": "Ada",
                                                  "start_date": "2024-03-15"}),
        LocalChange("create", "offices", "00042", {"credit_limit": 123456}),
        LocalChange("create", "registrations", "R-1", {"player": "P", "paid": True}),
    ], user="alice", now_ms=T0)
    out = tmp_path / "snap.xlsx"
    res = desk.export(str(out), "office=north", node="north")
    assert res["tables"] == {"customers": 1, "starters": 1, "offices": 1, "registrations": 1}
    wb = openpyxl.load_workbook(out)
    c = wb["customers"]
    header = [x.value for x in c[1]]
    assert header[:2] == ["customer_id", "name"] and header[-1] == E.OWNER_HEADER
    row = {h: x for h, x in zip(header, c[2], strict=True)}
    assert row["name"].value == "=HYPERLINK(\"x\")" and row["name"].data_type == "s"
    assert row["credit_limit"].value == 1500 and row["phone"].value == "00042"
    assert row[E.OWNER_HEADER].value == "north"
    s = wb["starters"]
    assert s.cell(2, 3).value == dt.datetime(2024, 3, 15) and s.cell(2, 3).is_date
    assert wb["offices"].cell(2, 4).value == 1234.56
    assert wb["registrations"].cell(2, 4).value is True
    meta = {r[0]: r[1] for r in wb["_riversync"].iter_rows(min_row=2, values_only=True)}
    assert meta["node"] == "north" and meta["office"] == "north"
    assert meta["scope"] == "office=north" and int(meta["snapshot_hlc"]) == res["snapshot_hlc"]
    assert wb["_riversync"]["A1"].value == "riversync export: do not re-import"
    assert all(ws.protection.sheet for ws in wb.worksheets)
    again = desk.import_xlsx(str(out), "customers", user="alice")
    assert again["batch"]["confirm_required"] and "export_reimport" in again["batch"]["flags"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".riversync-export-")]



def test_amounts_and_integers_past_excels_15_digits_survive_export_and_reimport(desk, tmp_path):
    """A number cell keeps 15 significant digits in Excel and a float in openpyxl: larger
    values go out as text, so the re-import reads them back to the cent."""
    big_cents, big_int = 123_456_789_012_345_678, -9_007_199_254_740_993
    desk.store.commit_local([
        LocalChange("create", "offices", "00001", {"credit_limit": big_cents}),
        LocalChange("create", "offices", "00002", {"credit_limit": -5}),
        LocalChange("create", "customers", "C-1", {"name": "A", "credit_limit": big_int}),
    ], user="alice", now_ms=T0)
    out = tmp_path / "big.xlsx"
    desk.export(str(out), "office=north", node="north")
    wb = openpyxl.load_workbook(out)
    assert wb["offices"].cell(2, 4).value == "1234567890123456.78"
    assert wb["offices"].cell(3, 4).value == -0.05
    assert wb["customers"].cell(2, 4).value == str(big_int)
    res = desk.import_xlsx(str(out), "offices", user="alice")
    rows = {r["key"]: r for r in desk.show(res["batch"]["id"])["rows"]}
    assert rows["00001"]["values"]["credit_limit"] == big_cents
    assert rows["00002"]["values"]["credit_limit"] == -5
    res = desk.import_xlsx(str(out), "customers", user="alice")
    assert desk.show(res["batch"]["id"])["rows"][0]["values"]["credit_limit"] == big_int



def test_dates_excel_cannot_hold_go_out_as_text_and_come_back(desk, tmp_path):
    desk.store.commit_local([
        LocalChange("create", "starters", "S-1", {"full_name": "A", "start_date": "1899-12-31"}),
        LocalChange("create", "starters", "S-2", {"full_name": "B", "start_date": "1850-06-01"}),
        LocalChange("create", "starters", "S-3", {"full_name": "C", "start_date": "1900-03-01"}),
    ], user="alice", now_ms=T0)
    out = tmp_path / "old.xlsx"
    desk.export(str(out), "office=north", node="north")
    ws = openpyxl.load_workbook(out)["starters"]
    assert [ws.cell(r, 3).value for r in (2, 3)] == ["1899-12-31", "1850-06-01"]
    assert ws.cell(4, 3).value == dt.datetime(1900, 3, 1)
    res = desk.import_xlsx(str(out), "starters", user="alice")
    got = {r["key"]: r["values"]["start_date"] for r in desk.show(res["batch"]["id"])["rows"]}
    assert got == {"S-1": "1899-12-31", "S-2": "1850-06-01", "S-3": "1900-03-01"}

def test_a_money_number_cell_past_15_digits_is_refused_not_rounded(desk, tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "offices"
    ws.append(["office_code", "credit_limit"])
    ws.append(["00001", 12345678901234.5])  # Excel would show and keep 12345678901234.5
    ws.append(["00002", 9999999999999.99])  # the largest amount a number cell holds exactly
    path = tmp_path / "m.xlsx"
    wb.save(path)
    res = desk.import_xlsx(str(path), "offices", user="alice")
    rows = {r["key"]: r for r in desk.show(res["batch"]["id"])["rows"]}
    assert rows["00001"]["status"] == "invalid"
    assert "more digits than Excel keeps" in rows["00001"]["errors"][0]["message"]
    assert rows["00002"]["values"]["credit_limit"] == 999_999_999_999_999

def test_office_scope_keeps_only_that_offices_rows(desk, tmp_path):
    from riversync.protocol.messages import Create

    desk.store.commit_local([LocalChange("create", "customers", "C-N", {"name": "n"})],
                            user="alice", now_ms=T0)
    ev = Create(node="south", epoch=4, seq=1, hlc=(T0 + 5) << 16, schema=1, table="customers",
                pk="C-S", user="bob", role="operator", admin=False, values={"name": "s"})
    desk.store.apply_remote([ev], now_ms=T0 + 10)
    n = desk.export(str(tmp_path / "n.xlsx"), "office=north", node="north")
    s = desk.export(str(tmp_path / "s.xlsx"), "office=south", node="north")
    assert n["tables"] == {"customers": 1} and s["tables"] == {"customers": 1}
    ws = openpyxl.load_workbook(tmp_path / "s.xlsx")["customers"]
    assert ws["A2"].value == "C-S"


def test_macro_enabled_import_never_carries_vba_into_an_export(desk, tmp_path):
    res = desk.import_xlsx(os.path.join(DATA, "C27-macro-enabled.xlsm"), "customers",
                           user="alice")
    desk.apply(res["batch"]["id"], user="alice")
    out = tmp_path / "x.xlsx"
    desk.export(str(out), "office=north", node="north")
    names = zipfile.ZipFile(out).namelist()
    assert not [n for n in names if "vba" in n.lower()]
    ctypes = zipfile.ZipFile(out).read("[Content_Types].xml").decode()
    assert "macroEnabled" not in ctypes


@pytest.mark.parametrize("text", ["", "league", "=x", "league="])
def test_bad_scopes_are_refused(text):
    with pytest.raises(E.BadScope):
        E.parse_scope(text)
