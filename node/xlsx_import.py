"""Excel import: a workbook sheet becomes one staging batch, one staging row per sheet row.

Theory of operation
-------------------
1. **Sniff by content, never by name.**  OLE2 bytes (``d0cf11e0``) are either an
   encrypted OOXML package (its directory has an ``EncryptionInfo`` stream) or a legacy
   Excel 97-2003 file; a zip must open and hold ``xl/workbook.xml``, and a member that
   fails its CRC check as it is read is damage; 0 bytes is an empty file.  Each refusal
   is a typed error with words for a clerk, is logged, and stages nothing.
2. **Pre-scan the sheet XML once** (streamed, in chunks) for what openpyxl's read-only
   mode does not expose: merged ranges, formula cells without a saved value, and the last
   row that holds any value.  The last point is what keeps a sheet whose used range was
   stretched to row 1,048,576 by formatting from being scanned to the end.
3. **Read rows in read-only mode** (bounded memory) with ``data_only=True`` so formulas
   give their cached values; the workbook's own epoch (1900 or 1904) converts dates.
4. **Map headers forgivingly** (case, spaces, NBSP, ``_``/``-``, order) to the table's
   columns, coerce each value with the column rule, check keys and unique values across
   the whole file, then ownership and uniqueness against live data.  Rows are written to
   staging in chunks; nothing touches a replicated table.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

import openpyxl
import openpyxl.reader.excel
from openpyxl.utils.cell import column_index_from_string as col_index
from openpyxl.utils.cell import get_column_letter as _col_letter
from openpyxl.utils.cell import range_boundaries
from openpyxl.worksheet._read_only import ReadOnlyWorksheet

from .staging import (
    FLAG_EXPORT_REIMPORT,
    LIVE_CHUNK,
    FileChecks,
    LiveView,
    ProgressFn,
    StagedRow,
    Staging,
    StagingError,
    TableRules,
    check_live_many,
    check_row,
)

log = logging.getLogger("riversync.staging")

OLE2_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
ZIP_MAGIC = b"PK\x03\x04"
META_SHEET = "_riversync"  # the export's metadata sheet; its presence marks an export
EXPORT_MARKER = "riversync export: do not re-import"
# Text a workbook cannot hold (XML 1.0 forbids most control characters) is written by the
# export in the OOXML escape form _xHHHH_, and a literal "_xHHHH_" gets its underscore
# escaped as _x005F_, so the form is reversible; re-importing an export un-escapes it.
# \r is escaped too, since XML readers turn it into \n.
_TO_ESCAPE = re.compile("_x[0-9A-Fa-f]{4}_|[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]")
_ESCAPED = re.compile("_x([0-9A-Fa-f]{4})_")


def escape_text(text: str) -> str:
    """``text`` in a form any workbook can hold (see _TO_ESCAPE); reversed by unescape_text."""
    return _TO_ESCAPE.sub(
        lambda m: "_x005F_" + m.group()[1:] if len(m.group()) > 1 else f"_x{ord(m.group()):04X}_",
        text)


def unescape_text(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)
MAX_FILE_BYTES = 100 * 1024 * 1024  # a workbook larger than this is refused before reading
MAX_HEADER_SCAN = 20  # the header row must be within the first 20 non-blank rows
MAX_BLANK_RUN = 10_000  # safety stop when the sheet's last value row is unknown
PROGRESS_EVERY = 1000  # rows between progress callbacks
SCAN_CHUNK = 1 << 20  # bytes of sheet XML read per pre-scan step
EXCEL_ERRORS = frozenset(
    {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA",
     "#SPILL!", "#CALC!"})


# What openpyxl and zipfile raise on a broken package (opening) or broken sheet XML (reading).
_OPEN_ERRORS = (zipfile.BadZipFile, zlib.error, KeyError, ParseError, EOFError, ValueError,
                TypeError, OSError)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ParseError, EOFError)


class XlsxRefused(StagingError):
    """The file cannot be read as an .xlsx workbook; nothing was staged."""

    code = "XLSX_REFUSED"
    http_status = 422


class XlsxEmpty(XlsxRefused):
    code = "XLSX_EMPTY"
    hint = "the upload has 0 bytes; save the workbook again and re-upload it"


class XlsxLegacy(XlsxRefused):
    code = "XLSX_LEGACY"
    hint = "open it in Excel or LibreOffice and save as Excel Workbook (.xlsx)"


class XlsxEncrypted(XlsxRefused):
    code = "XLSX_ENCRYPTED"
    hint = "open it in Excel, remove the password (File > Info > Protect Workbook) and re-upload"


class XlsxDamaged(XlsxRefused):
    code = "XLSX_DAMAGED"
    hint = "the file is damaged or incomplete; copy or download it again and re-upload"


class XlsxNotExcel(XlsxRefused):
    code = "XLSX_NOT_EXCEL"
    hint = "upload an Excel workbook (.xlsx or .xlsm)"


class XlsxTooLarge(XlsxRefused):
    code = "XLSX_TOO_LARGE"
    http_status = 413
    hint = "split the workbook into smaller files"


class XlsxNoSheet(XlsxRefused):
    code = "XLSX_NO_SHEET"
    hint = "name the sheet with --sheet; the error lists the sheets of the workbook"


class XlsxNoHeader(XlsxRefused):
    code = "XLSX_NO_HEADER"
    hint = "put a header row naming the table's columns above the data"


# ---------------------------------------------------------------------------------------
# sniffing


def sniff(path: str, name: str | None = None) -> str:
    """Refuse anything that is not a readable .xlsx; return the file's SHA-256 (hex).
    ``name`` is what messages call the file (an upload sits under a temporary name).

    Raises:
        XlsxEmpty, XlsxLegacy, XlsxEncrypted, XlsxDamaged, XlsxNotExcel, XlsxTooLarge.
    """
    name = name or os.path.basename(path)
    size = os.path.getsize(path)
    if size == 0:
        raise XlsxEmpty(f"{name}: empty file")
    if size > MAX_FILE_BYTES:
        raise XlsxTooLarge(f"{name}: {size} bytes is more than the {MAX_FILE_BYTES} byte limit")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if head == OLE2_MAGIC:
        streams = _ole2_streams(path)
        if streams & {"encryptioninfo", "encryptedpackage"}:
            raise XlsxEncrypted(f"{name}: password-protected; remove the password and re-upload")
        raise XlsxLegacy(f"{name}: legacy Excel 97–2003 format; save as .xlsx")
    if head[:4] != ZIP_MAGIC:
        raise XlsxNotExcel(f"{name}: not an Excel workbook")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "xl/workbook.xml" not in names:
                raise XlsxNotExcel(f"{name}: a zip archive, but not an Excel workbook")
            # Member CRCs are checked as the members are read, not in a separate pass.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise XlsxDamaged(f"{name}: file is damaged or incomplete") from e
    return digest.hexdigest()


def _ole2_streams(path: str) -> set[str]:
    """Names (case-folded) in an OLE2 compound file's directory.

    Reading the directory (not searching the bytes) is what tells an encrypted OOXML
    package from a legacy workbook that happens to contain the same words.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES)
    try:
        shift = struct.unpack_from("<H", data, 30)[0]
        if shift not in (9, 12):  # the format allows 512- or 4096-byte sectors only
            raise ValueError(f"sector shift {shift}")
        ssize = 1 << shift
        n_fat = struct.unpack_from("<I", data, 44)[0]
        first_dir = struct.unpack_from("<I", data, 48)[0]
        difat = list(struct.unpack_from("<109I", data, 76))[:n_fat]

        def sector(i: int) -> bytes:
            off = (i + 1) * ssize
            return data[off:off + ssize]

        fat: list[int] = []
        for s in difat:
            fat.extend(struct.unpack(f"<{ssize // 4}I", sector(s)))
        names: set[str] = set()
        s, seen = first_dir, 0
        while s < 0xFFFFFFFA and seen < 10_000:
            block = sector(s)
            for off in range(0, len(block) - 127, 128):
                nlen = struct.unpack_from("<H", block, off + 64)[0]
                if 2 <= nlen <= 64:
                    names.add(block[off:off + nlen - 2].decode("utf-16-le", "replace").casefold())
            s = fat[s] if s < len(fat) else 0xFFFFFFFE
            seen += 1
        return names
    except (struct.error, IndexError, ValueError):  # a damaged directory: search the bytes
        found = set()
        for n in ("EncryptionInfo", "EncryptedPackage", "Workbook", "Book"):
            if n.encode("utf-16-le") in data:
                found.add(n.casefold())
        return found


