"""Email ingestion: ``.eml`` files dropped in a folder become staging batches.

Theory of operation
-------------------
``ingest_folder`` takes every ``*.eml`` directly in the drop folder, oldest name first.
Each file is read as bytes and parsed with the standard ``email`` package
(``policy.default``).  A message is identified by its Message-ID (or by ``sha256:`` of
its bytes when it has none) together with a hash of its content (each part's type, file
name and decoded bytes): a message already staged is not staged again (a mail server's
redelivery, or the same file dropped twice), while a *different* message that reuses a
Message-ID already seen is staged and flagged ``reused_message_id`` so an operator
looks at both.  Rows beyond ``MAX_ROWS_PER_MESSAGE`` are not staged; the batch is flagged
``rows_truncated`` and the ingest result says how many were left out.

The message, each part's raw bytes and its decoded text are stored in staging; rows
found in the body by the message convention (docs/how-to/email.md) become staging rows,
checked like Excel rows; an attached ``.xlsx`` goes through the Excel import as a batch
of its own.  Only after the staging commit is the file moved to ``processed/``, so a
crash in between leaves the file in place and the next run recognises it as already
staged.  A message that cannot be staged (too large, an attachment over the limit,
unreadable) moves to ``failed/`` next to a ``<name>.reason.txt``.  Nothing is deleted.

Charsets: declared charsets are often wrong.  Valid multi-byte UTF-8 wins over a
single-byte label; bytes that are not valid UTF-8 under a UTF-8 label fall back to
Windows-1252; either case flags the message ``charset_mismatch``.  The raw bytes are
always kept, so a wrong guess can be corrected later.
"""

from __future__ import annotations

import codecs
import datetime as dt
import email.utils
import hashlib
import html.parser
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from riversync.engine.db import transaction

from .staging import (
    FileChecks,
    LiveView,
    StagedRow,
    Staging,
    StagingError,
    TableRules,
    _j,
    check_live,
    check_row,
    content_hash,
)
from .xlsx_import import XlsxRefused, import_xlsx, norm_header

log = logging.getLogger("riversync.staging")

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # what common mail servers accept; larger is refused
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # one attachment; a bigger one fails the message
MAX_ROWS_PER_MESSAGE = 500  # key-value rows in one body; more belongs in an .xlsx
PROCESSED, FAILED_DIR = "processed", "failed"
SINGLE_BYTE = {"us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "iso-8859-15",
               "windows-1252", "cp1252"}

FLAG_CHARSET = "charset_mismatch"
FLAG_CHARSET_MISSING = "charset_missing"
FLAG_DATE_INVALID = "date_invalid"
FLAG_DATE_MISSING = "date_missing"
FLAG_NO_TABLE = "no_table"
FLAG_NO_ROWS = "no_rows"
FLAG_REUSED_ID = "reused_message_id"
FLAG_TRUNCATED = "rows_truncated"


class MessageRefused(StagingError):
    """A message that cannot be staged; it moves to failed/ with this reason."""

    code = "EMAIL_REFUSED"
    http_status = 422
    hint = "see failed/<name>.reason.txt; fix the message and drop it in the folder again"


class MessageTooLarge(MessageRefused):
    code = "EMAIL_TOO_LARGE"
    http_status = 413
    hint = "send large data as a smaller .xlsx attachment, or split it over several messages"


# ---------------------------------------------------------------------------------------
# decoding


def decode_text(raw: bytes, declared: str | None) -> tuple[str, str, bool]:
    """(text, charset used, mismatch) for a text part's bytes and its declared charset."""
    label = (declared or "").strip().lower() or None
    try:
        text = raw.decode("ascii")
        return text, "us-ascii", False
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
        return text, "utf-8", label is not None and _canon(label) != "utf-8"
    except UnicodeDecodeError:
        pass
    if label and _canon(label) not in ("utf-8", None) and label not in SINGLE_BYTE:
        try:
            return raw.decode(label), label, False
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        text = raw.decode("cp1252")
        used = "windows-1252"
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        used = "iso-8859-1"
    mismatch = label is not None and label not in SINGLE_BYTE
    return text, used, mismatch


