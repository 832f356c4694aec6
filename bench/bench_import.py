"""Benchmark: import and apply a large workbook, against openpyxl's own read-only read.

Run:  .venv/bin/python bench/bench_import.py [--rows 50000] [--keep DIR]

It writes a workbook of ``--rows`` customer rows (text ids, names, unique VAT numbers,
integer limits, dates, phones with leading zeros), then in the same process measures:

1. openpyxl alone: ``load_workbook(read_only=True, data_only=True)`` and iterate every row
   (values only) -- the floor any importer built on openpyxl pays;
2. ``import_xlsx`` into staging (sniff, pre-scan, read, check every row, store it);
3. ``apply`` of the whole batch through ``Store.commit_local`` (one transaction).

It prints rows per second for each, the import/openpyxl ratio (target at least 0.5) and
the peak Python heap during import and apply (tracemalloc, measured in a second pass so
the timings are not slowed by tracing), plus the process's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
import tracemalloc

import openpyxl

from riversync.engine.schema import parse_schema
from riversync.engine.store import Store
from riversync.node.staging import StagingDesk
from riversync.protocol.keys import NodeEntry, Roster, User

SCHEMA = {
    "version": 1,
    "tables": {"customers": {"primary_key": "customer_id", "columns": {
        "customer_id": "text", "name": {"type": "text", "required": True},
        "vat_number": "text", "credit_limit": "integer", "since": "date", "phone": "text"}}},
}
OPTIONS = {"customers": {"vat_number": {"unique": True}}}


def write_workbook(path: str, rows: int) -> None:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("customers")
    ws.append(["Customer ID", "Name", "VAT Number", "Credit Limit", "Since", "Phone"])
    base = dt.date(2020, 1, 1)
    for i in range(rows):
        ws.append([f"C-{i:07d}", f"Customer {i}", f"XX{i:09d}", 1000 + i % 5000,
                   base + dt.timedelta(days=i % 1500), f"0555 {i % 10000:04d}"])
    wb.save(path)


def openpyxl_read(path: str) -> int:
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    n = sum(1 for _ in wb["customers"].iter_rows(min_row=2, values_only=True))
    wb.close()
    return n


def new_desk(folder: str, name: str) -> StagingDesk:
    nodes = {"north": NodeEntry("north", "north", b"\x01" * 32)}
    roster = Roster("bench", nodes, {"op": User("op", "north", "operator")})
    schema = parse_schema(SCHEMA)
    store = Store.open(os.path.join(folder, name), schema, roster, "north", epoch=1)
    return StagingDesk(store, schema, OPTIONS)


def import_and_apply(path: str, folder: str, name: str) -> tuple[float, float, dict]:
    desk = new_desk(folder, name)
    try:
        t0 = time.perf_counter()
        res = desk.import_xlsx(path, "customers", user="op")
        t1 = time.perf_counter()
        applied = desk.apply(res["batch"]["id"], user="op")
        t2 = time.perf_counter()
        assert applied["batch"]["events"] == res["summary"]["valid"]
        return t1 - t0, t2 - t1, res["summary"]
    finally:
        desk.store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--keep", default=None, help="write files here instead of a temp dir")
    args = ap.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="riversync-bench-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"customers-{args.rows}.xlsx")
    t = time.perf_counter()
    write_workbook(path, args.rows)
    print(f"workbook: {args.rows} rows, {os.path.getsize(path) / 1e6:.1f} MB, "
          f"written in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    n = openpyxl_read(path)
    base_s = time.perf_counter() - t
    assert n == args.rows
    imp_s, apply_s, summary = import_and_apply(path, folder, "timed.db")
    assert summary["valid"] == args.rows, summary
    rate = lambda s: args.rows / s  # noqa: E731
    print(f"openpyxl read-only read : {base_s:6.2f} s  {rate(base_s):9.0f} rows/s")
    print(f"import into staging     : {imp_s:6.2f} s  {rate(imp_s):9.0f} rows/s  "
          f"({rate(imp_s) / rate(base_s):.2f}x openpyxl)")
    print(f"apply (one transaction) : {apply_s:6.2f} s  {rate(apply_s):9.0f} rows/s")
    both = imp_s + apply_s
    print(f"import + apply          : {both:6.2f} s  {rate(both):9.0f} rows/s  "
          f"({rate(both) / rate(base_s):.2f}x openpyxl)")

    tracemalloc.start()
    import_and_apply(path, folder, "traced.db")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak Python heap during import + apply: {peak / 1e6:.1f} MB (tracemalloc)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process: {rss / 1024:.0f} MB")
    if not args.keep:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