# ---------------------------------------------------------------------------------------
# pre-scan of the sheet XML


@dataclass
class SheetScan:
    merges: list[tuple[int, int, int, int]]  # (min_col, min_row, max_col, max_row)
    uncached: set[tuple[int, int]]  # (row, col) of formulas without a saved value
    last_value_row: int | None


_ROW_R = re.compile(rb'<(?:\w+:)?row\b[^>]*?\br="(\d+)"')
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Z]+\d+(?::[A-Z]+\d+)?)"')
_FORMULA = re.compile(rb"<(?:\w+:)?f[\s>/]")
_CELL_R = re.compile(rb'\br="([A-Z]+)(\d+)"')
_HAS_V = re.compile(rb"<(?:\w+:)?v>[^<]")
_VALUE_TAGS = (b"<v>", b":v>", b"<is>", b":is>")


def scan_sheet(z: zipfile.ZipFile, member: str) -> SheetScan:
    merges: list[tuple[int, int, int, int]] = []
    uncached: set[tuple[int, int]] = set()
    last: int | None = None
    tail = b""
    with z.open(member) as f:
        while True:
            chunk = f.read(SCAN_CHUNK)
            buf = tail + chunk
            if chunk:
                cut = buf.rfind(b"</row>")
                if cut < 0:
                    cut = buf.rfind(b":row>")
                if cut < 0:
                    tail = buf
                    continue
                cut += 6
                part, tail = buf[:cut], buf[cut:]
            else:
                part, tail = buf, b""
            last = _scan_part(part, merges, uncached, last)
            if not chunk:
                break
    return SheetScan(merges, uncached, last)