def _canon(label: str) -> str | None:
    try:
        return codecs.lookup(label).name.replace("_", "-")
    except LookupError:
        return None


class _HtmlText(html.parser.HTMLParser):
    BREAKS = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        if tag in self.BREAKS:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        if tag in self.BREAKS:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    p = _HtmlText()
    p.feed(markup)
    p.close()
    return re.sub(r"[ \t\u00a0]+", " ", "".join(p.out))


def _parse_date(value: str) -> dt.datetime | None:
    try:
        d = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.astimezone(dt.UTC)


def _iso(d: dt.datetime | None) -> str | None:
    return None if d is None else d.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# the message convention


@dataclass
class ParsedMessage:
    key: str
    sha256: str
    subject: str | None
    sender: str | None
    sent_at: str | None
    received_at: str | None
    flags: list[str]
    parts: list[dict]  # content_type, declared_charset, used_charset, filename, raw, text
    body: str  # the text the convention reads
    attachments: list[tuple[str, bytes]]
    raw: bytes = b""
    content_sha256: str = ""  # what the message carries, headers aside (see content_hash)


_KV = re.compile(r"^\s*([A-Za-z][\w \u00a0\-]{0,62}?)\s*[:=]\s*(.*?)\s*$")


def parse_message(raw: bytes, *, max_attachment: int = MAX_ATTACHMENT_BYTES) -> ParsedMessage:
    """Everything staging keeps of one message.  Never raises on odd headers or bodies.

    Raises:
        MessageTooLarge: an attachment is over the limit.
    """
    sha = hashlib.sha256(raw).hexdigest()
    msg: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)
    flags: list[str] = []
    mid = _header(msg, "Message-ID")
    mid = mid.strip().strip("<>").strip() if mid else ""
    key = mid if mid else f"sha256:{sha}"
    date_raw = _header(msg, "Date")
    sent = None
    if date_raw is None or not date_raw.strip():
        flags.append(FLAG_DATE_MISSING)
    else:
        sent = _parse_date(date_raw.strip())
        if sent is None:
            flags.append(FLAG_DATE_INVALID)
    received = None
    try:
        hops = msg.get_all("Received") or []
    except Exception:  # noqa: BLE001 - a broken header must not stop staging
        hops = []
    if hops:
        top = str(hops[0])
        if ";" in top:
            received = _parse_date(top.rsplit(";", 1)[1].strip())
    parts: list[dict] = []
    attachments: list[tuple[str, bytes]] = []
    plain: list[str] = []
    htmls: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        payload = part.get_payload(decode=True) or b""
        filename = _safe(lambda p=part: p.get_filename())
        declared = _safe(lambda p=part: p.get_content_charset())
        is_attachment = filename is not None or _safe(lambda p=part: p.is_attachment())
        text = None
        used = None
        if ctype.startswith("text/") and not is_attachment:
            text, used, mismatch = decode_text(payload, declared)
            if mismatch and FLAG_CHARSET not in flags:
                flags.append(FLAG_CHARSET)
            if declared is None and used not in ("us-ascii",) and FLAG_CHARSET_MISSING not in flags:
                flags.append(FLAG_CHARSET_MISSING)
            (htmls if ctype == "text/html" else plain).append(text)
        elif is_attachment:
            if len(payload) > max_attachment:
                raise MessageTooLarge(
                    f"attachment {filename or '(unnamed)'} is {len(payload)} bytes; the limit "
                    f"is {max_attachment}")
            attachments.append((filename or f"part-{len(parts) + 1}", payload))
        parts.append({"content_type": ctype, "declared_charset": declared,
                      "used_charset": used, "filename": filename, "raw": payload, "text": text})
    body = "\n".join(plain) if plain else "\n".join(html_to_text(h) for h in htmls)
    return ParsedMessage(
        key=key, sha256=sha, subject=_header(msg, "Subject"), sender=_header(msg, "From"),
        sent_at=_iso(sent), received_at=_iso(received), flags=flags, parts=parts, body=body,
        attachments=attachments, raw=raw,
        content_sha256=content_hash((p["content_type"], p["filename"], p["raw"]) for p in parts))


