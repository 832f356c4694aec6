"""The example files under examples/leagues stage, apply and export as the docs say."""

from __future__ import annotations

import json
import os
import shutil

import openpyxl
import pytest

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node.staging import StagingDesk
from riversync.node.xlsx_export import BadScope, EmptyScope
from riversync.protocol.keys import NodeEntry, Roster, User

ROOT = os.path.join(os.path.dirname(__file__), "..", "examples", "leagues")
T0 = 1_803_000_000_000


def _roster():
    nodes = {n: NodeEntry(n, n, bytes([i]) * 32) for i, n in enumerate(("north", "south"), 1)}
    users = {"north-operator": User("north-operator", "north", "operator"),
             "south-operator": User("south-operator", "south", "operator")}
    return Roster("c", nodes, users)


def _node(tmp_path, office, epoch):
    schema = load_schema(os.path.join(ROOT, "schema.toml"))
    store = Store.open(str(tmp_path / f"{office}.db"), schema, _roster(), office, epoch=epoch)
    with open(os.path.join(ROOT, f"{office}.json")) as f:
        rows = json.load(f)["rows"]
    store.commit_local([LocalChange("create", r["table"], r["pk"], r["values"]) for r in rows],
                       user=f"{office}-operator", now_ms=T0)
    return StagingDesk(store, schema)


@pytest.fixture
def north(tmp_path):
    desk = _node(tmp_path, "north", 1)
    yield desk
    desk.store.close()


def test_north_roster_workbook(north, tmp_path):
    path = os.path.join(ROOT, "north-roster.xlsx")
    players = north.import_xlsx(path, "players", user="north-operator")
    s = players["summary"]
    assert s["sheet"] == "players" and s["valid"] == 6 and s["invalid"] == 1
    bad = north.show(players["batch"]["id"], status="invalid")["rows"]
    assert bad[0]["key"] == "P-N106" and "not a real date" in str(bad[0]["errors"])
    good = {r["key"]: r["values"] for r in north.show(players["batch"]["id"])["rows"]}
    assert good["P-N101"]["born_on"] == "2011-04-02"
    assert good["P-N102"]["born_on"] == "2012-09-17"
    assert good["P-N101"]["phone"] == "0555 1101"
    assert north.apply(players["batch"]["id"], user="north-operator")["batch"]["events"] == 6
    regs = north.import_xlsx(path, "registrations", user="north-operator")
    assert regs["summary"]["sheet"] == "registrations" and regs["summary"]["valid"] == 6
    assert north.apply(regs["batch"]["id"], user="north-operator")["batch"]["events"] == 6
    assert north.store.get_row("registrations", "R-N101")["player_id"] == "P-N101"

    out = tmp_path / "league.xlsx"
    res = north.export(str(out), "league=L-N1", node="north")
    assert res["tables"]["leagues"] == 1 and res["tables"]["teams"] == 3
    assert res["tables"]["registrations"] >= 6 and "players" not in res["tables"]
    wb = openpyxl.load_workbook(out)
    assert {"leagues", "sessions", "teams", "registrations", "_riversync"} <= set(wb.sheetnames)
    assert wb["leagues"]["A2"].value == "L-N1"
    fee_col = [c.value for c in wb["leagues"][1]].index("fee") + 1
    assert wb["leagues"].cell(2, fee_col).value == 45.0  # money written as currency units
    sess = wb["sessions"]
    starts = [c.value for c in sess[1]].index("starts_on") + 1
    assert sess.cell(2, starts).is_date

    res = north.export(str(tmp_path / "s.xlsx"), "session=L-N1-2027", node="north")
    assert res["tables"]["sessions"] == 1 and "teams" not in res["tables"]
    with pytest.raises(EmptyScope):
        north.export(str(tmp_path / "e.xlsx"), "league=L-NOPE", node="north")
    with pytest.raises(BadScope):
        north.export(str(tmp_path / "e.xlsx"), "planet=mars", node="north")
    assert not (tmp_path / "e.xlsx").exists()


def test_south_registration_emails(tmp_path):
    south = _node(tmp_path, "south", 2)
    try:
        drop = tmp_path / "drop"
        shutil.copytree(os.path.join(ROOT, "mail"), drop)
        rep = south.ingest(str(drop))
        assert len(rep["staged"]) == 3 and rep["failed"] == []
        keys = {}
        for s in rep["staged"]:
            shown = south.show(s["batch"])
            assert all(r["status"] == "valid" for r in shown["rows"]), shown["rows"]
            keys.update({r["key"]: r["values"] for r in shown["rows"]})
            south.apply(s["batch"], user="south-operator")
        assert sorted(keys) == ["P-S101", "P-S102", "P-S103", "P-S104"]
        assert keys["P-S104"]["full_name"] == "Zöe Weiß"
        assert keys["P-S101"]["born_on"] == "2013-09-03"
        assert south.store.get_row("players", "P-S103")["born_on"] == "2012-07-19"
        assert sorted(os.listdir(drop / "processed")) == sorted(os.listdir(os.path.join(
            ROOT, "mail")))
    finally:
        south.store.close()
