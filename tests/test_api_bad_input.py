"""Hostile input at a real node: control characters in keys, text an export must survive,
strict booleans, and inputs that used to be 500s.  Each refusal is typed and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from riversync.engine.schema import load_schema
from riversync.node.client import NodeRefused
from riversync.node.localcluster import LocalCluster
from riversync.node.xlsx_import import escape_text, unescape_text

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("fixin") / "c", ["north", "south"], schema=SCHEMA,
                     sync_interval_s=1, realtime=True).create()
    try:
        c.start_all()
        c.client("north", "north-clerk").post("/v1/tables/players/rows",
                                              {"pk": "P-1", "values": {"full_name": "Kim"}})
        yield c
    finally:
        c.stop_all()


def raw(c, method: str, path: str, body: bytes | None = None, user: str = "north-clerk"):
    req = urllib.request.Request(c.node_url("north") + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {c.tokens[user]}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def snapshot(c) -> tuple:
    d = c.digests("north")
    audit = c.client("north").get("/v1/audit?limit=1000")["audit"]
    return d["state"], d["events"], len(audit)


BAD_KEYS = ["x\u0000y", "   ", " P-2", "P-2 ", "P\n3", "P\u00074", "P\u2028"]


@pytest.mark.parametrize("pk", BAD_KEYS)
def test_a_key_with_control_characters_or_edge_spaces_is_bad_value(cluster, pk):
    before = snapshot(cluster)
    status, body = raw(cluster, "POST", "/v1/tables/players/rows",
                       json.dumps({"pk": pk, "values": {"full_name": "A"}}).encode())
    assert (status, body["error"]["code"]) == (400, "BAD_VALUE")
    assert "primary key" in body["error"]["message"]
    assert snapshot(cluster) == before


def test_the_key_rule_is_one_pure_function_shared_by_replay():
    """merge.static_verdict (remote replay) parks what a local commit refuses."""
    from riversync.engine.merge import static_verdict
    from riversync.protocol.messages import Create

    schema = load_schema(SCHEMA)
    for pk in BAD_KEYS:
        ev = Create(node="south", epoch=1, seq=1, hlc=1 << 16, schema=schema.version,
                    table="players", pk=pk, user="south-clerk", role="clerk", admin=False,
                    values={"full_name": "A"})
        v = static_verdict(ev, schema)
        assert v is not None and v.status == "parked" and "primary key" in v.cause


BAD_BODIES = [
    # path, body, status, code
    ("/v1/tables/players/rows", b'{"pk": "P-u", "values": {"full_name": "\\ud800"}}', 400,
     "BAD_JSON"),
    ("/v1/tables/players/rows", b"[" * 100_000 + b"]" * 100_000, 400, "BAD_JSON"),
    # A misspelt field is refused, not ignored (here it would drop the admin override).
    ("/v1/tables/players/rows", b'{"pk": "P-f", "values": {"full_name": "F"}, "admn": true}',
     400, "BAD_REQUEST"),
    ("/v1/tables/players/rows", b'{"pk": "P-n", "values": {"full_name": "N", "x": NaN}}',
     400, "BAD_JSON"),
    ("/v1/tables/players/rows", b'{"pk": "P-i", "values": {"full_name": -Infinity}}',
     400, "BAD_JSON"),
    # valid JSON, but no double holds it: it used to be stored as Infinity and replicated
    ("/v1/tables/players/rows", b'{"pk": "P-o", "values": {"full_name": "O", "x": 1e400}}',
     400, "BAD_JSON"),
    ("/v1/tables/players/rows", b'{"pk": "P-d", "values": ' + b"[" * 100_000 + b"]" * 100_000
     + b"}", 400, "BAD_JSON"),
    ("/v1/staging/1/rows/1", b'{"values": {"full_name": "\\udfff"}}', 400,
     "STAGING_BAD_REQUEST"),
    ("/v1/staging/1/rows/1", b'{"values": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
     "STAGING_BAD_REQUEST"),
]


@pytest.mark.parametrize("path,body,status,code", BAD_BODIES)
def test_bodies_that_used_to_be_internal_errors_are_typed(cluster, path, body, status, code):
    before = snapshot(cluster)
    got_status, got = raw(cluster, "POST", path, body)
    assert (got_status, got["error"]["code"]) == (status, code)
    assert snapshot(cluster) == before


@pytest.mark.parametrize("path", ["/v1/staging/99999999999999999999999",
                                  "/v1/staging/1?limit=99999999999999999999999",
                                  "/v1/staging/%EF%BC%91"])
def test_huge_or_odd_numbers_in_paths_are_typed(cluster, path):
    status, body = raw(cluster, "GET", path)
    assert (status, body["error"]["code"]) == (400, "STAGING_BAD_REQUEST")


def test_query_booleans_are_strict(cluster):
    before = snapshot(cluster)
    status, body = raw(cluster, "DELETE", "/v1/tables/players/rows/P-1?admin=maybe")
    assert (status, body["error"]["code"]) == (400, "BAD_REQUEST")
    status, body = raw(cluster, "GET", "/v1/conflicts?all=yes", user="north-operator")
    assert (status, body["error"]["code"]) == (400, "BAD_REQUEST")
    assert snapshot(cluster) == before
    assert raw(cluster, "GET", "/v1/conflicts?all=1", user="north-operator")[0] == 200
    assert raw(cluster, "GET", "/v1/conflicts?all=false", user="north-operator")[0] == 200


def test_confirm_reimport_must_be_json_true(cluster, tmp_path):
    """An export re-imported is only applied on a real JSON true."""
    c = cluster
    out = tmp_path / "snap.xlsx"
    subprocess.run([sys.executable, "-m", "riversync.cli", "export", "xlsx", str(out),
                    "--scope", "office=north", "-c", str(c.node_configs["north"])],
                   check=True, capture_output=True, timeout=60)
    import base64

    status, res = raw(c, "POST", "/v1/staging/xlsx", json.dumps(
        {"table": "players", "file_name": "snap.xlsx",
         "content_b64": base64.b64encode(out.read_bytes()).decode()}).encode())
    assert status == 201, res
    bid = res["batch"]["id"]
    before = snapshot(c)
    for bad in ("false", "true", 1, None):
        status, body = raw(c, "POST", f"/v1/staging/{bid}/apply",
                           json.dumps({"confirm_reimport": bad}).encode(), user="north-operator")
        assert status == 400 and body["error"]["code"] == "STAGING_BAD_REQUEST", (bad, body)
    status, body = raw(c, "POST", f"/v1/staging/{bid}/exclude",
                       json.dumps({"rows": [2], "excluded": "no"}).encode())
    assert status == 400 and body["error"]["code"] == "STAGING_BAD_REQUEST"
    assert snapshot(c) == before
    status, body = raw(c, "GET", f"/v1/staging/{bid}")
    assert body["batch"]["state"] != "applied"


def test_text_with_control_characters_exports_escaped_and_reimports_equal(cluster, tmp_path):
    c = cluster
    text = "line one\nline two\ttab \u0007bell \u0000nul lit_x0041_ \r end"
    status, body = raw(c, "POST", "/v1/tables/players/rows",
                       json.dumps({"pk": "P-ctl", "values": {"full_name": text}}).encode())
    assert status == 201, body
    out = tmp_path / "ctl.xlsx"
    r = subprocess.run([sys.executable, "-m", "riversync.cli", "export", "xlsx", str(out),
                        "--scope", "office=north", "-c", str(c.node_configs["north"])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wb = openpyxl.load_workbook(out, read_only=True)
    cells = [row for row in wb["players"].iter_rows(values_only=True) if row[0] == "P-ctl"]
    assert cells and cells[0][1] == escape_text(text) and "\u0007" not in cells[0][1]
    import base64

    status, res = raw(c, "POST", "/v1/staging/xlsx", json.dumps(
        {"table": "players", "file_name": "ctl.xlsx",
         "content_b64": base64.b64encode(out.read_bytes()).decode()}).encode())
    assert status == 201, res
    rows = raw(c, "GET", f"/v1/staging/{res['batch']['id']}")[1]["rows"]
    staged = [r for r in rows if r["key"] == "P-ctl"]
    assert staged and staged[0]["values"]["full_name"] == text


@given(st.text())
def test_escaped_text_is_always_writable_and_reverses(text):
    esc = escape_text(text)
    assert not ILLEGAL_CHARACTERS_RE.search(esc)
    assert unescape_text(esc) == text


def test_a_key_that_is_not_text_is_named_as_such(cluster):
    before = snapshot(cluster)
    status, body = raw(cluster, "POST", "/v1/tables/players/rows",
                       json.dumps({"pk": 5, "values": {"full_name": "A"}}).encode())
    assert (status, body["error"]["code"]) == (400, "BAD_REQUEST")
    assert body["error"]["message"] == "'pk' must be text (the primary key), not a number"
    assert snapshot(cluster) == before


def test_a_body_over_the_limit_is_too_large(cluster):
    from riversync.node.daemon import MAX_REQUEST_BYTES

    before = snapshot(cluster)
    filler = "x" * (MAX_REQUEST_BYTES + 1024)
    status, body = raw(cluster, "POST", "/v1/tables/players/rows",
                       json.dumps({"pk": "P-big", "values": {"full_name": filler}}).encode())
    assert (status, body["error"]["code"]) == (413, "TOO_LARGE")
    assert "32 MiB" in body["error"]["hint"]
    assert snapshot(cluster) == before


def test_a_row_too_large_for_any_batch_is_refused_and_sync_goes_on(cluster):
    """Proves [N-LIMIT-1]: four text columns of 1,000,000 four-byte characters are within
    every per-value limit but encode to 16 MB, more than one batch may hold.  Taken, that
    event could never be pushed and would hold back every later write of this office."""
    c = cluster
    clerk = c.client("north", "north-clerk")
    clerk.post("/v1/tables/offices/rows", {"pk": "north", "values": {"name": "North"}})
    clerk.post("/v1/tables/leagues/rows",
               {"pk": "L-big", "values": {"office_id": "north", "name": "Big"}})
    clerk.post("/v1/tables/teams/rows",
               {"pk": "T-big", "values": {"league_id": "L-big", "name": "Reds"}})
    before = snapshot(c)
    huge = "\U0001F600" * 1_000_000
    body = json.dumps({"values": dict.fromkeys(("name", "coach", "phone", "note"), huge)},
                      ensure_ascii=False).encode()
    status, reply = raw(c, "PATCH", "/v1/tables/teams/rows/T-big", body)
    assert (status, reply["error"]["code"]) == (400, "BAD_VALUE")
    assert "at most 15,728,640 bytes" in reply["error"]["message"]
    assert "15 MiB" in reply["error"]["hint"]
    assert snapshot(c) == before
    # Three such columns (12 MB) fit; the office keeps replicating after the refusal.
    status, _ = raw(c, "PATCH", "/v1/tables/teams/rows/T-big", json.dumps(
        {"values": dict.fromkeys(("coach", "phone", "note"), huge)}, ensure_ascii=False).encode())
    assert status == 200
    clerk.request("PATCH", "/v1/tables/teams/rows/T-big", {"values": {"name": "Blues"}})

    def blues_at_south():
        try:
            return c.client("south").get("/v1/tables/teams/rows/T-big")["row"]["name"] == "Blues"
        except NodeRefused:
            return False

    c.wait_for("T-big at south", blues_at_south, 60)


def test_a_wrong_method_or_a_static_folder_answers_a_typed_json_error(cluster):
    status, body = raw(cluster, "POST", "/", b"{}")
    assert (status, body["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")
    status, body = raw(cluster, "GET", "/static/")
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize("method,path,body,words", [
    ("GET", "/v1/tables/players/rows?lim=3", None, "no query parameter 'lim'"),
    ("GET", "/v1/conflicts?al=1", None, "no query parameter 'al'"),
    ("DELETE", "/v1/tables/players/rows/P-1", b'{"admin": true}', "?admin=true"),
    ("POST", "/v1/sync", b'{"bogus": 1}', "takes no request body"),
    ("POST", "/v1/backup", b"notjson", "takes no request body"),
])
def test_what_an_endpoint_does_not_take_is_refused_not_ignored(cluster, method, path, body,
                                                               words):
    before = snapshot(cluster)
    status, got = raw(cluster, method, path, body, user="north-operator")
    assert (status, got["error"]["code"]) == (400, "BAD_REQUEST"), got
    assert words in got["error"]["message"], got
    assert snapshot(cluster) == before
    assert raw(cluster, "GET", "/v1/tables/players/rows?limit=3")[0] == 200


def test_a_missing_static_file_is_a_json_404(cluster):
    req = urllib.request.Request(cluster.node_url("north") + "/static/nope.js")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    with e.value as resp:
        assert resp.code == 404 and resp.headers["Content-Type"].startswith("application/json")
        assert json.loads(resp.read())["error"]["code"] == "NOT_FOUND"
