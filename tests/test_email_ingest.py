"""Email ingestion from a drop folder: real .eml files, the case files and the convention."""

from __future__ import annotations

import io
import os
import shutil
from email.message import EmailMessage

import openpyxl
import pytest

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import email_ingest as M
from riversync.node import staging as S
from riversync.protocol.keys import NodeEntry, Roster, User

DATA = os.path.join(os.path.dirname(__file__), "data")
SCHEMA_PATH = os.path.join(DATA, "staging_schema.toml")


@pytest.fixture
def node(tmp_path):
    nodes = {n: NodeEntry(n, n, bytes([i]) * 32) for i, n in enumerate(("north", "south"), 1)}
    roster = Roster("c", nodes, {"alice": User("alice", "north", "operator"),
                                 "bob": User("bob", "south", "operator")})
    schema = load_schema(SCHEMA_PATH)
    store = Store.open(str(tmp_path / "north.db"), schema, roster, "north", epoch=5)
    desk = S.StagingDesk(store, schema, S.load_import_options(SCHEMA_PATH))
    drop = tmp_path / "mail"
    drop.mkdir()
    yield desk, drop
    store.close()


def drop_case(drop, *names):
    for n in names:
        shutil.copy(os.path.join(DATA, n), drop / n)


def message_row(desk, batch_id):
    return desk.show(batch_id)["message"]


def test_c30_wrong_declared_charsets(node):
    desk, drop = node
    drop_case(drop, "C30-charset-mislabel.eml")
    rep = desk.ingest(str(drop))
    assert len(rep["staged"]) == 1 and rep["failed"] == []
    msg = message_row(desk, rep["staged"][0]["batch"])
    texts = [p["text"] for p in msg["parts"]]
    assert texts == ["Grüße aus Köln", "The customer’s order is confirmed",
                     "<p>Café Beispiel, Tisch 4</p>"]
    assert "charset_mismatch" in msg["flags"]
    raw = [r[0] for r in desk.staging.conn.execute(
        "SELECT raw FROM staging_parts WHERE batch_id=? ORDER BY part_no",
        (rep["staged"][0]["batch"],))]
    assert raw == [b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln", b"The customer\x92s order is confirmed",
                   b"<p>Caf\xe9 Beispiel, Tisch 4</p>"]
    stored = " ".join(texts)
    assert "Ã" not in stored and "\ufffd" not in stored


@pytest.mark.parametrize("name, flag", [
    ("C32-bad-date.eml", "date_invalid"),
    ("C32-blank-date.eml", "date_missing"),
    ("C32-impossible-date.eml", "date_invalid"),
    ("C32-no-date.eml", "date_missing"),
])
def test_c32_malformed_blank_or_missing_date(node, name, flag):
    desk, drop = node
    drop_case(drop, name)
    rep = desk.ingest(str(drop))
    assert len(rep["staged"]) == 1
    msg = message_row(desk, rep["staged"][0]["batch"])
    assert msg["sent_at"] is None
    assert flag in msg["flags"]
    assert msg["received_at"] == "2024-03-15T09:12:07Z"


def test_c32_all_four_in_one_run(node):
    desk, drop = node
    names = ["C32-bad-date.eml", "C32-blank-date.eml", "C32-impossible-date.eml",
             "C32-no-date.eml"]
    drop_case(drop, *names)
    rep = desk.ingest(str(drop))
    assert sorted(s["file"] for s in rep["staged"]) == names
    assert sorted(os.listdir(drop / "processed")) == names


