"""A staged update names only the columns it changes; a create must give every required one.

Real workbooks and .eml files go through the `riversync` commands against a cluster made
by `riversync cluster init` (staff: full_name and region are required).
"""

from __future__ import annotations

import json
import os
import shutil

import openpyxl
import pytest
from cli_cluster import DATA, make_cluster, run

from riversync.config import load_node_config
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange
from riversync.node import daemon, head

T0 = 1_710_496_800_000


@pytest.fixture
def cluster(tmp_path, capsys, monkeypatch):
    return make_cluster(tmp_path, capsys, monkeypatch)


def sheet(path, header, *rows):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(header))
    for r in rows:
        ws.append(list(r))
    wb.save(path)
    return str(path)


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def stage(capsys, path, office="north"):
    res = run_json(capsys, "import", "xlsx", path, "--table", "staff", "-c",
                   f"node-{office}.toml")
    return res["batch"]["id"]


def rows_of(capsys, batch, office="north"):
    return run_json(capsys, "staging", "show", str(batch), "-c", f"node-{office}.toml")["rows"]


class Db:
    """The node's store, opened the way the offline commands open it."""

    def __init__(self, cluster, office="north"):
        self.cfg = load_node_config(cluster / f"node-{office}.toml")
        self.schema = load_schema(cluster / "schema.toml")

    def __enter__(self):
        self.store = daemon.open_store(self.cfg, self.schema)
        return self.store

    def __exit__(self, *exc):
        head.record(self.store)
        self.store.close()


def seed(cluster, capsys, tmp_path):
    """S1 and S2 live at north, applied from a full sheet."""
    path = sheet(tmp_path / "seed.xlsx", ("staff_id", "full_name", "region"),
                 ("S1", "Ada Example", "North"), ("S2", "Ben Sample", "South"))
    b = stage(capsys, path)
    assert run_json(capsys, "staging", "apply", str(b), "-c", "node-north.toml")["batch"][
        "events"] == 2


def test_sheet_leaving_out_a_required_column_updates_the_given_ones(cluster, capsys, tmp_path):
    seed(cluster, capsys, tmp_path)
    # only staff_id and region: full_name is not in the sheet at all
    b = stage(capsys, sheet(tmp_path / "region.xlsx", ("staff_id", "region"),
                            ("S1", "East"), ("S9", "West")))
    notes = run_json(capsys, "staging", "show", str(b), "-c", "node-north.toml")["batch"]["notes"]
    assert "the sheet has no column for: full_name (rows for existing keys keep their values " \
           "there; new rows need full_name)" in notes
    rows = {r["key"]: r for r in rows_of(capsys, b)}
    assert rows["S1"]["status"] == "valid" and rows["S1"]["op"] == "update"
    assert rows["S1"]["errors"] == []
    # a new key is a create: it still needs every required column
    assert rows["S9"]["status"] == "invalid" and rows["S9"]["op"] == "create"
    assert [e["message"] for e in rows["S9"]["errors"]] == ["full_name required"]
    code, out, err = run(capsys, "staging", "apply", str(b), "-c", "node-north.toml")
    assert code == 0, err
    assert f"1 change(s) written as one transaction (audit source local:staging:{b})" in out
    with Db(cluster) as store:
        assert store.get_row("staff", "S1") == {"staff_id": "S1", "full_name": "Ada Example",
                                                "region": "East"}
        assert store.get_row("staff", "S9") is None
        last = store.audit(limit=1)[0]
        # the engine got a partial update: only the column the sheet gave
        assert (last["kind"], last["pk"], last["values"]) == ("update", "S1", {"region": "East"})
        assert last["source"] == f"local:staging:{b}"