def _scan_part(part: bytes, merges: list, uncached: set, last: int | None) -> int | None:
    for m in _FORMULA.finditer(part):
        pos = m.start()
        start = max(part.rfind(b"<c ", 0, pos), part.rfind(b":c ", 0, pos))
        end = part.find(b"c>", pos)
        if start < 0 or end < 0:
            continue
        cell = part[start:end]
        if not _HAS_V.search(cell):
            r = _CELL_R.search(cell)
            if r:
                uncached.add((int(r.group(2)), col_index(r.group(1).decode())))
    for m in _MERGE.finditer(part):
        ref = m.group(1).decode()
        if ":" in ref:
            merges.append(range_boundaries(ref))
    p = max(part.rfind(t) for t in _VALUE_TAGS)
    if p >= 0:
        rows = list(_ROW_R.finditer(part, max(0, part.rfind(b"row", 0, p) - 8), p))
        if rows:
            last = int(rows[-1].group(1))
    return last


# ---------------------------------------------------------------------------------------
# header matching


def norm_header(text: object) -> str:
    """'Staff ID ', 'staff_id', 'Full\\u00a0Name' and ' REGION' all match their columns."""
    s = str(text).replace("\u00a0", " ").strip().casefold()
    return re.sub(r"[\s_\-]+", "_", s).strip("_")