def mail(body: str | None = None, *, subject="Registration", mid="<m1@club.example>",
         html: str | None = None, attach: tuple[str, bytes] | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = "Secretary <sec@club.example>"
    m["To"] = "north@office.example"
    m["Subject"] = subject
    m["Date"] = "Fri, 15 Mar 2024 10:00:00 +0100"
    if mid:
        m["Message-ID"] = mid
    if body is not None:
        m.set_content(body)
    if html is not None:
        if body is None:
            m.set_content(html, subtype="html")
        else:
            m.add_alternative(html, subtype="html")
    if attach:
        m.add_attachment(attach[1], maintype="application",
                         subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                         filename=attach[0])
    return bytes(m)


BODY = """Hello,

please register:

table: registrations
registration_id: R-1
player: Ada Example
paid: yes
registered on: 15/03/2024

registration_id: R-2
player: Ben Sample
paid: maybe

--
Club secretary
player: not a row
"""


def test_convention_key_value_rows_are_staged_and_checked(node):
    desk, drop = node
    (drop / "a.eml").write_bytes(mail(BODY))
    rep = desk.ingest(str(drop))
    bid = rep["staged"][0]["batch"]
    shown = desk.show(bid)
    assert shown["batch"]["table"] == "registrations"
    rows = shown["rows"]
    assert [r["key"] for r in rows] == ["R-1", "R-2"]
    assert rows[0]["status"] == "valid"
    assert rows[0]["values"] == {"registration_id": "R-1", "player": "Ada Example", "paid": True,
                                 "registered_on": "2024-03-15"}
    assert rows[1]["status"] == "invalid" and "yes or no" in str(rows[1]["errors"])
    # nothing reached the table; apply of the valid row does
    assert desk.store.count_rows("registrations") == 0
    desk.exclude(bid, [2])
    assert desk.apply(bid, user="alice")["batch"]["events"] == 1
    assert desk.store.get_row("registrations", "R-1")["player"] == "Ada Example"


def test_html_only_body_and_encoded_headers(node):
    desk, drop = node
    html = ("<html><body><p>table: registrations</p><p>registration_id: R-9<br>"
            "player: Zo&euml; Caf&eacute;</p></body></html>")
    raw = mail(None, html=html, subject="=?utf-8?q?Anmeldung_Z=C3=B6e?=")
    (drop / "h.eml").write_bytes(raw)
    rep = desk.ingest(str(drop))
    shown = desk.show(rep["staged"][0]["batch"])
    assert shown["message"]["subject"] == "Anmeldung Zöe"
    assert shown["rows"][0]["values"]["player"] == "Zoë Café"


def test_same_message_twice_stages_once_by_message_id_and_content(node):
    desk, drop = node
    raw = mail(BODY)
    (drop / "a.eml").write_bytes(raw)
    # a mail server's redelivery: one more Received line and another transfer encoding
    redelivered = (b"Received: from mx2.example by mx.office.example; "
                   b"Fri, 15 Mar 2024 10:05:00 +0100\r\n" + raw)
    (drop / "b.eml").write_bytes(redelivered)
    no_id = mail(BODY, mid=None)
    (drop / "c.eml").write_bytes(no_id)
    rep = desk.ingest(str(drop))
    assert [s["file"] for s in rep["staged"]] == ["a.eml", "c.eml"]
    assert [d["file"] for d in rep["duplicates"]] == ["b.eml"]
    (drop / "c-again.eml").write_bytes(no_id)
    rep2 = desk.ingest(str(drop))
    assert rep2["staged"] == [] and [d["file"] for d in rep2["duplicates"]] == ["c-again.eml"]
    assert len(desk.list()["batches"]) == 2
    # nothing deleted: every file is in processed/
    assert sorted(os.listdir(drop / "processed")) == ["a.eml", "b.eml", "c-again.eml", "c.eml"]


def test_size_limits_send_messages_to_failed_with_a_reason(node):
    desk, drop = node
    (drop / "big.eml").write_bytes(mail("x" * 5000, mid="<big@x>"))
    (drop / "att.eml").write_bytes(mail(BODY, mid="<att@x>", attach=("r.xlsx", b"0" * 3000)))
    (drop / "ok.eml").write_bytes(mail(BODY, mid="<ok@x>"))
    (drop / "empty.eml").write_bytes(b"")
    rep = M.ingest_folder(desk.staging, str(drop), desk.rules, desk.live, user="email",
                          max_message=4000, max_attachment=2000)
    failed = {f["file"]: f["code"] for f in rep.failed}
    assert failed == {"big.eml": "EMAIL_TOO_LARGE", "att.eml": "EMAIL_TOO_LARGE",
                      "empty.eml": "EMAIL_REFUSED"}
    assert sorted(os.listdir(drop / "failed")) == sorted(
        ["big.eml", "big.eml.reason.txt", "att.eml", "att.eml.reason.txt", "empty.eml",
         "empty.eml.reason.txt"])
    assert "limit" in (drop / "failed" / "big.eml.reason.txt").read_text()
    assert os.listdir(drop / "processed") == ["ok.eml"]
    assert len(desk.list()["batches"]) == 1
    assert desk.store.count_rows("registrations") == 0


def test_attached_workbook_goes_to_excel_staging(node):
    desk, drop = node
    wb = openpyxl.Workbook()
    wb.active.title = "Registrations"
    for r in (["Registration ID", "Player", "Paid"], ["R-10", "Cy", True], ["R-11", "Di", False]):
        wb.active.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    body = "table: registrations\n"
    (drop / "x.eml").write_bytes(mail(body, mid="<x@x>",
                                      attach=("Anmeldungen März.xlsx", buf.getvalue())))
    rep = desk.ingest(str(drop))
    att = rep["staged"][0]["attachments"]
    assert att[0]["staged"] and att[0]["file"] == "Anmeldungen März.xlsx"
    xb = desk.show(att[0]["batch"])
    assert xb["batch"]["kind"] == "xlsx"
    assert xb["batch"]["source"].endswith("/Anmeldungen März.xlsx")
    assert [r["key"] for r in xb["rows"]] == ["R-10", "R-11"]
    assert desk.store.count_rows("registrations") == 0



def _damaged_ole2() -> bytes:
    data = bytearray(512)
    data[:8] = bytes.fromhex("d0cf11e0a1b11ae1")
    data[30:32] = (0xFFFF).to_bytes(2, "little")  # a sector shift the format never allows
    data[44:48] = (1).to_bytes(4, "little")
    return bytes(data)


def test_an_unreadable_attachment_is_noted_and_the_folder_goes_on(node, monkeypatch):
    """A damaged attachment is a note on its message's batch, never a stop: the message is
    staged with its rows, the next messages are staged, every file moves to processed/."""
    desk, drop = node
    (drop / "0-bad.eml").write_bytes(mail(BODY, mid="<bad@x>", attach=("r.xlsx", _damaged_ole2())))
    (drop / "1-ok.eml").write_bytes(mail(BODY, mid="<ok@x>"))
    rep = desk.ingest(str(drop))
    assert [s["file"] for s in rep["staged"]] == ["0-bad.eml", "1-ok.eml"], rep
    att = rep["staged"][0]["attachments"][0]
    assert not att["staged"] and "legacy" in att["reason"], att
    batch = desk.show(rep["staged"][0]["batch"])["batch"]
    assert any("attachment r.xlsx not staged" in n for n in batch["notes"]), batch["notes"]
    assert sorted(os.listdir(drop / "processed")) == ["0-bad.eml", "1-ok.eml"]
    # A reader failing in a way nobody foresaw is caught at the same boundary.
    def broken(*a, **k):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(M, "import_xlsx", broken)
    (drop / "2-odd.eml").write_bytes(mail(BODY, mid="<odd@x>", attach=("s.xlsx", b"PK..")))
    rep = desk.ingest(str(drop))
    att = rep["staged"][0]["attachments"][0]
    assert not att["staged"] and "RecursionError" in att["reason"], att
    assert "2-odd.eml" in os.listdir(drop / "processed")

def test_rows_owned_elsewhere_are_invalid_in_email_too(node):
    desk, drop = node
    store = desk.store
    from riversync.protocol.messages import Create

    ev = Create(node="south", epoch=9, seq=1, hlc=1_710_496_800_000 << 16, schema=1,
                table="registrations", pk="R-1", user="bob", role="operator", admin=False,
                values={"player": "South player"})
    store.apply_remote([ev], now_ms=1_710_496_800_000)
    store.commit_local([LocalChange("create", "registrations", "R-2", {"player": "x"})],
                       user="alice", now_ms=1_710_496_801_000)
    (drop / "o.eml").write_bytes(mail(BODY, mid="<o@x>"))
    rep = desk.ingest(str(drop))
    rows = desk.show(rep["staged"][0]["batch"])["rows"]
    assert "owned by office south" in str(rows[0]["errors"])


def test_message_without_convention_is_staged_with_a_note(node):
    desk, drop = node
    (drop / "n.eml").write_bytes(mail("Just saying hello.", mid="<n@x>"))
    rep = desk.ingest(str(drop))
    b = desk.show(rep["staged"][0]["batch"])["batch"]
    assert "no_rows" in b["flags"] and b["table"] is None
    with pytest.raises(S.NothingToApply):
        desk.apply(b["id"], user="alice")
    assert S.backlog(desk.store)["email_pending"] == 1