def _header(msg: EmailMessage, name: str) -> str | None:
    try:
        v = msg.get(name)
    except Exception:  # noqa: BLE001 - policy.default may fail on a malformed header
        v = None
        for k, raw in msg.raw_items():
            if k.lower() == name.lower():
                v = str(raw)
                break
    return None if v is None else str(v)


def _safe(fn: Callable):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a malformed MIME parameter must not stop staging
        return None


def read_convention(body: str) -> tuple[str | None, list[dict[str, str]]]:
    """(table, rows) from key-value lines; a blank line or ``---`` ends a row.

    Quoted lines (``>``) and everything after a signature line (``-- ``) are ignored.
    """
    table = None
    rows: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in body.splitlines():
        if line.rstrip() == "--" or line.startswith("-- "):
            break
        if line.lstrip().startswith(">"):
            continue
        if not line.strip() or line.strip() == "---":
            if current:
                rows.append(current)
                current = {}
            continue
        m = _KV.match(line)
        if not m:
            continue
        k, v = norm_header(m.group(1)), m.group(2)
        if k == "table" and table is None:
            table = norm_header(v)
            continue
        current.setdefault(k, v)
    if current:
        rows.append(current)
    return table, rows


# ---------------------------------------------------------------------------------------
# ingestion


@dataclass
class IngestReport:
    staged: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"staged": self.staged, "duplicates": self.duplicates, "failed": self.failed}


RulesFor = Callable[[str], TableRules]


def ingest_folder(staging: Staging, folder: str, rules_for: RulesFor, live: LiveView, *,
                  user: str, max_message: int = MAX_MESSAGE_BYTES,
                  max_attachment: int = MAX_ATTACHMENT_BYTES,
                  now: int | None = None) -> IngestReport:
    """Stage every ``*.eml`` in ``folder``; move each to processed/ or failed/.

    ``rules_for(table)`` returns the staging rules of a table or raises StagingError.
    """
    report = IngestReport()
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(".eml") and os.path.isfile(os.path.join(folder, n)))
    for name in names:
        path = os.path.join(folder, name)
        try:
            outcome = ingest_file(staging, path, rules_for, live, user=user,
                                  max_message=max_message, max_attachment=max_attachment,
                                  now=now)
        except MessageRefused as e:
            _move(path, folder, FAILED_DIR, reason=f"{e.code}: {e.message}\nTry: {e.hint}\n")
            log.warning("email %s failed: %s [%s]", name, e.message, e.code)
            report.failed.append({"file": name, "code": e.code, "reason": e.message})
            continue
        except Exception as e:  # noqa: BLE001 - one message must not stop the others
            # Left in the folder, not moved to failed/: the cause may be the node's (a full
            # disk), and the next run tries it again.
            log.exception("email %s could not be staged; it stays in the drop folder", name)
            report.failed.append({"file": name, "code": "INTERNAL",
                                  "reason": f"{type(e).__name__}: {e}; the file stays in the "
                                            "drop folder and is tried again"})
            continue
        _move(path, folder, PROCESSED)
        (report.duplicates if outcome.get("duplicate") else report.staged).append(outcome)
    return report


def pending_files(folder: str) -> int:
    """How many messages wait in the drop folder (the email backlog)."""
    try:
        return sum(1 for n in os.listdir(folder) if n.lower().endswith(".eml"))
    except FileNotFoundError:
        return 0


