"""Staging judges rows the way apply will: the engine's value checks, the acting office of
the user who applies, and the same roles with the node stopped as through its API."""

from __future__ import annotations

import json

import openpyxl
import pytest
from cli_cluster import make_cluster, run
from hypothesis import given
from hypothesis import strategies as st

from riversync.node.staging import ColumnRule, ValueIssue, coerce


@pytest.fixture
def cluster(tmp_path, capsys, monkeypatch):
    return make_cluster(tmp_path, capsys, monkeypatch)


def workbook(path, rows, header=("customer_id", "name", "credit_limit")):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "customers"
    ws.append(list(header))
    for r in rows:
        ws.append(list(r))
    wb.save(path)
    return str(path)


def staged(capsys, batch: int, cfg: str = "node-north.toml") -> dict:
    code, out, err = run(capsys, "staging", "show", str(batch), "-c", cfg, "--json")
    assert code == 0, err
    return {r["key"]: r for r in json.loads(out)["rows"]}


def test_values_the_engine_refuses_are_invalid_in_staging(cluster, capsys, tmp_path):
    f = workbook(tmp_path / "big.xlsx", [("C-1", "Ann", 10), ("C-2", "Bob", 1e30)])
    code, out, err = run(capsys, "import", "xlsx", f, "--table", "customers",
                         "-c", "node-north.toml")
    assert code == 0, err
    rows = staged(capsys, 1)
    assert rows["C-1"]["status"] == "valid"
    assert rows["C-2"]["status"] == "invalid"
    assert "64-bit" in json.dumps(rows["C-2"]["errors"])
    # A correction too long for the engine is refused the same way (the engine's limit).
    from riversync.engine.schema import load_schema
    from riversync.node.staging import rules_from_schema

    rules = rules_from_schema(load_schema(cluster / "schema.toml"), "customers")
    from riversync.node.staging import StagedRow, check_row

    row = StagedRow(2, {})
    check_row(rules, {"customer_id": "C-3", "name": "x" * 3_000_000}, row)
    assert not row.valid and "longer than" in row.errors[0]["message"]
    row = StagedRow(3, {})
    check_row(rules, {"customer_id": "C\u00004", "name": "y"}, row)
    assert not row.valid and "control character" in row.errors[0]["message"]
    code, out, err = run(capsys, "staging", "apply", "1", "-c", "node-north.toml", "--json")
    assert code == 0, err
    assert json.loads(out)["batch"]["events"] == 1


def test_ownership_is_judged_for_the_applying_users_home_office(cluster, capsys, tmp_path):
    f = workbook(tmp_path / "a.xlsx", [("C-1", "Ann", 10)])
    assert run(capsys, "import", "xlsx", f, "--table", "customers", "-c",
               "node-north.toml")[0] == 0
    assert run(capsys, "staging", "apply", "1", "-c", "node-north.toml")[0] == 0
    # A south user (hybrid: signs in at north's node) stages a change to north's row.
    f2 = workbook(tmp_path / "b.xlsx", [("C-1", "Ann B", 20)])
    code, out, err = run(capsys, "import", "xlsx", f2, "--table", "customers", "-c",
                         "node-north.toml", "--user", "south-operator")
    assert code == 0, err
    row = staged(capsys, 2)["C-1"]
    assert row["status"] == "invalid" and "owned by office north" in json.dumps(row["errors"])
    # Staged by north, applied by south: apply re-checks for south and writes nothing.
    assert run(capsys, "import", "xlsx", f2, "--table", "customers", "-c",
               "node-north.toml")[0] == 0
    assert staged(capsys, 3)["C-1"]["status"] == "valid"
    code, out, err = run(capsys, "staging", "apply", "3", "-c", "node-north.toml",
                         "--user", "south-operator")
    assert code == 2 and "STAGING_APPLY_REFUSED" in err and "owned by office north" in err
    shown = staged(capsys, 1)
    assert shown["C-1"]["values"]["name"] == "Ann"
    code, out, err = run(capsys, "export", "xlsx", str(tmp_path / "s.xlsx"), "--scope",
                         "office=north", "-c", "node-north.toml")
    assert code == 0, err
    wb = openpyxl.load_workbook(tmp_path / "s.xlsx")
    names = [r[1] for r in wb["customers"].iter_rows(min_row=2, values_only=True)]
    assert names == ["Ann"]


def test_offline_commands_enforce_the_api_roles(cluster, capsys, tmp_path):
    f = workbook(tmp_path / "a.xlsx", [("C-1", "Ann", 10)])
    assert run(capsys, "import", "xlsx", f, "--table", "customers", "-c", "node-south.toml",
               "--user", "south-clerk")[0] == 0
    for action in (["apply", "1"], ["reject", "1"]):
        code, out, err = run(capsys, "staging", *action, "-c", "node-south.toml",
                             "--user", "south-clerk")
        assert code == 2 and "FORBIDDEN" in err and "Try:" in err, (action, err)
    b = json.loads(run(capsys, "staging", "list", "-c", "node-south.toml", "--json")[1])
    assert [x["state"] for x in b["batches"]] == ["pending"]
    code, out, err = run(capsys, "staging", "apply", "1", "-c", "node-south.toml",
                         "--user", "south-operator")
    assert code == 0, err


