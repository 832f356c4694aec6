"""Benchmark: import and apply a large workbook, against openpyxl's own read-only read.

Run:  .venv/bin/python bench/bench_import.py [--rows 50000] [--keep DIR]

It writes a workbook of ``--rows`` customer rows (text ids, names, unique VAT numbers,
integer limits, dates, phones with leading zeros), then in the same process measures:

1. openpyxl alone: ``load_workbook(read_only=True, data_only=True)`` and iterate every row
   (values only) -- the floor any importer built on openpyxl pays;
2. ``import_xlsx`` into staging (sniff, pre-scan, read, check every row, store it);
3. ``apply`` of the whole batch through ``Store.commit_local`` (one transaction).

It prints rows per second for each (CPU time of the process by default, ``--wall`` for
wall-clock time), the import/openpyxl ratio (target at least 0.5) and
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
# CPU time of this process: on a machine shared with other work, wall-clock figures swing
# by 2x between runs; CPU time is what the code itself costs.  --wall switches back.
CLOCK = time.process_time


def write_workbook(path: str, rows: int, dimension: bool = False) -> None:
    """Write-only mode (no ``<dimension>`` element, as many generators write), or with
    ``dimension`` the normal mode, which puts it first, as Excel does."""
    wb = openpyxl.Workbook(write_only=not dimension)
    if dimension:
        ws = wb.active
        ws.title = "customers"
    else:
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


def openpyxl_read_cells(path: str) -> int:
    """The same read with cell objects (``ws.rows``), the form most importers use."""
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    n = 0
    for row in wb["customers"].iter_rows(min_row=2):
        n += len([c.value for c in row]) > 0
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
        t0 = CLOCK()
        res = desk.import_xlsx(path, "customers", user="op")
        t1 = CLOCK()
        applied = desk.apply(res["batch"]["id"], user="op")
        t2 = CLOCK()
        assert applied["batch"]["events"] == res["summary"]["valid"]
        return t1 - t0, t2 - t1, res["summary"]
    finally:
        desk.store.close()


def fmt(xs: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in xs) + " s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    ap.add_argument("--keep", default=None, help="write files here instead of a temp dir")
    ap.add_argument("--wall", action="store_true", help="measure wall-clock time instead")
    ap.add_argument("--dimension", action="store_true",
                    help="write the workbook as Excel does, with its <dimension> up front")
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    folder = args.keep or tempfile.mkdtemp(prefix="riversync-bench-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"customers-{args.rows}.xlsx")
    t = time.perf_counter()
    write_workbook(path, args.rows, args.dimension)
    print(f"workbook ({'with' if args.dimension else 'without'} <dimension>): {args.rows} rows, {os.path.getsize(path) / 1e6:.1f} MB, "
          f"written in {time.perf_counter() - t:.1f} s")

    # Alternate the measurements and keep the best of each: on a shared machine the
    # minimum is the figure least disturbed by other processes.
    base, imp, app = [], [], []
    for i in range(args.repeat):
        t = CLOCK()
        n = openpyxl_read(path)
        base.append(CLOCK() - t)
        assert n == args.rows
        imp_s, apply_s, summary = import_and_apply(path, folder, f"timed{i}.db")
        assert summary["valid"] == args.rows, summary
        imp.append(imp_s)
        app.append(apply_s)
    base_s, imp_s, apply_s = min(base), min(imp), min(app)
    t = CLOCK()
    openpyxl_read_cells(path)
    cells_s = CLOCK() - t
    rate = lambda s: args.rows / s  # noqa: E731
    print(f"{'wall-clock' if args.wall else 'CPU'} time, best of {args.repeat} runs (all runs: openpyxl {fmt(base)}, import {fmt(imp)}, "
          f"apply {fmt(app)})")
    print(f"openpyxl read-only read : {base_s:6.2f} s  {rate(base_s):9.0f} rows/s"
          "  (values only: the baseline)")
    print(f"  same, with cell objects: {cells_s:6.2f} s  {rate(cells_s):9.0f} rows/s"
          "  (for context)")
    print(f"import into staging     : {imp_s:6.2f} s  {rate(imp_s):9.0f} rows/s  "
          f"({rate(imp_s) / rate(base_s):.2f}x openpyxl)")
    print(f"apply (one transaction) : {apply_s:6.2f} s  {rate(apply_s):9.0f} rows/s")
    both = imp_s + apply_s
    print(f"import + apply          : {both:6.2f} s  {rate(both):9.0f} rows/s  "
          f"({rate(both) / rate(base_s):.2f}x openpyxl; target 0.5x)")

    desk = new_desk(folder, "traced.db")
    try:
        tracemalloc.start()
        res = desk.import_xlsx(path, "customers", user="op")
        _, peak_import = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        desk.apply(res["batch"]["id"], user="op")
        _, peak_apply = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        desk.store.close()
    print(f"peak Python heap: import {peak_import / 1e6:.1f} MB (streamed, bounded), "
          f"apply {peak_apply / 1e6:.1f} MB (one transaction holds every change)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process: {rss / 1024:.0f} MB")
    if not args.keep:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