def ingest_file(staging: Staging, path: str, rules_for: RulesFor, live: LiveView, *,
                user: str, max_message: int = MAX_MESSAGE_BYTES,
                max_attachment: int = MAX_ATTACHMENT_BYTES, now: int | None = None) -> dict:
    """Stage one message file (the file itself is not moved here).

    Raises:
        MessageRefused: too large, an attachment over the limit, or unreadable.
    """
    name = os.path.basename(path)
    size = os.path.getsize(path)
    if size > max_message:
        raise MessageTooLarge(f"{name} is {size} bytes; the limit is {max_message}")
    if size == 0:
        raise MessageRefused(f"{name} is empty")
    with open(path, "rb") as f:
        raw = f.read()
    msg = parse_message(raw, max_attachment=max_attachment)
    same, others = _staged_as(staging, msg.key, msg.content_sha256)
    if same is not None:
        return {"file": name, "message": msg.key, "batch": same, "duplicate": True}
    table, kv_rows = read_convention(msg.body)
    flags = list(msg.flags)
    notes: list[str] = []
    if others:
        flags.append(FLAG_REUSED_ID)
        notes.append(f"Message-ID {msg.key} was already used by a different message (batch "
                     f"{', '.join(map(str, others))}); this one was staged too: check both")
    rules = None
    if table is not None:
        try:
            rules = rules_for(table)
        except StagingError as e:
            notes.append(f"table line names {table!r}: {e.message}")
    elif kv_rows:
        flags.append(FLAG_NO_TABLE)
        notes.append("the body has key-value lines but no 'table:' line")
    rows: list[StagedRow] = []
    left_out = 0
    if rules is not None:
        rows = _check_rows(rules, kv_rows[:MAX_ROWS_PER_MESSAGE], live)
        if len(kv_rows) > MAX_ROWS_PER_MESSAGE:
            left_out = len(kv_rows) - MAX_ROWS_PER_MESSAGE
            flags.append(FLAG_TRUNCATED)
            notes.append(f"only the first {MAX_ROWS_PER_MESSAGE} of {len(kv_rows)} rows were "
                         f"read ({left_out} left out); send the rest as an .xlsx attachment")
    if not rows and not msg.attachments:
        flags.append(FLAG_NO_ROWS)
        notes.append("no staging rows found in the message; see docs/how-to/email.md")
    batch_id = _store(staging, msg, name, rows, rules, flags, notes, user, now, left_out)
    result = {"file": name, "message": msg.key, "batch": batch_id, "rows": len(rows),
              "rows_left_out": left_out, "flags": flags, "attachments": []}
    if others:
        result["message_id_batches"] = others  # earlier, different messages with this id
    for fname, data in msg.attachments:
        result["attachments"].append(
            _stage_attachment(staging, batch_id, msg.key, fname, data, table, rules_for,
                              live, user, now))
    return result


def _staged_as(staging: Staging, key: str, content: str) -> tuple[int | None, list[int]]:
    """(batch of this very message, or None; batches of other messages under its key)."""
    same = None
    others = []
    for bid, sha in staging.conn.execute(
            "SELECT batch_id, content_sha256 FROM staging_messages WHERE message_key=?"
            " ORDER BY batch_id", (key,)):
        if sha == content:
            same = bid
        else:
            others.append(bid)
    return same, others


def _check_rows(rules: TableRules, kv_rows: list[dict[str, str]], live: LiveView):
    wanted: dict[str, str] = {}
    for c in rules.columns:
        for n in (c.name, *c.aliases):
            wanted.setdefault(norm_header(n), c.name)
    checks = FileChecks(rules)
    out = []
    for kv in kv_rows:
        raw = {}
        row = StagedRow(len(out) + 1, {})  # rows are numbered as staged: item 1, 2, ...
        for k, v in kv.items():
            col = wanted.get(k)
            if col is None:
                row.notes.append(f"line {k!r} is not a column of {rules.name}; ignored")
            else:
                raw[col] = v
        if not raw:
            continue
        check_row(rules, raw, row)
        checks.check(row)
        if row.key is not None and not any(e["column"] == rules.key for e in row.errors):
            check_live(rules, row, live)
        out.append(row)
    return out