def _header_map(rules: TableRules) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in rules.columns:
        for n in (c.name, *c.aliases):
            out.setdefault(norm_header(n), c.name)
    return out


def _blank(v: object) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


# ---------------------------------------------------------------------------------------
# import


@dataclass
class ImportResult:
    batch_id: int
    summary: dict


def pick_sheet(wb, rules: TableRules, sheet: str | None, name: str):
    names = [n for n in wb.sheetnames if n != META_SHEET]
    if sheet is not None:
        for n in wb.sheetnames:
            if n == sheet or norm_header(n) == norm_header(sheet):
                return wb[n]
        raise XlsxNoSheet(f"{name}: no sheet {sheet!r}; the workbook has {', '.join(names)}")
    for n in names:
        if norm_header(n) == norm_header(rules.name):
            return wb[n]
    if not names:
        raise XlsxNoSheet(f"{name}: the workbook has no data sheet")
    return wb[names[0]]


def import_xlsx(staging: Staging, path: str, rules: TableRules, live: LiveView, *, user: str,
                sheet: str | None = None, source: str | None = None,
                progress: ProgressFn | None = None, now: int | None = None) -> ImportResult:
    """Stage one sheet of a workbook.

    Raises:
        XlsxRefused (and subclasses): the file is refused; nothing was staged.
    """
    name = source or os.path.basename(path)
    try:
        sha = sniff(path, name)
        return _import(staging, path, name, sha, rules, live, user=user, sheet=sheet,
                       progress=progress, now=now)
    except XlsxRefused as e:
        log.warning("excel import refused: %s [%s]", e.message, e.code)
        raise


class _UnsizedSheet(ReadOnlyWorksheet):
    """A read-only sheet that skips openpyxl's size scan.

    openpyxl sizes every read-only sheet when the workbook opens; a sheet written without
    a leading ``<dimension>`` element (openpyxl's own write-only output, many generators)
    is parsed from end to end just for that.  The import does not use that size: its own
    pre-scan finds the last row holding a value.
    """

    def _get_size(self):  # noqa: D401 - deliberately nothing
        return None


_load_lock = threading.Lock()


def _load(path: str):
    """``openpyxl.load_workbook`` in read-only, data-only mode, with unsized sheets."""
    with _load_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about extensions it drops
        module = openpyxl.reader.excel
        original = getattr(module, "ReadOnlyWorksheet", None)
        if original is not ReadOnlyWorksheet:  # an openpyxl this was not written for
            return openpyxl.load_workbook(path, read_only=True, data_only=True, keep_vba=False)
        module.ReadOnlyWorksheet = _UnsizedSheet
        try:
            return openpyxl.load_workbook(path, read_only=True, data_only=True, keep_vba=False)
        finally:
            module.ReadOnlyWorksheet = original