def test_blank_required_cell_of_an_existing_row_leaves_the_live_value(cluster, capsys,
                                                                       tmp_path):
    seed(cluster, capsys, tmp_path)
    b = stage(capsys, sheet(tmp_path / "blank.xlsx", ("staff_id", "full_name", "region"),
                            ("S2", None, "Central"), ("S1", "   ", None)))
    rows = {r["key"]: r for r in rows_of(capsys, b)}
    assert rows["S2"]["status"] == "valid", rows["S2"]
    # every cell but the key blank: nothing to change, refused before the engine sees it
    assert rows["S1"]["status"] == "invalid"
    assert "changes nothing" in rows["S1"]["errors"][0]["message"]
    # The plain listing shows the blank cell as left alone, never as a null to be written.
    code, out, err = run(capsys, "staging", "show", str(b), "-c", "node-north.toml")
    assert code == 0, err
    s2 = next(line for line in out.splitlines() if " S2:" in line)
    assert "null" not in s2 and "left as they are: full_name" in s2, s2
    run_json(capsys, "staging", "apply", str(b), "-c", "node-north.toml")
    with Db(cluster) as store:
        assert store.get_row("staff", "S2")["full_name"] == "Ben Sample"
        assert store.get_row("staff", "S2")["region"] == "Central"
        assert store.get_row("staff", "S1")["region"] == "North"
        assert store.audit(limit=1)[0]["values"] == {"region": "Central"}


def test_given_columns_are_still_checked_and_ownership_still_holds(cluster, capsys, tmp_path):
    seed(cluster, capsys, tmp_path)
    # a south user (hybrid, signed in at north) does not own S1: refused for ownership,
    # and a left-out full_name is not what the row is refused for
    code, out, err = run(capsys, "import", "xlsx",
                         sheet(tmp_path / "south.xlsx", ("staff_id", "region"), ("S1", "East")),
                         "--table", "staff", "--user", "south-operator", "-c", "node-north.toml",
                         "--json")
    assert code == 0, err
    r = rows_of(capsys, json.loads(out)["batch"]["id"])[0]
    assert r["status"] == "invalid"
    assert [e["message"] for e in r["errors"]] == [
        "S1 is owned by office north; only north can change it"]
    # a given value that breaks its column's rule is refused as before
    path = sheet(tmp_path / "cust.xlsx", ("customer_id", "name", "credit_limit"),
                 ("C1", "Sample Logistics", 1000))
    b = run_json(capsys, "import", "xlsx", path, "--table", "customers",
                 "-c", "node-north.toml")["batch"]["id"]
    run_json(capsys, "staging", "apply", str(b), "-c", "node-north.toml")
    path = sheet(tmp_path / "limit.xlsx", ("customer_id", "credit_limit"), ("C1", "lots"))
    b = run_json(capsys, "import", "xlsx", path, "--table", "customers",
                 "-c", "node-north.toml")["batch"]["id"]
    r = run_json(capsys, "staging", "show", str(b), "-c", "node-north.toml")["rows"][0]
    assert r["status"] == "invalid"
    assert [e["column"] for e in r["errors"]] == ["credit_limit"]


def test_email_update_at_the_owning_office(cluster, capsys, tmp_path):
    seed(cluster, capsys, tmp_path)
    drop = cluster / "drop"
    drop.mkdir()
    shutil.copy(os.path.join(DATA, "partial-update.eml"), drop / "partial-update.eml")
    res = run_json(capsys, "ingest", "email", str(drop), "-c", "node-north.toml")
    b = res["staged"][0]["batch"]
    rows = {r["key"]: r for r in rows_of(capsys, b)}
    assert rows["S2"]["status"] == "valid" and rows["S2"]["op"] == "update", rows["S2"]
    assert rows["S7"]["status"] == "invalid"  # new: a create needs full_name
    assert [e["message"] for e in rows["S7"]["errors"]] == ["full_name required"]
    assert run_json(capsys, "staging", "apply", str(b), "-c", "node-north.toml")["batch"][
        "events"] == 1
    with Db(cluster) as store:
        assert store.get_row("staff", "S2") == {"staff_id": "S2", "full_name": "Ben Sample",
                                                "region": "Lakeside"}


