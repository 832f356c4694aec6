"""Properties of the Excel path: what a clerk typed is what staging holds, and an export
read back holds what the node held."""

from __future__ import annotations

import datetime as dt
import os

import openpyxl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riversync.engine.db import connect
from riversync.engine.schema import load_schema
from riversync.node.staging import Staging, load_import_options, rules_from_schema
from riversync.node.xlsx_export import write_workbook
from riversync.node.xlsx_import import import_xlsx, norm_header

DATA = os.path.join(os.path.dirname(__file__), "data")
SCHEMA_PATH = os.path.join(DATA, "staging_schema.toml")
SCHEMA = load_schema(SCHEMA_PATH)
OPTS = load_import_options(SCHEMA_PATH)

ALPHABET = "0123456789ABCXYZabcxyz -.'üßéÖ"
ids = st.text(alphabet="0123456789-ABCZ", min_size=1, max_size=18).filter(
    lambda s: s.strip() == s and not s.startswith("-"))
names = st.text(alphabet=ALPHABET, min_size=1, max_size=30).map(str.strip).filter(bool)
limits = st.integers(min_value=-(10**12), max_value=10**12)
dates = st.dates(min_value=dt.date(1901, 1, 1), max_value=dt.date(2099, 12, 31))
rows_st = st.lists(st.tuples(ids, names, st.one_of(st.none(), limits)), min_size=1,
                   max_size=12, unique_by=lambda r: r[0])


class NothingLive:
    office = "north"

    def owner_of(self, table, key):
        return None

    def holder_of(self, table, column, value):
        return None


def _staging(tmp_path_factory):
    d = tmp_path_factory.mktemp("p")
    return d, Staging(connect(str(d / "s.db")))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st)
def test_text_ids_names_and_numbers_stage_exactly_as_typed(tmp_path_factory, rows):
    d, staging = _staging(tmp_path_factory)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Customer ID", "Name", "Credit Limit"])
    for r in rows:
        ws.append(list(r))
    for row in ws.iter_rows(min_row=2):
        for cell in row[:2]:
            cell.data_type = "s"  # typed as text, the way a clerk formats an ID column
    path = d / "p.xlsx"
    wb.save(path)
    rules = rules_from_schema(SCHEMA, "customers", OPTS.get("customers"))
    res = import_xlsx(staging, str(path), rules, NothingLive(), user="alice")
    got = [(r["values"]["customer_id"], r["values"]["name"], r["values"].get("credit_limit"))
           for r in staging.rows(res.batch_id)]
    assert got == [tuple(r) for r in rows]
    assert res.summary["invalid"] == 0


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(ids, names, dates, st.integers(0, 10**9)), min_size=1,
                     max_size=10, unique_by=lambda r: r[0]))
def test_an_export_read_back_holds_the_same_values(tmp_path_factory, rows):
    d, staging = _staging(tmp_path_factory)
    live = [{"staff_id": i, "full_name": n, "start_date": day.isoformat()} for i, n, day, _ in
            rows]
    path = str(d / "snap.xlsx")
    cols = ["staff_id", "full_name", "start_date"]
    write_workbook(path, iter([("starters", cols, ["text", "text", "date"],
                                ([r[c] for c in cols] for r in live))]), [("node", "north")])
    rules = rules_from_schema(SCHEMA, "starters", OPTS.get("starters"))
    res = import_xlsx(staging, path, rules, NothingLive(), user="alice")
    back = [r["values"] for r in staging.rows(res.batch_id)]
    assert back == live
    assert staging.batch(res.batch_id).confirm_required


@given(name=st.sampled_from(["customer_id", "full_name", "vat_number"]),
       upper=st.lists(st.booleans(), min_size=20, max_size=20),
       sep=st.sampled_from([" ", "_", "-", "\u00a0", "  "]),
       pad=st.sampled_from(["", " ", "\u00a0", " \u00a0 "]))
def test_header_spellings_all_map_to_the_column(name, upper, sep, pad):
    spelled = "".join(c.upper() if u else c for c, u in zip(name, upper, strict=False))
    spelled = pad + spelled.replace("_", sep) + pad
    assert norm_header(spelled) == name