def _import(staging: Staging, path: str, name: str, sha: str, rules: TableRules, live: LiveView,
            *, user: str, sheet: str | None, progress: ProgressFn | None,
            now: int | None) -> ImportResult:
    try:
        wb = _load(path)
    except _OPEN_ERRORS as e:
        raise XlsxDamaged(f"{name}: file is damaged or incomplete") from e
    batch_id = None
    try:
        ws = pick_sheet(wb, rules, sheet, name)
        flags: list[str] = []
        notes: list[str] = []
        if META_SHEET in wb.sheetnames:
            flags.append(FLAG_EXPORT_REIMPORT)
            notes.append("this file is a riversync export (a read-only snapshot); applying it "
                         "needs explicit confirmation")
        member = getattr(ws, "_worksheet_path", None)
        scan = SheetScan([], set(), None)
        if member:
            with zipfile.ZipFile(path) as z:
                scan = scan_sheet(z, member)
        epoch = wb.epoch
        ws.reset_dimensions()
        rows_iter = ws.iter_rows(min_row=1, max_row=scan.last_value_row, values_only=True)
        header_row, colmap, header_notes = _find_header(rows_iter, rules, name, ws.title)
        notes += header_notes
        if epoch.year == 1904:
            notes.append("the workbook uses the 1904 date system; serial dates read accordingly")
        batch_id = staging.create_batch(kind="xlsx", table=rules.name, source=name, sha256=sha,
                                        user=user, sheet=ws.title, flags=flags, notes=notes,
                                        created_ms=now)
        stats = collections.Counter()
        reasons: collections.Counter = collections.Counter()
        blank_rows: list[int] = []
        rows = _stage_rows(rows_iter, header_row, colmap, scan, rules, live, epoch, stats,
                           reasons, blank_rows, progress,
                           unescape=FLAG_EXPORT_REIMPORT in flags)
        staging.add_rows(batch_id, rows)
        summary = {
            "file": name, "sha256": sha, "sheet": ws.title, "table": rules.name,
            "rows_read": stats["read"], "staged": stats["staged"], "valid": stats["valid"],
            "invalid": stats["invalid"], "blank_skipped": len(blank_rows),
            "blank_rows": blank_rows[:50], "invalid_by_reason": dict(reasons.most_common()),
        }
        extra = []
        if stats["blank_stop"]:
            extra.append(f"reading stopped after {MAX_BLANK_RUN} blank rows in a row")
        staging.finish_batch(batch_id, summary, extra)
        return ImportResult(batch_id, summary)
    except _READ_ERRORS as e:  # the sheet's XML breaks off, or a member fails its CRC
        if batch_id is not None:
            staging.discard_batch(batch_id)
        raise XlsxDamaged(f"{name}: file is damaged or incomplete") from e
    except BaseException:
        if batch_id is not None:
            staging.discard_batch(batch_id)
        raise
    finally:
        wb.close()


def _find_header(rows_iter: Iterator[tuple], rules: TableRules, name: str, title: str):
    wanted = _header_map(rules)
    key_norm = {norm_header(n) for n in (rules.key, *(rules.column(rules.key).aliases))}
    seen = 0
    for row_no, values in enumerate(rows_iter, start=1):
        if all(_blank(v) for v in values):
            continue
        seen += 1
        normed = [norm_header(v) if not _blank(v) else "" for v in values]
        if key_norm & set(normed):
            colmap: dict[int, str] = {}
            notes = []
            for i, (raw, h) in enumerate(zip(values, normed, strict=True)):
                if not h:
                    continue
                col = wanted.get(h)
                if col is None:
                    notes.append(f"column {raw!r} is not in table {rules.name} and was ignored")
                elif col in colmap.values():
                    notes.append(f"column {raw!r} appears twice; the first one is used")
                else:
                    colmap[i] = col
            missing = [c.name for c in rules.columns if c.name not in colmap.values()]
            if missing:
                needed = [c.name for c in rules.columns if c.required and c.name in missing]
                notes.append(f"the sheet has no column for: {', '.join(missing)}" + (
                    f" (rows for existing keys keep their values there; new rows need "
                    f"{', '.join(needed)})" if needed else ""))
            return row_no, colmap, notes
        if seen >= MAX_HEADER_SCAN:
            break
    if seen == 0:
        raise XlsxNoHeader(f"{name}: sheet {title!r} is empty")
    raise XlsxNoHeader(
        f"{name}: no header row in sheet {title!r} names the key column {rules.key!r} "
        f"(looked at the first {MAX_HEADER_SCAN} non-blank rows)")


def _reason_key(column: str, message: str) -> str:
    generic = re.sub(r"'[^']*'|[^\s()]*\d[^\s()]*", "…", message)  # brackets stay paired
    return f"{column}: {generic}" if column else generic