def test_an_emailed_key_with_a_control_character_is_staged_invalid(cluster, capsys, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    body = ("table: customers\ncustomer_id: C-\x009\nname: Nul Key\n\n"
            "customer_id: C-10\nname: Fine\n")
    (inbox / "001.eml").write_bytes(
        ("From: a@example.org\nTo: b@example.org\nSubject: new customers\n"
         "Message-ID: <nul-key@example.org>\nMIME-Version: 1.0\n"
         "Content-Type: text/plain; charset=utf-8\n\n" + body).encode())
    code, out, err = run(capsys, "ingest", "email", str(inbox), "-c", "node-north.toml")
    assert code == 0, err
    rows = json.loads(run(capsys, "staging", "show", "1", "-c", "node-north.toml",
                          "--json")[1])["rows"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["C-10"]["status"] == "valid"
    bad = [r for r in rows if r["key"] != "C-10"]
    assert bad and bad[0]["status"] == "invalid"
    assert "control character" in json.dumps(bad[0]["errors"])


def test_amounts_are_read_exactly_and_an_ambiguous_one_is_refused(cluster, capsys, tmp_path):
    """A comma is only ever a thousands separator: '12,50' is refused, not taken as 1250.00,
    and a large amount in a number cell keeps its cents (no float product)."""
    rows = [("10001", "12,50"), ("10002", "1,5"), ("10003", "1.500,00"), ("10004", "1,500.00"),
            ("10005", 12345678.91), ("10006", "2 000.5"), ("10007", "1,50,000"), ("10008", "3.456"),
            ("10009", 0.1 + 0.2)]
    f = workbook(tmp_path / "money.xlsx", rows, header=("office_code", "credit_limit"))
    code, out, err = run(capsys, "import", "xlsx", f, "--table", "offices",
                         "-c", "node-north.toml")
    assert code == 0, err
    got = staged(capsys, 1)
    for key in ("10001", "10002", "10003"):
        assert got[key]["status"] == "invalid", got[key]
        assert "comma as the decimal mark" in got[key]["errors"][0]["message"]
    assert got["10007"]["status"] == "invalid" and "like 1500.00" in got["10007"]["errors"][0]["message"]
    assert got["10008"]["status"] == "invalid" and "ambiguous" in got["10008"]["errors"][0]["message"]
    assert got["10004"]["values"]["credit_limit"] == 150000
    assert got["10005"]["values"]["credit_limit"] == 1234567891
    assert got["10006"]["values"]["credit_limit"] == 200050
    assert got["10009"]["values"]["credit_limit"] == 30
    code, out, err = run(capsys, "staging", "apply", "1", "-c", "node-north.toml", "--json")
    assert code == 0, err
    assert json.loads(out)["batch"]["events"] == 4  # only the valid rows are taken



@given(st.integers(min_value=-(10**13), max_value=10**13))
def test_money_cells_never_lose_cents_to_float_arithmetic(cents):
    """Any amount up to 100 billion units, as Excel stores it (a float) or as typed text
    with or without thousands separators, comes back as exactly its cents."""
    rule = ColumnRule("fee", "money")
    units = f"{abs(cents) // 100}.{abs(cents) % 100:02d}"
    sign = "-" if cents < 0 else ""
    grouped = f"{abs(cents) // 100:,}.{abs(cents) % 100:02d}"
    assert coerce(rule, cents / 100) == (cents, None)
    assert coerce(rule, sign + units) == (cents, None)
    assert coerce(rule, sign + grouped) == (cents, None)


def test_a_true_false_cell_in_a_text_column_is_taken_with_a_note():
    """Excel turns a typed TRUE into a boolean cell; the text column gets the word, and the
    clerk is told, since a name of 'TRUE' is more likely a slip than meant."""
    value, note = coerce(ColumnRule("name", "text"), True)
    assert value == "TRUE" and "TRUE/FALSE cell" in note
    assert coerce(ColumnRule("name", "text"), "Ann") == ("Ann", None)


@pytest.mark.parametrize("text", ["31/04/2024", "29/02/2023", "00/01/2024", "2024-02-30"])
def test_a_date_in_the_right_form_that_does_not_exist_says_so(text):
    with pytest.raises(ValueIssue, match="is not a real date"):
        coerce(ColumnRule("born_on", "date"), text)
    with pytest.raises(ValueIssue, match="not a date in the form DD/MM/YYYY"):
        coerce(ColumnRule("born_on", "date"), "next Friday")


@pytest.mark.parametrize("text,words", [
    ("1.500", "ambiguous"), ("2.000", "ambiguous"), ("1.500.000", "ambiguous"),
    ("1234.567", "more than 2 decimal"), ("0.001", "more than 2 decimal"),
])
def test_a_point_before_three_digits_is_never_taken_as_decimals(text, words):
    """'1.500' is 1,500 to a European clerk: read as 1.50 it would lose three zeros."""
    with pytest.raises(ValueIssue, match=words):
        coerce(ColumnRule("fee", "money"), text)
