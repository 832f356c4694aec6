"""Excel import into staging: real .xlsx files written by openpyxl, and the case files.

Live data here is an empty node (nothing owned, nothing taken); ownership and apply
against a real store are in test_staging_apply.py.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import zipfile

import openpyxl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openpyxl.styles import Font
from openpyxl.utils.datetime import CALENDAR_MAC_1904

from riversync.engine.db import connect
from riversync.engine.schema import load_schema
from riversync.node import xlsx_import as X
from riversync.node.staging import Staging, load_import_options, rules_from_schema

DATA = os.path.join(os.path.dirname(__file__), "data")
SCHEMA_PATH = os.path.join(DATA, "staging_schema.toml")


class NothingLive:
    """An office with no rows yet: every key is new, every unique value free."""

    office = "north"

    def owner_of(self, table, key):
        return None

    def holder_of(self, table, column, value):
        return None


@pytest.fixture
def env(tmp_path):
    conn = connect(str(tmp_path / "node.db"))
    staging = Staging(conn)
    schema = load_schema(SCHEMA_PATH)
    opts = load_import_options(SCHEMA_PATH)

    def rules(table):
        return rules_from_schema(schema, table, opts.get(table))

    yield staging, rules, tmp_path
    conn.close()


def stage(env, path, table, **kw):
    staging, rules, _ = env
    res = X.import_xlsx(staging, str(path), rules(table), NothingLive(), user="alice", **kw)
    return res, {r["row"]: r for r in staging.rows(res.batch_id)}


def messages(row):
    return " | ".join(e["message"] for e in row["errors"])


# ---- the case files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["C22-dates-1900.xlsx", "C22-dates-1904.xlsx"])
def test_c22_dates_in_both_date_systems_stage_identically(env, name):
    res, rows = stage(env, os.path.join(DATA, name), "starters")
    got = {r["key"]: r["values"].get("start_date") for r in rows.values()}
    assert got["S-001"] == "2024-03-15"
    assert got["S-002"] == "2024-03-15"  # the serial read with the workbook's own epoch
    assert got["S-003"] == "2024-03-15"
    assert got["S-004"] == "2024-04-03"  # DD/MM/YYYY, never 2024-03-04
    s5 = rows[6]
    assert s5["key"] == "S-005" and s5["status"] == "invalid"
    assert "time without date" in messages(s5)
    assert "start_date" not in s5["values"]
    assert "2020-03-14" not in str(rows) and "1899-12-30" not in str(rows)
    assert "1904-01-01" not in str(rows)
    assert res.summary["valid"] == 4 and res.summary["invalid"] == 1


def test_c22_both_files_give_the_same_values(env):
    _, a = stage(env, os.path.join(DATA, "C22-dates-1900.xlsx"), "starters")
    _, b = stage(env, os.path.join(DATA, "C22-dates-1904.xlsx"), "starters")
    assert [r["values"] for r in a.values()] == [r["values"] for r in b.values()]
    assert [r["status"] for r in a.values()] == [r["status"] for r in b.values()]


def test_c23_leading_zeros_and_sixteen_digit_ids(env):
    _, rows = stage(env, os.path.join(DATA, "C23-ids-leading-zeros.xlsx"), "offices")
    r2, r3, r4 = rows[2], rows[3], rows[4]
    assert r2["status"] == "valid"
    assert r2["values"] == {"office_code": "00042", "account_no": "1234567890123456",
                            "postcode": "01234", "credit_limit": 150000}
    assert r3["status"] == "invalid"
    by_col = {}
    for e in r3["errors"]:
        by_col.setdefault(e["column"], []).append(e["message"])
    assert sorted(by_col) == ["account_no", "office_code", "postcode"]
    assert all(len(v) == 1 for v in by_col.values())
    assert "leading zeros" in by_col["office_code"][0]
    assert "precision" in by_col["account_no"][0]
    assert "leading zeros" in by_col["postcode"][0]
    for bad in ("42", "42.0", "1234567890123460", "1.23456789012346E+15"):
        assert bad not in r3["values"].values()
    assert r4["status"] == "valid" and r4["values"]["office_code"] == "00043"
    assert r4["values"]["account_no"] == "0099887766554433"


def test_c25_phantom_rows_and_rows_after_a_gap(env):
    res, rows = stage(env, os.path.join(DATA, "C25-phantom-rows.xlsx"), "customers")
    assert [r["key"] for r in rows.values()] == ["C-2001", "C-2002", "C-2003", "C-2004",
                                                  "C-2005"]
    assert all(r["status"] == "valid" for r in rows.values())
    assert res.summary["staged"] == 5
    assert res.summary["blank_rows"] == [5, 8]
    # the sheet's used range reaches row 1,048,576; reading stops at the last value (row 8)
    assert res.summary["rows_read"] == 7


def test_c26_headers_with_spaces_nbsp_and_merged_cells(env):
    res, rows = stage(env, os.path.join(DATA, "C26-headers-merged.xlsx"), "staff")
    by_key = {r["key"]: r for r in rows.values()}
    assert set(by_key) == {"S-101", "S-102", "S-103", "S-104", "S-105"}
    for k in ("S-101", "S-102", "S-103"):
        assert by_key[k]["values"]["region"] == "North"
        assert by_key[k]["status"] == "valid"
    assert any("merged cells C2:C4" in n for n in by_key["S-102"]["notes"])
    assert any("merged cells C2:C4" in n for n in by_key["S-103"]["notes"])
    assert by_key["S-104"]["values"]["region"] == "South"
    s105 = by_key["S-105"]
    assert s105["status"] == "invalid" and messages(s105) == "region required"
    assert by_key["S-101"]["values"]["full_name"] == "Ada Example"


@pytest.mark.parametrize("name, cls, words", [
    ("C27-legacy.xls", X.XlsxLegacy, "legacy Excel 97–2003 format; save as .xlsx"),
    ("C27-legacy-renamed.xlsx", X.XlsxLegacy, "legacy Excel 97–2003 format; save as .xlsx"),
    ("C27-encrypted.xlsx", X.XlsxEncrypted, "password-protected; remove the password"),
    ("C27-truncated.xlsx", X.XlsxDamaged, "file is damaged or incomplete"),
    ("C27-empty.xlsx", X.XlsxEmpty, "empty file"),
])
def test_c27_not_really_xlsx_is_refused_by_content(env, caplog, name, cls, words):
    staging, _, _ = env
    with caplog.at_level("WARNING", logger="riversync.staging"):
        with pytest.raises(cls) as ei:
            stage(env, os.path.join(DATA, name), "customers")
    assert words in ei.value.message
    assert "Traceback" not in ei.value.message
    assert staging.batches() == []
    assert staging.conn.execute("SELECT count(*) FROM staging_rows").fetchall()[0][0] == 0
    assert any(ei.value.code in r.getMessage() for r in caplog.records)


def test_c27_encrypted_is_not_reported_as_legacy(env):
    with pytest.raises(X.XlsxRefused) as ei:
        stage(env, os.path.join(DATA, "C27-encrypted.xlsx"), "customers")
    assert not isinstance(ei.value, X.XlsxLegacy)
    assert "legacy" not in ei.value.message


def test_c27_xlsm_stages_like_xlsx(env, tmp_path):
    res, rows = stage(env, os.path.join(DATA, "C27-macro-enabled.xlsm"), "customers")
    assert [r["key"] for r in rows.values()] == ["C-1001", "C-1002"]
    assert all(r["status"] == "valid" for r in rows.values())
    # the same data as a plain .xlsx stages the same values
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Customers"
    ws.append(["customer_code", "name"])
    ws.append(["C-1001", "Example Trading"])
    ws.append(["C-1002", "Sample Logistics"])
    wb.save(tmp_path / "same.xlsx")
    _, rows2 = stage(env, tmp_path / "same.xlsx", "customers")
    assert [r["values"] for r in rows.values()] == [r["values"] for r in rows2.values()]


def test_c28_flags_collisions_and_duplicates_before_apply(env):
    staging, rules, _ = env

    class C0999Live(NothingLive):
        def holder_of(self, table, column, value):
            return "C-0999" if (column, value) == ("vat_number", "XX000000999") else None

    res = X.import_xlsx(staging, os.path.join(DATA, "C28-apply-atomicity.xlsx"),
                        rules("customers"), C0999Live(), user="alice")
    rows = {r["row"]: r for r in staging.rows(res.batch_id)}
    assert [rows[n]["status"] for n in (2, 3, 4, 5, 6)] == ["valid", "valid", "invalid",
                                                           "invalid", "valid"]
    assert "already used by C-0999" in messages(rows[4])
    assert "duplicate key C-3002" in messages(rows[5])


# ---- awkward files written here -------------------------------------------------------


def write(path, rows, *, title="Sheet", epoch1904=False, setup=None):
    wb = openpyxl.Workbook()
    if epoch1904:
        wb.epoch = CALENDAR_MAC_1904
    ws = wb.active
    ws.title = title
    for r in rows:
        ws.append(r)
    if setup:
        setup(ws)
    wb.save(path)
    return path


def test_real_dates_serials_text_and_1904_written_here(env, tmp_path):
    def fmt(ws):
        ws["C3"].number_format = "General"
        ws["C6"].number_format = "hh:mm"

    rows = [["Staff ID", "Full Name", "Start Date"],
            ["S-1", "A", dt.date(2024, 3, 15)],
            ["S-2", "B", 45366],
            ["S-3", "C", "15/03/2024"],
            ["S-4", "D", "2024-03-15"],
            ["S-5", "E", dt.time(9, 30)],
            ["S-6", "F", "31/02/2024"],
            ["S-7", "G", dt.datetime(2024, 3, 15, 14, 0)]]
    p = write(tmp_path / "d.xlsx", rows, setup=fmt)
    _, got = stage(env, p, "starters")
    assert [got[n]["values"].get("start_date") for n in (2, 3, 4, 5)] == ["2024-03-15"] * 4
    assert "time without date" in messages(got[6])
    assert "is not a real date" in messages(got[7])
    assert got[8]["status"] == "invalid"  # a time of day in a date column is not dropped silently
    rows_1904 = [["staff_id", "full_name", "start_date"], ["S-1", "A", 43904],
                 ["S-2", "B", dt.date(2024, 3, 15)]]
    p2 = write(tmp_path / "d1904.xlsx", rows_1904, epoch1904=True)
    _, got2 = stage(env, p2, "starters")
    assert got2[2]["values"]["start_date"] == "2024-03-15"
    assert got2[3]["values"]["start_date"] == "2024-03-15"


def _add_cached_value(path, coord, value):
    """Give one formula cell a saved value, as Excel does when it saves a workbook."""
    tmp = str(path) + ".tmp"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                text = data.decode()
                text, n = re.subn(rf'(<c r="{coord}"[^>]*>\s*<f>[^<]*</f>)\s*<v\s*/?>(</v>)?',
                                  rf"\g<1><v>{value}</v>", text)
                assert n == 1, text
                data = text.encode()
            zout.writestr(item, data)
    shutil.move(tmp, path)


def test_formulas_with_and_without_a_saved_value(env, tmp_path):
    rows = [["customer_id", "name", "credit_limit"],
            ["C-1", "Cached", "=1000+500"],
            ["C-2", "Not cached", "=2000+1"],
            ["C-3", "Error", "=1/0"]]
    p = write(tmp_path / "f.xlsx", rows)
    _add_cached_value(p, "C2", "1500")
    text = zipfile.ZipFile(p).read("xl/worksheets/sheet1.xml").decode()
    text = text.replace('<c r="C4"', '<c r="C4" t="e"', 1)
    # mark C4 as a saved error value
    tmp = tmp_path / "f2.xlsx"
    with zipfile.ZipFile(p) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(r'(<c r="C4" t="e"[^>]*>\s*<f>[^<]*</f>)\s*<v\s*/?>(</v>)?',
                              r"\g<1><v>#DIV/0!</v>", text).encode()
            zout.writestr(item, data)
    _, got = stage(env, tmp, "customers")
    assert got[2]["status"] == "valid" and got[2]["values"]["credit_limit"] == 1500
    assert got[3]["status"] == "invalid"
    assert "formula with no saved value" in messages(got[3]) and "C3" in messages(got[3])
    assert got[4]["status"] == "invalid" and "#DIV/0!" in messages(got[4])


def test_blank_rows_trailing_rows_and_far_formatting(env, tmp_path):
    def far(ws):
        ws["A200000"].font = Font(bold=True)
        ws["B9"] = "   "

    rows = [["customer_id", "name"], ["C-1", "One"], [None, None], ["C-2", "Two"],
            [None, None], [None, None], ["C-3", "Three"]]
    p = write(tmp_path / "b.xlsx", rows, setup=far)
    res, got = stage(env, p, "customers")
    assert [r["key"] for r in got.values()] == ["C-1", "C-2", "C-3"]
    assert res.summary["rows_read"] < 20


def test_leading_zero_ids_as_text_and_numbers(env, tmp_path):
    rows = [["office_code", "account_no", "postcode"],
            ["00042", "0000000000000001", "00001"],
            [42, "0000000000000002", 1]]
    p = write(tmp_path / "z.xlsx", rows)
    _, got = stage(env, p, "offices")
    assert got[2]["values"]["office_code"] == "00042" and got[2]["status"] == "valid"
    assert got[3]["status"] == "invalid"
    assert {e["column"] for e in got[3]["errors"]} == {"office_code", "postcode"}


def test_merged_cells_fill_and_plain_blanks_do_not(env, tmp_path):
    def merge(ws):
        ws.merge_cells("C2:C3")

    rows = [["staff_id", "full_name", "region"], ["S-1", "A", "East"], ["S-2", "B", None],
            ["S-3", "C", None]]
    p = write(tmp_path / "m.xlsx", rows, setup=merge)
    _, got = stage(env, p, "staff")
    assert got[3]["values"]["region"] == "East"
    assert got[4]["status"] == "invalid" and messages(got[4]) == "region required"


def test_duplicate_keys_in_the_file(env, tmp_path):
    rows = [["customer_id", "name"], ["C-1", "a"], ["C-2", "b"], ["C-1", "c"], ["C-1", "d"]]
    p = write(tmp_path / "dup.xlsx", rows)
    _, got = stage(env, p, "customers")
    assert [got[n]["status"] for n in (2, 3, 4, 5)] == ["valid", "valid", "invalid", "invalid"]
    assert "also on row 2" in messages(got[4]) and "also on row 2" in messages(got[5])


def test_header_forgives_case_space_order_and_reports_unknown_columns(env, tmp_path):
    rows = [["Report for March"], [], ["NAME ", " Customer-ID", "Shoe size"], ["Ada", "C-9", 42]]
    p = write(tmp_path / "h.xlsx", rows)
    res, got = stage(env, p, "customers")
    assert got[4]["values"] == {"customer_id": "C-9", "name": "Ada"}
    b = env[0].batch(res.batch_id)
    assert any("Shoe size" in n for n in b.notes)


@pytest.mark.parametrize("rows, words", [
    ([], "is empty"),
    ([["a", "b"], [1, 2]], "no header row"),
])
def test_no_header_or_empty_sheet_is_refused(env, tmp_path, rows, words):
    p = write(tmp_path / "nh.xlsx", rows)
    with pytest.raises(X.XlsxNoHeader) as ei:
        stage(env, p, "customers")
    assert words in ei.value.message
    assert env[0].batches() == []


def test_other_zip_and_text_files_are_refused(env, tmp_path):
    p = tmp_path / "doc.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("word/document.xml", "<w/>")
    with pytest.raises(X.XlsxNotExcel):
        stage(env, p, "customers")
    c = tmp_path / "csv.xlsx"
    c.write_text("customer_id,name\nC-1,a\n")
    with pytest.raises(X.XlsxNotExcel):
        stage(env, c, "customers")
    assert env[0].batches() == []


def test_unknown_sheet_is_refused_with_the_sheet_names(env, tmp_path):
    p = write(tmp_path / "s.xlsx", [["customer_id"], ["C-1"]], title="Clients")
    with pytest.raises(X.XlsxNoSheet) as ei:
        stage(env, p, "customers", sheet="Nope")
    assert "Clients" in ei.value.message
    res, got = stage(env, p, "customers", sheet="clients")
    assert got[2]["key"] == "C-1"


def test_batch_records_file_name_and_sha256(env, tmp_path):
    import hashlib

    p = write(tmp_path / "h.xlsx", [["customer_id", "name"], ["C-1", "a"]])
    res, _ = stage(env, p, "customers")
    b = env[0].batch(res.batch_id)
    assert b.source == "h.xlsx"
    assert b.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert b.state == "pending" and b.kind == "xlsx"


def test_progress_is_reported(env, tmp_path):
    rows = [["customer_id", "name"]] + [[f"C-{i}", "x"] for i in range(2500)]
    p = write(tmp_path / "p.xlsx", rows)
    seen = []
    res, _ = stage(env, p, "customers", progress=seen.append)
    assert seen[:2] == [1000, 2000] and seen[-1] == 2500
    assert res.summary["valid"] == 2500


def test_sheet_xml_cut_off_inside_a_valid_zip_is_damaged_and_stages_nothing(env, tmp_path):
    rows = [["customer_id", "name"]] + [[f"C-{i}", "x" * 20] for i in range(3000)]
    p = write(tmp_path / "ok.xlsx", rows)
    cut = tmp_path / "cut.xlsx"
    with zipfile.ZipFile(p) as zin, zipfile.ZipFile(cut, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]
            zout.writestr(item, data)
    with pytest.raises(X.XlsxDamaged):
        stage(env, cut, "customers")
    assert env[0].batches() == []
    assert env[0].conn.execute("SELECT count(*) FROM staging_rows").fetchall()[0][0] == 0


def test_a_member_failing_its_crc_is_damaged_and_stages_nothing(env, tmp_path):
    p = write(tmp_path / "ok.xlsx", [["customer_id", "name"], ["C-1", "MARKERTEXT"]])
    stored = tmp_path / "stored.xlsx"
    with zipfile.ZipFile(p) as zin, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
    raw = bytearray(stored.read_bytes())
    at = raw.find(b"MARKERTEXT")
    assert at > 0
    raw[at] = ord("N")  # still valid XML, but no longer the bytes the CRC was made of
    stored.write_bytes(bytes(raw))
    with pytest.raises(X.XlsxDamaged):
        stage(env, stored, "customers")
    assert env[0].batches() == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shift=st.integers(0, 0xFFFF), n_fat=st.integers(0, 3), first_dir=st.integers(0, 8),
       noise=st.lists(st.tuples(st.integers(76, 1023), st.integers(0, 255)), max_size=30))
@example(shift=0xFFFF, n_fat=1, first_dir=0, noise=[])  # once ValueError: an HTTP 500
def test_any_damaged_ole2_header_is_refused_as_legacy_or_encrypted(tmp_path, shift, n_fat,
                                                                   first_dir, noise):
    """A file with the OLE2 signature and a garbage directory is refused with a typed error."""
    data = bytearray(1024)
    data[:8] = X.OLE2_MAGIC
    for at, byte in noise:
        data[at] = byte
    data[30:32] = shift.to_bytes(2, "little")
    data[44:48] = n_fat.to_bytes(4, "little")
    data[48:52] = first_dir.to_bytes(4, "little")
    path = tmp_path / "ole.xlsx"
    path.write_bytes(bytes(data))
    with pytest.raises((X.XlsxLegacy, X.XlsxEncrypted)):
        X.sniff(str(path))