def test_row_deleted_between_staging_and_apply_fails_the_apply(cluster, capsys, tmp_path):
    seed(cluster, capsys, tmp_path)
    b = stage(capsys, sheet(tmp_path / "region.xlsx", ("staff_id", "region"),
                            ("S1", "East"), ("S2", "West")))
    assert [r["op"] for r in rows_of(capsys, b)] == ["update", "update"]
    with Db(cluster) as store:
        user = next(u.name for u in store.roster.users.values()
                    if u.home_office == "north" and u.role == "operator")
        store.commit_local([LocalChange("delete", "staff", "S1")], user=user, now_ms=T0)
        before = store.audit_count()
    code, out, err = run(capsys, "staging", "apply", str(b), "-c", "node-north.toml")
    assert code != 0
    assert "STAGING_APPLY_REFUSED" in err and "S1 no longer exists" in err
    with Db(cluster) as store:
        assert store.audit_count() == before  # nothing written: not S1, not S2 either
        assert store.get_row("staff", "S1") is None
        assert store.get_row("staff", "S2")["region"] == "South"
    shown = run_json(capsys, "staging", "show", str(b), "-c", "node-north.toml")
    assert shown["batch"]["state"] == "failed"
    assert "no longer exists" in shown["batch"]["reason"]
    r1 = [r for r in shown["rows"] if r["key"] == "S1"][0]
    assert r1["status"] == "invalid"
    # leaving the row out lets the rest through
    applied = run_json(capsys, "staging", "apply", str(b), "--exclude", str(r1["row"]),
                       "-c", "node-north.toml")
    assert applied["batch"]["events"] == 1


def test_correcting_rows_decides_create_or_update_again(cluster, capsys, tmp_path):
    """A correction (API POST /v1/staging/{id}/rows/{row}) checks the row as the import
    did: an update of a live key needs no required column, a create needs them all."""
    from riversync.node.staging import StagingDesk, load_import_options

    seed(cluster, capsys, tmp_path)
    b = stage(capsys, sheet(tmp_path / "region.xlsx", ("staff_id", "region"),
                            ("S1", "East"), ("S2", "West")))
    with Db(cluster) as store:
        store.commit_local([LocalChange("delete", "staff", "S1")], user="north-operator",
                           now_ms=T0)
    code, out, err = run(capsys, "staging", "apply", str(b), "-c", "node-north.toml")
    assert code != 0 and "S1 no longer exists" in err
    with Db(cluster) as store:
        desk = StagingDesk(store, store.schema,
                           load_import_options(str(cluster / "schema.toml")))
        rows = {r["key"]: r for r in desk.show(b)["rows"]}
        # S2 is still an update: correcting its region leaves full_name out and is fine
        r2 = desk.edit(b, rows["S2"]["row"], {"region": "Lakeside"}, user="north-operator")
        assert (r2["row"]["op"], r2["row"]["status"]) == ("update", "valid"), r2
        # S1 is gone: corrected, it is checked as a new row and needs full_name
        r1 = desk.edit(b, rows["S1"]["row"], {"region": "East"}, user="north-operator")
        assert (r1["row"]["op"], r1["row"]["status"]) == ("create", "invalid")
        assert [e["message"] for e in r1["row"]["errors"]] == ["full_name required"]
        r1 = desk.edit(b, rows["S1"]["row"], {"full_name": "Ada Again"}, user="north-operator")
        assert (r1["row"]["op"], r1["row"]["status"]) == ("create", "valid")
    applied = run_json(capsys, "staging", "apply", str(b), "-c", "node-north.toml")
    assert applied["batch"]["events"] == 2
    with Db(cluster) as store:
        assert store.get_row("staff", "S1") == {"staff_id": "S1", "full_name": "Ada Again",
                                                "region": "East"}
        assert store.get_row("staff", "S2")["full_name"] == "Ben Sample"