def _stage_rows(rows_iter, header_row: int, colmap: dict[int, str], scan: SheetScan,
                rules: TableRules, live: LiveView, epoch, stats, reasons, blank_rows,
                progress, *, unescape: bool = False) -> Iterator[StagedRow]:
    checks = FileChecks(rules)
    merges = [m for m in scan.merges if m[3] > header_row]
    anchors: dict[tuple[int, int], object] = {}
    anchor_of: dict[tuple[int, int], tuple[int, int, str]] = {}
    for min_col, min_row, max_col, max_row in merges:
        ref = f"{_col_letter(min_col)}{min_row}:{_col_letter(max_col)}{max_row}"
        for r in range(min_row, max_row + 1):
            for c in range(min_col, max_col + 1):
                if (r, c) != (min_row, min_col):
                    anchor_of[(r, c)] = (min_row, min_col, ref)
    anchor_cells = {(m[1], m[0]) for m in merges}
    blank_run = 0
    pending: list[StagedRow] = []
    special = bool(anchor_of) or bool(scan.uncached)  # most sheets have neither
    cols = list(colmap.items())
    read = 0
    for row_no, values in enumerate(rows_iter, start=header_row + 1):
        read += 1
        if progress and read % PROGRESS_EVERY == 0:
            progress(read)
        if anchor_cells:
            for (r, c) in anchor_cells:
                if r == row_no and c - 1 < len(values):
                    anchors[(r, c)] = values[c - 1]
        if all(v is None or (type(v) is str and not v.strip()) for v in values):
            blank_rows.append(row_no)
            blank_run += 1
            if scan.last_value_row is None and blank_run >= MAX_BLANK_RUN:
                stats["blank_stop"] += 1
                break
            continue
        blank_run = 0
        row = StagedRow(row_no, {})
        raw: dict[str, object] = {}
        n = len(values)
        for i, col in cols:
            v = values[i] if i < n else None
            if special:
                pos = (row_no, i + 1)
                if v is None and pos in anchor_of:
                    ar, ac, ref = anchor_of[pos]
                    v = anchors.get((ar, ac))
                    if v is not None:
                        row.notes.append(f"{col}: filled from merged cells {ref}")
                if pos in scan.uncached:
                    row.error(col, f"cell {_col_letter(i + 1)}{row_no} is a formula with no "
                                   "saved value; open the file in Excel, save it and upload it "
                                   "again")
                    continue
            if type(v) is str and v in EXCEL_ERRORS:
                row.error(col, f"cell {_col_letter(i + 1)}{row_no} is a formula error {v}")
                continue
            if unescape and type(v) is str and "_x" in v:
                v = unescape_text(v)
            raw[col] = v
        check_row(rules, raw, row, epoch=epoch)
        checks.check(row)
        pending.append(row)
        if len(pending) >= LIVE_CHUNK:
            yield from _finish(rules, pending, live, stats, reasons)
            pending = []
    yield from _finish(rules, pending, live, stats, reasons)
    stats["read"] = read
    if progress:
        progress(read)


def _finish(rules: TableRules, rows: list[StagedRow], live: LiveView, stats, reasons):
    """Check a chunk of rows against live data (bulk lookups) and count the outcome."""
    check_live_many(rules, [r for r in rows if r.key is not None and not any(
        e["column"] == rules.key for e in r.errors)], live)
    for row in rows:
        stats["staged"] += 1
        if row.valid:
            stats["valid"] += 1
        else:
            stats["invalid"] += 1
            for e in row.errors:
                reasons[_reason_key(e["column"], e["message"])] += 1
    return rows


__all__ = [
    "EXPORT_MARKER", "META_SHEET", "escape_text", "unescape_text", "ImportResult", "XlsxDamaged", "XlsxEmpty", "XlsxEncrypted",
    "XlsxLegacy", "XlsxNoHeader", "XlsxNoSheet", "XlsxNotExcel", "XlsxRefused", "XlsxTooLarge",
    "import_xlsx", "norm_header", "scan_sheet", "sniff",
]
