"""The node's local API over real HTTP: what it refuses, how, and that a refusal changes nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from riversync.node.errors import ALL_API_ERRORS
from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("api") / "c", ["north", "south"], schema=SCHEMA,
                     sync_interval_s=1, realtime=True).create()
    try:
        c.start_all()
        north = c.client("north", "north-clerk")
        north.post("/v1/tables/offices/rows", {"pk": "north", "values": {"name": "North"}})
        north.post("/v1/tables/players/rows", {"pk": "P-1", "values": {"full_name": "Kim"}})
        c.client("south", "south-clerk").post("/v1/tables/players/rows",
                                              {"pk": "P-S", "values": {"full_name": "Sam"}})
        c.wait_for("convergence", c.converged, 30)
        yield c
    finally:
        c.stop_all()


def raw(c: LocalCluster, method: str, path: str, body: bytes | None = None,
        token: str | None = None, office: str = "north") -> tuple[int, dict]:
    req = urllib.request.Request(c.node_url(office) + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def snapshot(c: LocalCluster) -> tuple:
    """Everything a refused request must leave alone: digests, audit, queue."""
    d = c.digests("north")
    audit = c.client("north").get("/v1/audit?limit=1000")["audit"]
    return d["state"], d["events"], len(audit), c.status("north")["outbox"]


def js(obj) -> bytes:
    return json.dumps(obj).encode()


def refusals(c: LocalCluster) -> list[tuple[str, str, bytes | None, str | None, int, str]]:
    clerk, ops = c.tokens["north-clerk"], c.tokens["north-operator"]
    return [
        # method, path, body, token, status, code
        ("GET", "/v1/tables/players/rows", None, None, 401, "UNAUTHENTICATED"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-9", "values": {"full_name": "X"}}),
         None, 401, "UNAUTHENTICATED"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-9", "values": {"full_name": "X"}}),
         "not-a-token", 401, "UNAUTHENTICATED"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-9", "values": {"full_name": "X"}}),
         clerk + "x", 401, "UNAUTHENTICATED"),
        ("POST", "/v1/conflicts/north:1:1/resolve", js({"decision": "accept"}), clerk, 403,
         "FORBIDDEN"),
        ("POST", "/v1/sync", js({}), clerk, 403, "FORBIDDEN"),
        ("POST", "/v1/tables/players/rows", b"{not json", clerk, 400, "BAD_JSON"),
        ("POST", "/v1/tables/players/rows", b"", clerk, 400, "BAD_JSON"),
        ("POST", "/v1/tables/players/rows", b"[1, 2]", clerk, 400, "BAD_JSON"),
        ("PATCH", "/v1/tables/players/rows/P-1", b"\xff\xfe", clerk, 400, "BAD_JSON"),
        ("POST", "/v1/tables/nope/rows", js({"pk": "X", "values": {"a": 1}}), clerk, 404,
         "UNKNOWN_TABLE"),
        ("GET", "/v1/tables/nope/rows", None, clerk, 404, "UNKNOWN_TABLE"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-9", "values": {"full_name": 12}}),
         clerk, 400, "BAD_VALUE"),
        ("POST", "/v1/tables/players/rows",
         js({"pk": "P-9", "values": {"full_name": "X", "born_on": "yesterday"}}), clerk, 400,
         "BAD_VALUE"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-9", "values": {"phone": "1"}}), clerk,
         400, "BAD_VALUE"),
        ("POST", "/v1/tables/players/rows",
         js({"pk": "P-9", "values": {"full_name": {"first": "X"}}}), clerk, 400, "BAD_VALUE"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-9", "values": {"shoe": 9,
                                                                          "full_name": "X"}}),
         clerk, 400, "UNKNOWN_COLUMN"),
        ("POST", "/v1/tables/players/rows", js({"values": {"full_name": "X"}}), clerk, 400,
         "BAD_REQUEST"),
        ("PATCH", "/v1/tables/players/rows/P-1", js({"values": {"credit_limit": "lots"}}),
         clerk, 400, "BAD_VALUE"),
        ("PATCH", "/v1/tables/players/rows/P-1", js({"values": {"phone": "1"}, "admin": True}),
         clerk, 403, "FORBIDDEN"),
        ("PATCH", "/v1/tables/players/rows/P-S", js({"values": {"phone": "1"}}), clerk, 403,
         "NOT_OWNER"),
        ("PATCH", "/v1/tables/players/rows/P-404", js({"values": {"phone": "1"}}), clerk, 404,
         "ROW_NOT_FOUND"),
        ("POST", "/v1/tables/players/rows", js({"pk": "P-1", "values": {"full_name": "Again"}}),
         clerk, 409, "ROW_EXISTS"),
        ("DELETE", "/v1/tables/players/rows/P-404", None, clerk, 404, "ROW_NOT_FOUND"),
        ("POST", "/v1/tables/players/rows/P-1/transfer", js({"owner": "mars"}), clerk, 400,
         "BAD_VALUE"),
        ("POST", "/v1/tables/players/rows/P-1/transfer", js({}), clerk, 400, "BAD_REQUEST"),
        ("POST", "/v1/tables/players/rows/P-1/transfer", js({"owner": "north"}), clerk, 400,
         "BAD_VALUE"),  # north owns it already: a transfer would change nothing
        ("POST", "/v1/conflicts/north:1:1/resolve", js({"decision": "maybe"}), ops, 400,
         "BAD_REQUEST"),
        ("POST", "/v1/conflicts/nope/resolve", js({"decision": "keep"}), ops, 404,
         "CONFLICT_NOT_FOUND"),
        ("GET", "/v1/nothing-here", None, clerk, 404, "NOT_FOUND"),
    ]


def test_refusals_are_typed_json_and_change_nothing(cluster):
    c = cluster
    before = snapshot(c)
    for method, path, body, token, status, code in refusals(c):
        got_status, got = raw(c, method, path, body, token)
        where = f"{method} {path} {body!r}"
        assert got_status == status, (where, got)
        assert got["error"]["code"] == code, (where, got)
        assert got["error"]["message"], where
        assert got["error"]["hint"], where
        if code == "FORBIDDEN" and b'"admin": true' in (body or b""):
            # An admin's job sends a clerk to an admin, not to an operator who cannot do it.
            assert "admin" in got["error"]["hint"] and "operator" not in got["error"]["hint"], got
    assert snapshot(c) == before
    assert c.client("north").get("/v1/tables/players/rows/P-1")["row"]["full_name"] == "Kim"
    assert "P-9" not in {r["player_id"] for r in
                         c.client("north").get("/v1/tables/players/rows")["rows"]}


def test_healthz_is_the_only_open_path(cluster):
    status, body = raw(cluster, "GET", "/healthz")
    assert status == 200 and body["status"] in ("ok", "warning", "critical")
    for path in ("/v1/status", "/metrics", "/v1/tables", "/v1/conflicts", "/v1/digests"):
        status, body = raw(cluster, "GET", path)
        assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED"), path


def test_rows_lifecycle_and_roles(cluster):
    c = cluster
    clerk = c.client("north", "north-clerk")
    made = clerk.post("/v1/tables/players/rows", {"pk": "P-2", "values": {"full_name": "Lee"}})
    assert made["row"]["full_name"] == "Lee" and made["events"][0]["kind"] == "create"
    upd = clerk.request("PATCH", "/v1/tables/players/rows/P-2", {"values": {"phone": None}})
    assert upd["row"]["phone"] is None
    upd = clerk.request("PATCH", "/v1/tables/players/rows/P-2", {"values": {"phone": ""}})
    assert upd["row"]["phone"] == ""  # an empty string is a value, not NULL
    assert clerk.get("/v1/tables/players/rows/P-2")["row"]["phone"] == ""
    clerk.request("DELETE", "/v1/tables/players/rows/P-2")
    status, body = raw(c, "GET", "/v1/tables/players/rows/P-2", token=c.tokens["north-clerk"])
    assert (status, body["error"]["code"]) == (404, "ROW_NOT_FOUND")
    # a clerk transfers a row its office owns; an admin overrides a row it does not own
    clerk.post("/v1/tables/players/rows", {"pk": "P-3", "values": {"full_name": "Ona"}})
    clerk.post("/v1/tables/players/rows/P-3/transfer", {"owner": "south"})
    c.wait_for("P-3 at south", lambda: c.client("south").get(
        "/v1/tables/players/rows?limit=1000")["rows"], 30)
    admin = c.client("north", "admin")
    c.wait_for("P-S at north", lambda: admin.get("/v1/tables/players/rows/P-S"), 30)
    res = admin.request("PATCH", "/v1/tables/players/rows/P-S",
                        {"values": {"phone": "555-0101"}, "admin": True})
    assert res["row"]["phone"] == "555-0101"
    c.wait_for("convergence", c.converged, 30)
    tables = clerk.get("/v1/tables")["tables"]
    assert "players" in [t["name"] for t in tables]


def test_every_api_error_code_is_documented():
    doc = (ROOT / "docs" / "reference" / "node-api.md").read_text()
    for cls in ALL_API_ERRORS:
        assert f"`{cls.code}`" in doc, cls.code


def test_web_ui_is_served_without_a_token_and_reads_with_one(cluster):
    import urllib.request

    with urllib.request.urlopen(cluster.node_url("north") + "/", timeout=30) as resp:
        html = resp.read().decode()
    assert "<title>riversync node</title>" in html and "/static/app.js" in html
    with urllib.request.urlopen(cluster.node_url("north") + "/static/app.js", timeout=30) as r:
        js_text = r.read().decode()
    for path in ("/v1/status", "/v1/conflicts", "/v1/staging", "/v1/tables/"):
        assert path in js_text


def test_keep_and_merge_decisions_replicate_and_a_closed_conflict_is_refused(cluster):
    """Proves [M-RES-1] for `keep` and `merge` on both offices."""
    c = cluster
    south = c.client("south", "south-clerk")
    for pk in ("P-K", "P-M"):
        south.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": pk}})
    c.wait_for("both at north", lambda: all(
        c.client("north").get("/v1/tables/players/rows?limit=1000")["rows"]
        and _has(c, "north", pk) for pk in ("P-K", "P-M")), 30)
    c.stop("hub")
    try:
        admin = c.client("north", "admin")
        for pk in ("P-K", "P-M"):
            admin.post(f"/v1/tables/players/rows/{pk}/transfer", {"owner": "north", "admin": True})
            south.request("PATCH", f"/v1/tables/players/rows/{pk}", {"values": {"phone": "1"}})
    finally:
        c.start("hub")
    ops = c.client("north")
    c.wait_for("two conflicts at north", lambda: len(ops.get("/v1/conflicts")["conflicts"]) == 2,
               30)
    by_pk = {x["pk"]: x["id"] for x in ops.get("/v1/conflicts")["conflicts"]}
    ops.post(f"/v1/conflicts/{by_pk['P-K']}/resolve", {"decision": "keep"})
    ops.post(f"/v1/conflicts/{by_pk['P-M']}/resolve",
             {"decision": "merge", "values": {"phone": "2", "email": "m@example.org"}})
    status, body = raw(c, "POST", f"/v1/conflicts/{by_pk['P-K']}/resolve",
                       js({"decision": "accept"}), c.tokens["north-operator"])
    assert (status, body["error"]["code"]) == (409, "CONFLICT_CLOSED")
    c.wait_for("resolutions at south", lambda: not c.client("south").get(
        "/v1/conflicts")["conflicts"], 30)
    c.wait_for("convergence", c.converged, 30)
    for o in ("north", "south"):
        cl = c.client(o)
        assert cl.get("/v1/tables/players/rows/P-K")["row"]["phone"] is None
        merged = cl.get("/v1/tables/players/rows/P-M")["row"]
        assert (merged["phone"], merged["email"]) == ("2", "m@example.org")


def _has(c: LocalCluster, office: str, pk: str) -> bool:
    rows = c.client(office).get("/v1/tables/players/rows?limit=1000")["rows"]
    return pk in {r["player_id"] for r in rows}


def test_a_hybrid_user_works_for_their_home_office_at_either_node(cluster):
    """Proves [M-OWN-1] through the API of two real nodes."""
    c = cluster
    c.wait_for("P-S at north", lambda: _has(c, "north", "P-S"), 30)
    at_north = c.client("north", "south-clerk")  # south's clerk, logged in at north's node
    res = at_north.request("PATCH", "/v1/tables/players/rows/P-S", {"values": {"email": "s@x"}})
    assert res["events"][0]["node"] == "north"  # north's node signs it, for south's office
    entry = c.client("north").get("/v1/audit?limit=1")["audit"][0]
    assert (entry["user"], entry["office"], entry["node"]) == ("south-clerk", "south", "north")
    c.wait_for("convergence", c.converged, 30)
    assert c.client("south").get("/v1/tables/players/rows/P-S")["row"]["email"] == "s@x"