def _store(staging: Staging, msg: ParsedMessage, name: str, rows: list[StagedRow],
           rules: TableRules | None, flags: list[str], notes: list[str], user: str,
           now: int | None, left_out: int = 0) -> int:
    with transaction(staging.conn):
        batch_id = staging.create_batch(
            kind="email", table=rules.name if rules else None, source=f"email:{msg.key}",
            sha256=msg.sha256, user=user, flags=flags, notes=notes, created_ms=now)
        staging.add_rows(batch_id, rows)
        staging.conn.execute(
            "INSERT INTO staging_messages(message_key, content_sha256, batch_id, file_name,"
            " sha256, subject, sender, sent_at, received_at, flags, raw)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (msg.key, msg.content_sha256, batch_id, name, msg.sha256, msg.subject, msg.sender,
             msg.sent_at, msg.received_at, _j(flags), msg.raw))
        staging.conn.executemany(
            "INSERT INTO staging_parts(batch_id, part_no, content_type, declared_charset,"
            " used_charset, filename, raw, text) VALUES (?,?,?,?,?,?,?,?)",
            [(batch_id, i, p["content_type"], p["declared_charset"], p["used_charset"],
              p["filename"], p["raw"], p["text"]) for i, p in enumerate(msg.parts, start=1)])
        valid = sum(1 for r in rows if r.valid)
        staging.finish_batch(batch_id, {
            "file": name, "message": msg.key, "subject": msg.subject, "sender": msg.sender,
            "sent_at": msg.sent_at, "received_at": msg.received_at, "rows": len(rows),
            "valid": valid, "invalid": len(rows) - valid, "rows_left_out": left_out,
            "parts": len(msg.parts),
            "attachments": [a[0] for a in msg.attachments]})
    return batch_id


def _stage_attachment(staging: Staging, batch_id: int, key: str, fname: str, data: bytes,
                      table: str | None, rules_for: RulesFor, live: LiveView, user: str,
                      now: int | None) -> dict:
    if not fname.lower().endswith((".xlsx", ".xlsm")):
        return {"file": fname, "staged": False, "reason": "not an Excel workbook; kept as a part"}
    try:
        if table is None:
            raise StagingError("the message has no 'table:' line naming the attachment's table")
        rules = rules_for(table)
        with tempfile.TemporaryDirectory(prefix="riversync-mail-") as tmp:
            path = os.path.join(tmp, "attachment.xlsx")
            with open(path, "wb") as f:
                f.write(data)
            res = import_xlsx(staging, path, rules, live, user=user,
                              source=f"email:{key}/{fname}", now=now)
    except (XlsxRefused, StagingError) as e:
        return _attachment_not_staged(staging, batch_id, fname, e.message)
    except Exception as e:  # noqa: BLE001 - a hostile attachment must not stop the message
        # The message's own batch is already committed: the attachment's failure is noted on
        # it, so it is never lost silently and the drop folder goes on.
        log.exception("email %s: attachment %s could not be read", key, fname)
        return _attachment_not_staged(
            staging, batch_id, fname, f"the workbook could not be read ({type(e).__name__}); "
            "open it in Excel, save it again and send or import it on its own")
    b = staging.batch(batch_id)
    staging.finish_batch(batch_id, b.summary,
                         [f"attachment {fname} staged as Excel batch {res.batch_id}"])
    return {"file": fname, "staged": True, "batch": res.batch_id}


def _attachment_not_staged(staging: Staging, batch_id: int, fname: str, why: str) -> dict:
    b = staging.batch(batch_id)
    staging.finish_batch(batch_id, b.summary, [f"attachment {fname} not staged: {why}"])
    return {"file": fname, "staged": False, "reason": why}


def _move(path: str, folder: str, sub: str, reason: str | None = None) -> str:
    dest_dir = os.path.join(folder, sub)
    os.makedirs(dest_dir, exist_ok=True)
    base = os.path.basename(path)
    dest = os.path.join(dest_dir, base)
    n = 1
    while os.path.exists(dest):
        dest = os.path.join(dest_dir, f"{base}.{n}")
        n += 1
    if reason is not None:
        with open(dest + ".reason.txt", "w", encoding="utf-8") as f:
            f.write(reason)
            f.flush()
            os.fsync(f.fileno())
    os.replace(path, dest)
    return dest
